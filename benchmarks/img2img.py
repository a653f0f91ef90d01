"""Image-to-image distillation (issue 15): teacher vs distilled student vs the same student trained alone, and video.

    python benchmarks/img2img.py                          # emoji SR x4 -> the `img2img-emoji-sr4` section of RESULTS.md
    python benchmarks/img2img.py --task mnist5k-denoise   # mnist5k denoising -> `img2img-mnist5k-denoise`
    python benchmarks/img2img.py --quick                  # smoke run (a few steps); does not touch RESULTS.md
    python benchmarks/img2img.py --reuse                  # keep runs already in --out (teacher, student, alone), re-measure
    python benchmarks/img2img.py --task mnist5k-denoise --out runs/bench-img2img-mnist5k-denoise-fast-a1 --tag fast-a1 \
        --recipe configs/img2img/mnist5k-denoise-fast.yaml \
        --alone-extra model.family=subpixel-net "model.args={scale: 4, base_width: 24, depth: 4}"   # the fast student

1. The teacher: `kdgen train-teacher` on the task's teacher recipe (emoji-sr4: a pix2pix U-Net; mnist5k-denoise: a ResNet
   generator; both L1 x 100 + a conditional PatchGAN) - the recipe the shipped teacher was made by.
2. The student: `kdgen distill` on the task's recipe (0.2 width, pruned from the teacher; output + feature + conditional
   adversarial terms).
3. The student alone: the teacher's recipe at the student's width (model.args.width=0.2) or --alone-extra's network, on the
   ground truth (no teacher), trained as the distilled student was: the same steps, learning rate, schedule, betas and
   EMA, L1 weighted as its output term and the PatchGAN as its adversarial term (alone_recipe).
All three are measured by the same code (kdgen.evaluation.evaluate_image_pair) on the held-out pairs: PSNR and SSIM
against the ground truth, FID / KID of the outputs against the ground truth in the data's feature space, MACs, params and
latency. Then `kdgen export --quantize int8` and `kdgen video` in torch, onnx and int8 over two clips made of held-out
images: one at the demo's resolution and one 8x larger (emoji-sr4: 8x8 and 64x64 frames, 4x outputs; mnist5k-denoise:
noisy 28x28 and 224x224 frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402

TASKS = {
    "emoji-sr4": {"teacher": "configs/img2img/emoji-sr4-teacher.yaml", "recipe": "configs/img2img/emoji-sr4.yaml", "size": 32,
                  "channels": 3, "title": "emoji SR x4", "floor": "the bicubic input",
                  "data": "Emoji 32x32 RGB, SR x4 (input: area 4x down, bicubic 4x up)", "space": "featnet-emoji",
                  "clips": {"8x8 -> 32x32": 8, "64x64 -> 256x256": 64}},
    "mnist5k-denoise": {"teacher": "configs/img2img/mnist5k-denoise-teacher.yaml", "recipe": "configs/img2img/mnist5k-denoise.yaml",
                        "size": 28, "channels": 1, "title": "mnist5k denoising", "floor": "the noisy input",
                        "data": "mnist5k 28x28 grey, denoising (input: + Gaussian noise of std 0.4 in [-1, 1])",
                        "space": "featnet-mnist5k", "clips": {"28x28": 28, "224x224": 224}},
}
WIDTH = 0.2


def make_clip(path: Path, frames: torch.Tensor, size: int, rate: int = 10) -> None:
    """A video of `frames` ([n, C, H, W] in [-1, 1]) resized (area down, bilinear up) to size x size."""
    import av

    mode = "area" if size <= frames.shape[-1] else "bilinear"
    small = torch.nn.functional.interpolate(frames, size=(size, size), mode=mode).expand(-1, 3, -1, -1)
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


def alone_recipe(cfg) -> list[str]:
    """The distilled student's training, on the ground truth: the same steps, learning rate, schedule, betas and EMA, L1
    weighted as its output (+ truth) terms and the conditional PatchGAN as its adversarial term (0 when it has none), on the
    same training pairs (data.train_images)."""
    from kdgen.methods import parse_methods

    t, opts = cfg.train, parse_methods(cfg.methods)
    l1 = sum(opts[k].weight for k in ("output", "truth") if k in opts)
    adversarial = opts["adversarial"].weight if "adversarial" in opts else 0.0
    few = [f"data.train_images={cfg.data.train_images}"] if cfg.data.train_images else []  # the same pairs as it, too
    return [f"train.steps={t.steps}", f"train.lr={t.lr}", f"train.lr_schedule={t.lr_schedule}", f"train.betas=[{t.betas[0]}, {t.betas[1]}]",
            f"train.ema={t.ema}", f"model.args.l1_weight={l1}", f"model.args.adversarial_weight={adversarial}", *few]


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


def ceiling(teacher_dir: Path, size: int, threads: int = 2, repeats: int = 30) -> dict:
    """How fast any student of the teacher's family and depth can run: the teacher's frame time over that of the same
    family at width 0.001 (every inner layer 1 channel wide; untrained, speed only) in ONNX at size x size, batch 1.
    What is left in the thinnest student is the work every such network pays per pixel whatever its width: the first
    layer reading the frame, the last writing it, and each op's fixed cost."""
    from torch.utils.flop_counter import FlopCounterMode

    from kdgen.export.graph import Graph
    from kdgen.export.runtime import export_onnx
    from kdgen.metrics.cost import median_ms
    from kdgen.models.loading import build_model, load_model
    from kdgen.onnx_sampler import session

    teacher = load_model(teacher_dir)
    meta = teacher.kdgen_meta
    thinnest = build_model(meta["family"], {**meta["args"], "width": 0.001})
    thinnest.kdgen_meta = {**meta, "args": {**meta["args"], "width": 0.001}}  # a kdgen family: exported with free H and W
    x = torch.rand(1, meta["args"]["in_channels"], size, size) * 2 - 1
    ms, macs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("teacher", teacher), ("thinnest", thinnest)):
            model.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
            macs[name] = int(counter.get_total_flops() // 2)
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(Graph(model), path)
            sess = session(path, threads=threads, spin=False)  # as kdgen video opens them
            feed = {sess.get_inputs()[0].name: x.numpy()}
            ms[name] = median_ms(lambda: sess.run(None, feed), repeats=repeats)
    return {"size": size, "ms": ms, "ratio": ms["teacher"] / ms["thinnest"], "macs": macs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="emoji-sr4")
    ap.add_argument("--out", default=None, help="default: runs/bench-img2img (emoji-sr4), runs/bench-img2img-TASK")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="train.steps of all three (default: the recipes')")
    ap.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the distilled student (its data.train_images, train.* and methods' weights reach the student alone)")
    ap.add_argument("--teacher-extra", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for the teacher and the student alone (e.g. model.args.base_width=64: a bigger teacher)")
    ap.add_argument("--recipe", default=None, help="another distillation recipe of the task (e.g. configs/img2img/emoji-sr4-fast.yaml)")
    ap.add_argument("--alone-extra", nargs="*", default=[], metavar="KEY=VALUE",
                    help='overrides for the student alone only, after the others (e.g. model.family=subpixel-net '
                         '"model.args={scale: 4, base_width: 24, depth: 4}": the whole dict, not the teacher\'s args merged)')
    ap.add_argument("--alone-pairs", type=int, default=None, metavar="N",
                    help="the student alone has ground truth for only N training images (data.train_images=N), while the distilled "
                         "student learns from the teacher's outputs on every training input: a user with few pairs and many inputs")
    ap.add_argument("--tag", default=None, help="a probe: its own RESULTS.md section (img2img-TASK-probe-TAG)")
    args = ap.parse_args()
    task = TASKS[args.task]
    TEACHER, RECIPE = task["teacher"], args.recipe or task["recipe"]
    out = Path(args.out or ("runs/bench-img2img" if args.task == "emoji-sr4" else f"runs/bench-img2img-{args.task}"))
    t0 = time.perf_counter()
    steps = ["train.steps=6"] if args.quick else ([f"train.steps={args.steps}"] if args.steps else [])
    few = ["eval.latency_repeats=3"] if args.quick else []
    teacher_run, student_run, alone_run = out / "teacher", out / "student", out / "alone"
    timings = {}
    if not (args.reuse and (teacher_run / "teacher" / "model.json").is_file()):
        r = replacing(kdgen.train_teacher, TEACHER, [f"out={teacher_run}", *steps, *args.teacher_extra])
        timings["teacher"] = r.train_seconds
    if not (args.reuse and (student_run / "metrics.json").is_file()):
        from kdgen.config import read_yaml

        family = (read_yaml(RECIPE).get("student") or {}).get("family")  # a student of its own family is sized by its args
        width = [] if family else [f"student.width={WIDTH}"]
        r = replacing(kdgen.distill, RECIPE, [f"out={student_run}", f"teacher.path={teacher_run / 'teacher'}", *width,
                                              *steps, *few, *args.extra])
        timings["student"] = r.train_seconds
    if not (args.reuse and (alone_run / "teacher" / "model.json").is_file()):
        from kdgen.config import load_run_config

        r = replacing(kdgen.train_teacher, TEACHER, [f"out={alone_run}", f"model.args.width={WIDTH}", *args.teacher_extra,
                                                     *args.alone_extra, *alone_recipe(load_run_config(student_run / "config.yaml")),
                                                     *([f"data.train_images={args.alone_pairs}"] if args.alone_pairs else [])])
        timings["alone"] = r.train_seconds
    s_meta, a_meta = (json.loads((d / "model.json").read_text()) for d in (student_run / "student", alone_run / "teacher"))
    if (s_meta["family"], s_meta["args"]) != (a_meta["family"], a_meta["args"]):
        sys.exit(f"the student alone ({a_meta['family']} {a_meta['args']}) is not the distilled student's network "
                 f"({s_meta['family']} {s_meta['args']}); fix --alone-extra")
    m = json.loads((student_run / "metrics.json").read_text())
    alone = measure_alone(alone_run, student_run)["student"]
    t, s = m["teacher"], m["student"]

    # export and video
    kdgen.export(student_run, quantize="int8", calibration=64 if args.quick else 256)
    from kdgen.config import load_run_config
    from kdgen.evaluation import image_pairs
    from kdgen.video import video

    cfg = load_run_config(student_run / "config.yaml")
    held = image_pairs(cfg, image_size=task["size"], channels=task["channels"], split="test")
    n_frames = min(len(held), 30 if args.quick else 120)
    clip_frames = torch.stack([held[i]["image"] for i in range(n_frames)])
    fps: dict[str, dict] = {}
    for name, size in task["clips"].items():
        path = out / f"clip-{size}.mp4"
        if cfg.data.task == "sr4":  # the frames are the low-resolution images; the models see them enlarged 4x
            make_clip(path, torch.nn.functional.interpolate(clip_frames, size=(size * 4, size * 4), mode="bilinear"), size)
        else:  # denoise: the frames are the noisy inputs at the clip's size
            from kdgen.data.paired import degrade

            big = torch.nn.functional.interpolate(clip_frames, size=(size, size), mode="bilinear") if size != task["size"] else clip_frames
            make_clip(path, degrade(big, "denoise", noise_sigma=cfg.data.noise_sigma, generator=torch.Generator().manual_seed(0)), size)
        for runtime in ("torch", "onnx", "int8"):
            fps[f"{name} {runtime}"] = video(student_run, path, runtime=runtime, threads=2)

    big_size = task["clips"][list(task["clips"])[-1]] * (4 if cfg.data.task == "sr4" else 1)  # the models' input size
    ceil = ceiling(teacher_run / "teacher", big_size, repeats=5 if args.quick else 30)

    ex = json.loads((student_run / "metrics.json").read_text())["export"]["onnx"]
    rows = [("teacher", t), ("student (distilled)", s), ("student alone", alone)]
    table = ["| model | PSNR (dB) | SSIM | FID | KID x1000 | params | MACs / image | latency b1 (ms) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in rows:
        table.append(f"| {name} | {b['psnr']:.2f} | {b['ssim']:.4f} | {b['fid']:.2f} | {b['kid'] * 1000:.2f} | {b['params']:,} | "
                     f"{b['macs']:,} | {b['latency_ms']['b1']:.2f} |")
    table.append(f"| {task['floor']} | {m['input']['psnr']:.2f} | {m['input']['ssim']:.4f} | - | - | - | - | - |")
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
    demo_clip = next(iter(task["clips"]))
    onnx_demo = fps[f"{demo_clip} onnx"]["fps"]["student"]
    big_clip = list(task["clips"])[-1]
    at_video = min(r["student_vs_teacher_fps"] for k, r in fps.items() if k.startswith(big_clip))
    out_px = task["size"]
    targets += [f"- video: the student's frames/s is {worst:.1f}x the teacher's or more in every runtime and clip, {at_video:.1f}x or "
                f"more on the {big_clip} clip (target ≥ 10x): {'met' if worst >= 10 else 'missed'}",
                f"- the student's ONNX path at the demo's resolution ({out_px}x{out_px} outputs, 2 threads): {onnx_demo:.0f} frames/s "
                f"(target ≥ 30): {'met' if onnx_demo >= 30 else 'missed'}"]
    q = ex.get("quality", {})
    int8 = " ".join(f"{k}: {v['psnr']:.2f} dB ({v['psnr_drop_db']:+.2f} below PyTorch)." for k, v in q.items() if k.startswith("int8"))
    for k, run in (("teacher", teacher_run), ("student", student_run), ("alone", alone_run)):  # reused runs: their own record
        timings.setdefault(k, json.loads((run / "metrics.json").read_text())["train"]["seconds"])
    train_s = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    from kdgen.config import load_run_config

    ac = load_run_config(alone_run / "config.yaml")  # what the alone run really trained with (a reused one: its own)
    alone_how = (f"The student alone trained on the ground truth by L1 x {ac.model.args.get('l1_weight', 100.0):g} + PatchGAN x "
                 f"{ac.model.args.get('adversarial_weight', 1.0):g}, {ac.train.steps} steps at lr {ac.train.lr:g} ({ac.train.lr_schedule}, "
                 f"betas {list(ac.train.betas)}, EMA {ac.train.ema:g})")
    a_pairs, s_pairs = ac.data.train_images, m["train"].get("task", {}).get("pairs")
    alone_how += (f", with ground truth for {a_pairs} of the training images; the distilled student learned from the teacher's outputs "
                  f"on all {s_pairs} training inputs and never saw their ground truth." if a_pairs else ", on the same training pairs.")
    body = (f"{task['data']}, held-out split ({m['protocol']['reference_count']} pairs); "
            f"FID in {task['space']}'s space against the ground truth of the same inputs. Training this run: {train_s or 'reused'}. "
            f"{alone_how}\n\n"
            + "\n".join(table) + "\n\nTargets:\n" + "\n".join(targets)
            + f"\n\nExport: ONNX parity max abs {ex['parity']['max_abs']:.1e}. int8 re-measured on the held-out pairs: {int8}\n\n"
            "Video (`kdgen video`, 2 torch / onnxruntime threads, batch 1, decode and encode not counted; onnx / int8 graphs "
            "with free H and W run frames whole; int8: each one's static (QDQ) graph; after one untimed call each, each model "
            "runs 16 frames in a row):\n\n"
            + "\n".join(vrows)
            + f"\n\nThe ceiling of the teacher's family: it at width 0.001 (every inner layer 1 channel; untrained, speed only) runs "
            f"{ceil['ms']['thinnest']:.2f} ms a {big_size} px frame in ONNX (2 threads) against the teacher's {ceil['ms']['teacher']:.2f} ms: "
            f"**{ceil['ratio']:.1f}x**, at {ceil['macs']['teacher'] / ceil['macs']['thinnest']:.0f}x fewer MACs - the most frames/s any "
            "narrower student of that family and depth could gain here.")
    command = " ".join(["python benchmarks/img2img.py", *sys.argv[1:]])
    title = f"## Image-to-image: {task['title']} (issue 15)" + (f" - probe '{args.tag}'" if args.tag else "")
    extra = f"Student overrides: `{' '.join(args.extra)}`; the student alone took the same steps, learning rate and schedule.\n\n" if args.extra else ""
    if args.recipe:
        extra += f"Recipe: `{args.recipe}`" + (f"; the student alone: `{' '.join(args.alone_extra)}`" if args.alone_extra else "") + ".\n\n"
    if args.teacher_extra:
        extra += f"Teacher overrides (the student alone has them too, at width {WIDTH}): `{' '.join(args.teacher_extra)}`.\n\n"
    section = f"{title}\n\n{header(command, time.perf_counter() - t0)}\n{extra}{body}\n"
    print(section)
    (out / "img2img.md").write_text(section)
    if not args.quick:
        write_section(f"img2img-{args.task}" + (f"-probe-{args.tag}" if args.tag else ""), section)


if __name__ == "__main__":
    main()
