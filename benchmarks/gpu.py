"""Training speed on one GPU: steps/s and peak memory for each method kind x precision x eager/compiled, and the demo at full length.

    python benchmarks/gpu.py                 # on a GPU: the grid and the demo, planned to end within --budget-min (9) minutes
    python benchmarks/gpu.py --write         # the same, and rewrite the gpu section of RESULTS.md
    python benchmarks/gpu.py --quick         # on CPU, ~30 s: 4 steps at batch 16 per cell, compiled cells for the classifier
                                             # only, no demo; checks the script (tests/integration/test_gpu_bench.py runs it)

Every cell is one `kdgen.distill` run with eval off, the recipe's own batch size (16 with --quick), logging, previews and
checkpoints pushed past the last step, into OUT/cells/KIND-PRECISION-MODE:
  gan         configs/gan/mnist5k-demo.yaml (output + feature + adversarial, width 0.25 DCGAN student)
  diffusion   configs/diffusion/mnist5k-progressive.yaml, one round (64 -> 32 DDIM steps: methods.progressive.to_steps=32)
  classifier  configs/classifier/mnist5k-hinton.yaml, its teacher first trained for a few steps into OUT/classifier-teacher
Precision: train.mixed_precision=no (fp32) / bf16 / fp16 (GPU only); mode: eager, or train.compile=true (torch.compile of
student and teacher; torch._dynamo.reset() and an empty inductor cache for each compiled cell, so every one pays
its own cold compile, as a first run would, whatever ran before).

Time plan (10 minutes on one GPU): the eager cells first (~10-30 s each), then the demo (~2-3 min), then the compiled
cells (~40-120 s each, fp16 last); a run whose expected time (a first guess, then the slowest of its kind and mode so far)
would end past --budget-min (9) minutes is skipped and listed under the table, so the script ends in time whatever the GPU.

steps/s is the steady rate: the trainer's step loop is timed from the start of the first step after --warmup steps to the
end of the last step (torch.cuda.synchronize() at each mark), so neither the compile nor the first steps' allocations
count; "warm-up s" is what the first steps took beyond that rate (the compile, in compiled cells). Peak memory is
torch.cuda.max_memory_allocated() over the run, after torch.cuda.reset_peak_memory_stats(); on CPU, n/a (the JSON keeps
the process's peak RSS so far, which only grows). The demo is `kdgen demo`'s recipe on its defaults (1200 steps, eval on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402

DEMO = "configs/gan/mnist5k-demo.yaml"
KINDS = {  # kind: (recipe, overrides on top of it)
    "gan": (DEMO, []),
    "diffusion": ("configs/diffusion/mnist5k-progressive.yaml", ["methods.progressive.to_steps=32"]),
    "classifier": ("configs/classifier/mnist5k-hinton.yaml", []),  # + teacher.path, set once the teacher is trained
}
QUIET = ["eval.enabled=false", "train.checkpoint_every=1000000", "train.log_every=1000000", "train.sample_every=1000000"]
# a first guess of a run's wall time on a GPU (s), until one of its kind and mode has run (then the slowest of those is the
# guess); a run that would end past the budget is skipped, and said so
GUESS = {("gan", "eager"): 20.0, ("diffusion", "eager"): 30.0, ("classifier", "eager"): 15.0, ("demo", "demo"): 150.0,
         ("gan", "compiled"): 75.0, ("diffusion", "compiled"): 120.0, ("classifier", "compiled"): 40.0}
TEACHER_STEPS = {True: 2, False: 50}  # the classifier teacher's training steps, with --quick and without


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def step_clock():
    """(step, time) at the start of every training step, and ("end", time) at the end of the last one (the trainer saves its
    state there). Wraps two methods of kdgen.train.Trainer for the duration; kdgen has no per-step hook of its own."""
    from kdgen.train import Trainer

    set_lr, save_state = Trainer._set_lr, Trainer.save_state
    marks: list[tuple] = []

    def start_of_step(self, step):
        synchronize()
        marks.append((step, time.perf_counter()))
        return set_lr(self, step)

    def end_of_run(self, step):
        if step == self.steps:
            synchronize()
            marks.append(("end", time.perf_counter()))
        return save_state(self, step)

    Trainer._set_lr, Trainer.save_state = start_of_step, end_of_run
    try:
        yield marks
    finally:
        Trainer._set_lr, Trainer.save_state = set_lr, save_state


def steady(marks: list[tuple], warmup: int) -> dict:
    """The steady steps/s of the last trainer in `marks` (a diffusion run may train more than one round) after `warmup` steps."""
    firsts = [i for i, (s, _) in enumerate(marks) if s == 1]
    marks = marks[firsts[-1]:] if firsts else marks
    starts = {s: t for s, t in marks if s != "end"}
    end = next((t for s, t in reversed(marks) if s == "end"), None)
    last = max(starts)
    if end is None or warmup + 1 > last:
        raise RuntimeError(f"the step clock saw {len(starts)} steps and {'an' if end else 'no'} end; need more steps than --warmup {warmup}")
    timed = last - warmup
    seconds = end - starts[warmup + 1]
    per_step = seconds / timed
    return {"steps_per_s": timed / seconds, "timed_steps": timed, "timed_s": seconds,
            "warmup_s": max(0.0, (starts[warmup + 1] - starts[1]) - warmup * per_step), "loop_s": end - starts[1]}


def peak_memory() -> dict:
    if torch.cuda.is_available():
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_mib": None, "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_cell(kind: str, precision: str, mode: str, args, extra: list[str]) -> dict:
    recipe, overrides = KINDS[kind]
    name = f"{kind}-{precision}-{mode}"
    mp = {"fp32": "'no'"}.get(precision, precision)  # quoted: the override's value is read as YAML, where a bare no is False
    cold = contextlib.nullcontext()
    if mode == "compiled":
        torch._dynamo.reset()  # each compiled cell compiles afresh (and never meets dynamo's recompile limit) ...
        try:  # ... from an empty cache (a temporary one, deleted after; torch's own is left as it is)
            from torch._inductor.utils import fresh_cache

            cold = fresh_cache()
        except ImportError:
            pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with cold, step_clock() as marks:
        result = replacing(kdgen.distill, recipe, [f"out={args.out}/cells/{name}", *overrides, *QUIET, *extra,
                                                   f"train.steps={args.steps}", f"train.mixed_precision={mp}",
                                                   f"train.compile={'true' if mode == 'compiled' else 'false'}"])
    synchronize()
    wall = time.perf_counter() - t0
    cell = {"kind": kind, "precision": precision, "mode": mode, "steps": args.steps, "warmup_steps": args.warmup,
            **steady(marks, args.warmup), **peak_memory(), "wall_s": wall, "train_seconds": result.metrics["train"]["seconds"],
            "cold_compile": mode == "compiled" and not isinstance(cold, contextlib.nullcontext)}
    cell["batch"] = yaml.safe_load((Path(args.out) / "cells" / name / "config.yaml").read_text())["data"]["batch_size"]
    return cell


def run_demo(args) -> dict:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = replacing(kdgen.distill, DEMO, [f"out={args.out}/demo"])
    synchronize()
    m = result.metrics
    return {"wall_s": time.perf_counter() - t0, "train_seconds": m["train"]["seconds"], "steps": m["train"]["steps"],
            "fid": m["student"]["fid"], "teacher_fid": m["teacher"]["fid"], **peak_memory()}


def classifier_teacher(args, extra: list[str]) -> str:
    """A classifier teacher for the Hinton cells: trained for a few steps (its accuracy is not what is measured)."""
    out = Path(args.out) / "classifier-teacher"
    replacing(kdgen.train_teacher, "configs/classifier/mnist5k-teacher.yaml",
              [f"out={out}", f"train.steps={TEACHER_STEPS[args.quick]}", *[o for o in QUIET if o != "eval.enabled=false"], *extra])
    return str(out / "teacher")


def plan(args) -> list[tuple[str, str, str]]:
    """Eager cells first (cheap), then the demo, then the compiled ones: fp32, bf16, and fp16 last."""
    gpu = torch.cuda.is_available()
    precisions = ["fp32", "bf16", "fp16"] if gpu else ["fp32", "bf16"]
    kinds = [k for k in KINDS if not args.only or k in args.only]
    cells = [(k, p, "eager") for p in precisions for k in kinds]
    if not args.quick and "demo" not in (args.skip or []):
        cells.append(("demo", "fp32", "demo"))
    compiled = [k for k in kinds if not args.quick or k == "classifier"]  # on CPU the others' compile is ~45 s a model
    cells += [(k, p, "compiled") for p in precisions for k in compiled]
    return cells


def fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def report(cells: list[dict], skipped: list[str], failed: list[str], demo: dict | None, args, wall: float) -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU)"
    cmd = "python benchmarks/gpu.py" + (" --quick" if args.quick else "")
    gpu = torch.cuda.is_available()
    sync = "; CUDA synchronised at each mark" if gpu else ""
    peak = ("`torch.cuda.max_memory_allocated()` over the run" if gpu else
            "n/a on CPU (one process runs every cell; the JSON has its peak RSS so far)")
    batches = {c["kind"]: c["batch"] for c in cells}
    batch = "batch " + ", ".join(f"{b} ({k})" for k, b in batches.items()) if len(set(batches.values())) > 1 else f"batch {next(iter(batches.values()), '-')}"
    lines = [
        f"## Training speed: {device} (issue 14)", "", header(cmd, wall),
        f"- device: {device}; torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if torch.cuda.is_available() else ""),
        "",
        f"Each cell: one `kdgen.distill` run of {args.steps} steps, {batch}, eval off. steps/s is the steady rate over the last "
        f"{args.steps - args.warmup} steps (the first {args.warmup}, and the compile, excluded{sync}); "
        f"warm-up s is what those first steps took beyond that rate. Peak memory: {peak}. "
        "gan = configs/gan/mnist5k-demo.yaml; diffusion = configs/diffusion/mnist5k-progressive.yaml, one round (64 -> 32 steps); "
        f"classifier = configs/classifier/mnist5k-hinton.yaml (MLP 400-400 student) with a 1200-1200 teacher trained {TEACHER_STEPS[args.quick]} steps.",
        "",
        "| method kind | precision | mode | steps/s | ms / step | vs fp32 eager | warm-up s | peak memory MiB | run wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {c["kind"]: c["steps_per_s"] for c in cells if c["precision"] == "fp32" and c["mode"] == "eager"}
    for c in cells:
        ratio = f"{c['steps_per_s'] / base[c['kind']]:.2f}x" if c["kind"] in base else "-"
        lines.append(f"| {c['kind']} | {c['precision']} | {c['mode']} | {c['steps_per_s']:.1f} | {1000 / c['steps_per_s']:.1f} | {ratio} | "
                     f"{c['warmup_s']:.1f} | {fmt(c['peak_mib'], '.0f')} | {c['wall_s']:.1f} |")
    lines.append("")
    if demo:
        lines.append(f"The demo at full length (`kdgen demo`'s recipe, {demo['steps']} steps, eval on): {demo['wall_s']:.0f} s wall, "
                     f"training {demo['train_seconds']:.1f} s ({demo['steps'] / max(demo['train_seconds'], 1e-9):.1f} steps/s with "
                     f"the warm-up), peak memory {fmt(demo['peak_mib'], '.0f')} MiB; student FID {demo['fid']:.2f} "
                     f"(teacher {demo['teacher_fid']:.2f}).")
    lines += [f"- skipped: {s}" for s in skipped] + [f"- FAILED: {s}" for s in failed]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: 4 steps per cell at batch 16, no demo, compiled cells for the classifier only")
    ap.add_argument("--out", default="runs/bench-gpu")
    ap.add_argument("--steps", type=int, default=None, help="steps per cell (default 60; 4 with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="steps not timed (default 15; 1 with --quick)")
    ap.add_argument("--budget-min", type=float, default=9.0, help="skip the cells that would end past this many minutes (default 9)")
    ap.add_argument("--only", nargs="*", choices=list(KINDS), help="only these method kinds")
    ap.add_argument("--skip", nargs="*", choices=["demo"], help="leave out the demo")
    ap.add_argument("--write", action="store_true", help="rewrite the gpu section of RESULTS.md (refused with --quick or without a GPU)")
    args = ap.parse_args()
    args.steps = args.steps or (4 if args.quick else 60)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 15)
    if args.steps <= args.warmup:
        ap.error(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    if args.write and (args.quick or not torch.cuda.is_available()):
        ap.error("--write records GPU numbers: run without --quick, on a machine with a GPU")
    if not torch.cuda.is_available() and not args.quick:
        print("no GPU here: the numbers will be CPU ones (use --quick for a smoke run)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = ["data.batch_size=16"] if args.quick else []
    t_all = time.perf_counter()
    budget = args.budget_min * 60
    cells, skipped, failed, demo, took = [], [], [], None, {}
    todo = plan(args)
    if args.quick:
        skipped.append("gan and diffusion compiled: with --quick (CPU) torch.compile of their models takes about 45 s each; "
                       "the classifier's MLP compiles in seconds, so its compiled cells run")
    if not torch.cuda.is_available():
        skipped.append("fp16: kdgen's fp16 (loss scaling) needs a GPU")
    print(f"plan: {len(todo)} runs, budget {args.budget_min:g} min: " + ", ".join("demo" if m == "demo" else f"{k}-{p}-{m}" for k, p, m in todo),
          flush=True)
    if any(k == "classifier" for k, _, _ in todo):
        KINDS["classifier"] = (KINDS["classifier"][0], [f"teacher.path={classifier_teacher(args, extra)}"])
    for kind, precision, mode in todo:
        name = "demo" if mode == "demo" else f"{kind}-{precision}-{mode}"
        guess = took.get((kind, mode), GUESS[kind, mode])
        spent = time.perf_counter() - t_all
        if spent + guess > budget:
            skipped.append(f"{name}: {spent:.0f} s spent, about {guess:.0f} s more would pass the {budget:.0f} s budget")
            print(f"[{name}] skipped: over the time budget", flush=True)
            continue
        t0 = time.perf_counter()
        try:  # one failed run is reported, and the others still run: a GPU session is one go
            if mode == "demo":
                demo = run_demo(args)
                print(f"[demo] {demo['wall_s']:.0f} s, FID {demo['fid']:.2f}", flush=True)
            else:
                c = run_cell(kind, precision, mode, args, extra)
                cells.append(c)
                print(f"[{name}] {c['steps_per_s']:.1f} steps/s, warm-up {c['warmup_s']:.1f} s, peak {fmt(c['peak_mib'], '.0f')} MiB, "
                      f"{c['wall_s']:.1f} s", flush=True)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            failed.append(f"{name}: {type(e).__name__}: {msg}")
            print(f"[{name}] FAILED: {msg}", flush=True)
        took[kind, mode] = max(time.perf_counter() - t0, took.get((kind, mode), 0.0))
    wall = time.perf_counter() - t_all
    body = report(cells, skipped, failed, demo, args, wall)
    raw = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
           "quick": args.quick, "steps": args.steps, "warmup": args.warmup, "wall_s": wall, "cells": cells, "demo": demo,
           "skipped": skipped, "failed": failed}
    bad = [c for c in cells if not (math.isfinite(c["steps_per_s"]) and c["steps_per_s"] > 0)]
    (out / "gpu.md").write_text(body)
    (out / "gpu.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(body)
    if args.write:
        write_section("gpu", body)
    if bad or failed:
        raise SystemExit(f"{len(failed)} run(s) failed, {len(bad)} without a finite positive steps/s: see the list under the table")


if __name__ == "__main__":
    main()
