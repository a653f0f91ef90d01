"""Ship the student (issue 6): export, parity, int8 quality and latency where it runs, in one process.

    python benchmarks/export.py            # the demo run (made first if runs/demo is missing, ~15 min) and the
                                           # consistency diffusion student of benchmarks/diffusion_steps.py if present;
                                           # rewrites the `export` section of RESULTS.md
    python benchmarks/export.py --quick    # a 2-step demo run, a minute; does not touch RESULTS.md unless --write

For each run: `kdgen export RUN --quantize int8` (ONNX fp32 + onnxruntime int8 dynamic and static, quality of every
variant re-measured on 3 seeds), `kdgen export RUN --format torchscript`, then `kdgen bench-latency RUN`.
Targets (demo run): onnxruntime student >= 10x lower batch-1 latency than the teacher in PyTorch eager;
fp32 parity <= 1e-4; int8 student FID <= 1.1x the fp32 student's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

from kdgen.api import distill  # noqa: E402
from kdgen.export import bench_latency, export  # noqa: E402
from kdgen.report.tables import EXPORT_VARIANTS, LATENCY_ROWS  # noqa: E402

SEEDS = [0, 1, 2]
DIFFUSION_RUN = Path("runs/bench-diffusion/consistency")
DIFFUSION_STEPS = 4


def one_run(run: Path, *, steps: int | None, repeats: int, seeds: list[int]) -> dict:
    t0 = time.perf_counter()
    block = export(run, quantize="int8", steps=steps, seeds=seeds)["onnx"]
    block["quality_seeds"] = seeds
    ts = export(run, format="torchscript", steps=steps)["torchscript"]
    lat = bench_latency(run, repeats=repeats)
    print(f"{run}: exported and timed in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"onnx": block, "torchscript": ts, "latency": lat}


def parity_rows(name: str, r: dict) -> list[str]:
    o, ts = r["onnx"], r["torchscript"]
    rows = [f"| {name} | ONNX fp32 (opset {o['opset']}, {o['bytes'] / 1024:.0f} KB) | {o['parity']['max_abs']:.1e} | {o['parity']['max_rel']:.1e} |",
            f"| {name} | TorchScript ({ts['bytes'] / 1024:.0f} KB) | {ts['parity']['max_abs']:.1e} | {ts['parity']['max_rel']:.1e} |"]
    for kind in ("dynamic", "static"):
        q = o["int8"][kind]
        rows.append(f"| {name} | ONNX int8 {kind} ({q['bytes'] / 1024:.0f} KB, {q['int8_nodes']} of {q['nodes']} nodes int8) | "
                    f"{q['vs_pytorch']['max_abs']:.1e} | {q['vs_pytorch']['max_rel']:.1e} |")
    if "sampler_parity" in o:
        sp = o["sampler_parity"]
        rows.append(f"| {name} | ONNX sampler, all {sp['steps']} steps, {sp['n']} images (numpy + onnxruntime) | {sp['max_abs']:.1e} | - |")
    return rows


def quality_rows(name: str, r: dict) -> list[str]:
    q = r["onnx"]["quality"]
    fp32 = q["onnx_fp32"]["fid"]
    return [f"| {name} | {EXPORT_VARIANTS[v]} | {q[v]['fid']:.2f} ± {q[v]['fid_std']:.2f} | {q[v]['fid'] / fp32:.3f} | {q[v]['kid'] * 1000:.1f} |"
            for v in ("pytorch", "onnx_fp32", "int8_dynamic", "int8_static")]


def latency_rows(name: str, r: dict) -> list[str]:
    lat, out = r["latency"], []
    for key, row in lat["rows"].items():
        up = lat["speedup_vs_teacher_eager"][key]
        out.append(f"| {name} | {LATENCY_ROWS[key]} | {row['b1']['ms']:.3f} | {row['b64']['ms']:.2f} | {row['b64']['images_per_s']:,.0f} | "
                   f"{up['b1']:.1f}× | {up['b64']:.1f}× |")
    return out


def render(results: dict[str, dict], wall: float, command: str, notes: list[str]) -> str:
    demo = results["demo"]
    lat, q = demo["latency"], demo["onnx"]["quality"]
    ort_up = lat["speedup_vs_teacher_eager"]["student_onnx_fp32"]["b1"]
    par = demo["onnx"]["parity"]["max_abs"]
    int8 = {k: q[f"int8_{k}"]["fid"] / q["onnx_fp32"]["fid"] for k in ("dynamic", "static")}
    diff = results.get("consistency", {}).get("latency", {}).get("steps", {})
    steps_text = (f"; a diffusion row includes every sampling step (student {diff.get('student')}, teacher {diff.get('teacher')})"
                  if diff else "")
    lines = ["## Export, int8 and latency where it runs (issue 6)", "", header(command, wall).rstrip(), "",
             f"Protocol: each run's student exported by `kdgen export RUN --quantize int8`, `--format torchscript`, then "
             f"`kdgen bench-latency RUN` in one process. Parity: max |exported - PyTorch| on fresh random inputs at batch 1, 3 and 64 "
             f"(relative: over max |PyTorch|). Quality: FID/KID in kdgen's mnist5k feature space, the run's eval sample count per seed, "
             f"seeds {demo['onnx']['quality_seeds']}, the same latents for every variant. Latency: CPU, {lat['threads']} thread(s) for PyTorch and "
             f"onnxruntime alike, median of up to {lat['repeats']} repeats after warm-up{steps_text}.",
             "", "Parity (max abs / relative error against the PyTorch student):", "",
             "| run | export | max abs | max rel |", "|---|---|---:|---:|"]
    for name, r in results.items():
        lines += parity_rows(name, r)
    lines += ["", "Quality of every variant (int8 calibrated on 256 real inputs):", "",
              "| run | variant | FID | FID / onnxruntime fp32 | KID×1e3 |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        lines += quality_rows(name, r)
    lines += ["", "Latency:", "", "| run | runtime | b1 ms | b64 ms | b64 images/s | speed-up b1 vs teacher eager | b64 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines += latency_rows(name, r)
    lines += ["", "Targets (issue 6, demo run):", "",
              f"- onnxruntime fp32 student ≥ 10× lower batch-1 latency than the teacher in PyTorch eager: {ort_up:.1f}× — {'met' if ort_up >= 10 else 'missed'}.",
              f"- fp32 parity ≤ 1e-4: {par:.1e} — {'met' if par <= 1e-4 else 'missed'}.",
              *(f"- int8 {k} FID ≤ 1.1× the fp32 student's: {v:.3f}× — {'met' if v <= 1.1 else 'missed'}." for k, v in int8.items()),
              "", "Notes:", "",
              "- onnxruntime's dynamic quantization has no int8 ConvTranspose: in a DCGAN generator only the last Conv is int8 "
              "(see the node counts), so its file and speed barely change; static (QDQ) quantization covers every weighted op."]
    lines += [f"- {n}" for n in notes]
    pictures = [f"![{name}: PyTorch | onnxruntime fp32 | int8 dynamic | int8 static](export/samples-{name}.png)" for name in results]
    lines += ["", "The same noise through every variant (PyTorch | onnxruntime fp32 | int8 dynamic | int8 static), from `RUN/export/samples.png`:", "",
              *pictures]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2-step demo run, 1 seed; RESULTS.md untouched unless --write")
    ap.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md anyway")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch and onnxruntime alike (1: a small edge core, "
                                                          "and numbers that hold while another job runs on the second core)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    demo = Path("runs/bench-export-quick" if args.quick else "runs/demo")
    if not (demo / "student").is_dir() or args.quick:
        extra = ["train.steps=2", "eval.num_samples=200"] if args.quick else []
        distill(None, [f"out={demo}", *extra])
    seeds = [0] if args.quick else SEEDS
    results, notes = {"demo": one_run(demo, steps=None, repeats=3 if args.quick else args.repeats, seeds=seeds)}, []
    if not args.quick:
        if (DIFFUSION_RUN / "student").is_dir():
            results["consistency"] = one_run(DIFFUSION_RUN, steps=DIFFUSION_STEPS, repeats=args.repeats, seeds=seeds)
        else:
            notes.append(f"{DIFFUSION_RUN} is missing (make it with `python benchmarks/diffusion_steps.py --only consistency`); no diffusion rows.")
    out = Path(__file__).resolve().parent / "export"
    out.mkdir(exist_ok=True)
    for name, run in (("demo", demo), ("consistency", DIFFUSION_RUN)):
        if name in results and (run / "export" / "samples.png").is_file():
            shutil.copyfile(run / "export" / "samples.png", out / f"samples-{name}.png")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    body = render(results, time.perf_counter() - t0, "python benchmarks/export.py" + (" --quick" if args.quick else ""), notes)
    print(body)
    if not args.quick or args.write:
        write_section("export", body)


if __name__ == "__main__":
    main()
