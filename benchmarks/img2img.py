"""Image-to-image distillation (issue 15): teacher vs distilled student vs the same student trained alone, and video.

    python benchmarks/img2img.py                 # emoji SR x4; rewrites the `img2img-emoji-sr4` section of RESULTS.md
    python benchmarks/img2img.py --quick         # smoke run (a few steps); does not touch RESULTS.md
    python benchmarks/img2img.py --reuse         # keep runs already in --out (teacher, student, alone) and re-measure

1. The teacher: `kdgen train-teacher configs/img2img/emoji-sr4-teacher.yaml` (pix2pix U-Net, L1 x 100 + conditional PatchGAN).
2. The student: `kdgen distill configs/img2img/emoji-sr4.yaml` (0.2 width, pruned from the teacher; output + feature +
   conditional adversarial terms).
3. The student alone: the teacher's recipe at the student's width (model.args.width=0.2), the same steps and batch, on the
   ground truth (no teacher).
All three are measured by the same code (kdgen.evaluation.evaluate_image_pair) on the 360 held-out emoji pairs: PSNR and
SSIM against the ground truth, FID / KID of the outputs against the ground truth in featnet-emoji's space, MACs, params and
latency. Then `kdgen export --quantize int8` and `kdgen video` over a clip made of held-out emoji shrunk 4x (8x8 frames,
32x32 outputs: the demo's resolution) and over a 64x64-frame clip (256x256 outputs), in torch, onnx and int8.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402

TEACHER = "configs/img2img/emoji-sr4-teacher.yaml"
RECIPE = "configs/img2img/emoji-sr4.yaml"
WIDTH = 0.2


def make_clip(path: Path, frames: torch.Tensor, size: int, rate: int = 10) -> None:
    """A video of `frames` ([n, 3, H, W] in [-1, 1]) shrunk (area) to size x size."""
    import av

    small = torch.nn.functional.interpolate(frames, size=(size, size), mode="area")
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=rate)
    s.width = s.height = size
    s.pix_fmt = "yuv420p"
    for f in small:
        img = ((f.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def measure_alone(alone_dir: Path, distill_dir: Path) -> dict:
    """The student trained alone, measured by the distillation run's own protocol (its config, its teacher)."""
    from kdgen.config import load_run_config
    from kdgen.evaluation import evaluate_image_pair
    from kdgen.models.loading import load_model, save_model
    from kdgen.models.resolve import resolve_teacher

    cfg = load_run_config(distill_dir / "config.yaml")
    alone = load_model(alone_dir / "teacher")
    out = alone_dir / "as-student"
    save_model(alone, out / "student", family=alone.kdgen_meta["family"], args=alone.kdgen_meta["args"])
    return evaluate_image_pair(cfg, teacher=resolve_teacher(cfg.teacher, None), student=alone, out=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-img2img")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="train.steps of all three (default: the recipes')")
    ap.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the student and the student alone")
    ap.add_argument("--tag", default=None, help="a probe: its own RESULTS.md section (img2img-emoji-sr4-probe-TAG)")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    steps = ["train.steps=6"] if args.quick else ([f"train.steps={args.steps}"] if args.steps else [])
    few = ["eval.latency_repeats=3"] if args.quick else []
    teacher_run, student_run, alone_run = out / "teacher", out / "student", out / "alone"
    timings = {}
    if not (args.reuse and (teacher_run / "teacher" / "model.json").is_file()):
        r = replacing(kdgen.train_teacher, TEACHER, [f"out={teacher_run}", *steps])
        timings["teacher"] = r.train_seconds
    if not (args.reuse and (student_run / "metrics.json").is_file()):
        r = replacing(kdgen.distill, RECIPE, [f"out={student_run}", f"teacher.path={teacher_run / 'teacher'}", f"student.width={WIDTH}",
                                              *steps, *few, *args.extra])
        timings["student"] = r.train_seconds
    if not (args.reuse and (alone_run / "teacher" / "model.json").is_file()):
        from kdgen.config import load_run_config

        d = load_run_config(student_run / "config.yaml").train  # the same steps and learning rate as the distilled student
        r = replacing(kdgen.train_teacher, TEACHER, [f"out={alone_run}", f"model.args.width={WIDTH}", f"train.steps={d.steps}",
                                                     f"train.lr={d.lr}", f"train.lr_schedule={d.lr_schedule}"])
        timings["alone"] = r.train_seconds
    m = json.loads((student_run / "metrics.json").read_text())
    alone = measure_alone(alone_run, student_run)["student"]
    t, s = m["teacher"], m["student"]

    # export and video
    kdgen.export(student_run, quantize="int8", calibration=64 if args.quick else 256)
    from kdgen.config import load_run_config
    from kdgen.evaluation import image_pairs
    from kdgen.video import video

    cfg = load_run_config(student_run / "config.yaml")
    held = image_pairs(cfg, image_size=32, channels=3, split="test")
    clip_frames = torch.stack([held[i]["image"] for i in range(min(len(held), 30 if args.quick else 120))])
    clips = {"8x8 -> 32x32": (out / "clip-8.mp4", 8), "64x64 -> 256x256": (out / "clip-64.mp4", 64)}
    fps: dict[str, dict] = {}
    for name, (path, size) in clips.items():
        make_clip(path, torch.nn.functional.interpolate(clip_frames, size=(size * 4, size * 4), mode="bilinear"), size)
        for runtime in ("torch", "onnx", "int8"):
            fps[f"{name} {runtime}"] = video(student_run, path, runtime=runtime, threads=2)

    ex = json.loads((student_run / "metrics.json").read_text())["export"]["onnx"]
    rows = [("teacher", t), ("student (distilled)", s), ("student alone", alone)]
    table = ["| model | PSNR (dB) | SSIM | FID | KID x1000 | params | MACs / image | latency b1 (ms) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in rows:
        table.append(f"| {name} | {b['psnr']:.2f} | {b['ssim']:.4f} | {b['fid']:.2f} | {b['kid'] * 1000:.2f} | {b['params']:,} | "
                     f"{b['macs']:,} | {b['latency_ms']['b1']:.2f} |")
    table.append(f"| the bicubic input | {m['input']['psnr']:.2f} | {m['input']['ssim']:.4f} | - | - | - | - | - |")
    macs_x = t["macs"] / s["macs"]
    drop, gain, fid_x = t["psnr"] - s["psnr"], s["psnr"] - alone["psnr"], s["fid"] / t["fid"]
    targets = [
        f"- MACs: {macs_x:.1f}x fewer (target ≥ 20x): {'met' if macs_x >= 20 else 'missed'}",
        f"- PSNR: {drop:.2f} dB below the teacher (target ≤ 0.3): {'met' if drop <= 0.3 else 'missed'}",
        f"- FID: {fid_x:.2f}x the teacher's (target ≤ 1.05x): {'met' if fid_x <= 1.05 else 'missed'}",
        f"- over the student alone: {gain:+.2f} dB (target ≥ +0.3): {'met' if gain >= 0.3 else 'missed'}",
    ]
    vrows = ["| clip | runtime | teacher frames/s | student frames/s | student / teacher | how frames ran |", "|---|---|---:|---:|---:|---|"]
    for key, r in fps.items():
        name, runtime = key.rsplit(" ", 1)
        vrows.append(f"| {name} ({r['frames']} frames) | {runtime} | {r['fps']['teacher']:.1f} | {r['fps']['student']:.1f} | "
                     f"**{r['student_vs_teacher_fps']:.1f}x** | {r['mode']['student']} |")
    worst = min(r["student_vs_teacher_fps"] for r in fps.values())
    onnx_demo = fps["8x8 -> 32x32 onnx"]["fps"]["student"]
    targets += [f"- video: the student's frames/s is {worst:.1f}x the teacher's or more in every runtime (target ≥ 10x): "
                f"{'met' if worst >= 10 else 'missed'}",
                f"- the student's ONNX path at the demo's resolution (32x32 outputs, 2 threads): {onnx_demo:.0f} frames/s (target ≥ 30): "
                f"{'met' if onnx_demo >= 30 else 'missed'}"]
    q = ex.get("quality", {})
    int8 = " ".join(f"{k}: {v['psnr']:.2f} dB ({v['psnr_drop_db']:+.2f} below PyTorch)." for k, v in q.items() if k.startswith("int8"))
    for k, run in (("teacher", teacher_run), ("student", student_run), ("alone", alone_run)):  # reused runs: their own record
        timings.setdefault(k, json.loads((run / "metrics.json").read_text())["train"]["seconds"])
    train_s = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    body = (f"Emoji 32x32 RGB, SR x4 (input: area 4x down, bicubic 4x up), held-out split ({m['protocol']['reference_count']} pairs); "
            f"FID in featnet-emoji's space against the ground truth of the same inputs. Training this run: {train_s or 'reused'}.\n\n"
            + "\n".join(table) + "\n\nTargets:\n" + "\n".join(targets)
            + f"\n\nExport: ONNX parity max abs {ex['parity']['max_abs']:.1e}. int8 re-measured on the held-out pairs: {int8}\n\n"
            "Video (`kdgen video`, 2 torch / onnxruntime threads, batch 1, decode and encode not counted):\n\n" + "\n".join(vrows))
    command = " ".join(["python benchmarks/img2img.py", *sys.argv[1:]])
    title = "## Image-to-image: emoji SR x4 (issue 15)" + (f" - probe '{args.tag}'" if args.tag else "")
    extra = f"Student overrides: `{' '.join(args.extra)}`; the student alone took the same steps, learning rate and schedule.\n\n" if args.extra else ""
    section = f"{title}\n\n{header(command, time.perf_counter() - t0)}\n{extra}{body}\n"
    print(section)
    (out / "img2img.md").write_text(section)
    if not args.quick:
        write_section("img2img-emoji-sr4" + (f"-probe-{args.tag}" if args.tag else ""), section)


if __name__ == "__main__":
    main()
