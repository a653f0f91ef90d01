"""Runs that survive anything and scale out (issue 14): resume equivalence, the teacher cache, bf16 and two processes.

    python benchmarks/scale.py                      # every part; rewrites the `scale` section of RESULTS.md
    python benchmarks/scale.py --part resume        # one part: resume | cache | bf16 | ddp (each rewrites its own sub-section)
    python benchmarks/scale.py --quick              # smoke run (tiny steps); does not touch RESULTS.md

Parts:
- resume: for each method kind (GAN distillation, progressive diffusion over two rounds, classifier KD, classifier KD on a
  generated transfer set) an uninterrupted run, then one run per kill scenario: the trainer SIGKILLs itself after a step
  (KDGEN_FAULT_KILL_AT_STEP), is resumed with --resume, possibly killed again, and finishes. A scenario counts when the
  student's tensors are bit-identical (torch.equal) to the uninterrupted run's.
- cache: the demo recipe (builtin:gan-mnist5k teacher, batch 64) trained with the live teacher and with data.teacher_cache,
  eval off: steps/s of each from the trainer's own segment time (the cache's drawing timed apart), and bytes per pair.
- bf16: the demo recipe at fp32 and at train.mixed_precision=bf16: steps/s over a short run, then the full demo (1,200
  steps, FID on 2,000 samples in the featnet-mnist5k space) for two training seeds each, to compare quality with seed noise.
- ddp: the demo recipe under torchrun with 1 and with 2 CPU processes (gloo), the same per-process batch: images/s.
Every run has its own folder under --out and one torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

KILL = "KDGEN_FAULT_KILL_AT_STEP"
QUIET = ["train.log_every=1", "train.sample_every=100000", "eval.enabled=false"]


def cli(args: list[str], *, kill_at: int | None = None, torchrun: int = 0, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL, None)
    if kill_at is not None:
        env[KILL] = str(kill_at)
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}", "-m", "kdgen.cli"]
            if torchrun else [sys.executable, "-m", "kdgen.cli"])
    proc = subprocess.run([*head, *map(str, args)], env=env, capture_output=True, text=True)
    if check and kill_at is None and proc.returncode != 0:
        raise SystemExit(f"failed: kdgen {' '.join(map(str, args))}\n{proc.stderr[-3000:]}")
    return proc


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    name = next(f for f in ("model.safetensors", "diffusion_pytorch_model.safetensors") if (folder / f).is_file())
    return load_file(str(folder / name))


def identical(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def train_record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["train"]


# --------------------------------------------------------------------------- resume


def resume_kinds(out: Path, quick: bool) -> list[tuple[str, list[str], list[list[int]]]]:
    """(kind, distill arguments without out=, kill scenarios): each scenario is the steps to kill at, run after run."""
    teacher = out / "classifier-teacher"
    if not (teacher / "teacher" / "model.json").is_file():
        cli(["train-teacher", "configs/classifier/mnist5k-teacher.yaml", f"out={teacher}", "train.steps=20", "data.batch_size=32",
             "model.args={hidden: [64], dropout: 0.0}", "--overwrite", *QUIET])
    n = 6 if quick else 12
    every = ["train.checkpoint_every=3", *QUIET]
    gan = ["distill", "configs/gan/mnist5k-demo.yaml", f"train.steps={n}", "data.batch_size=32", *every]
    diffusion = ["distill", "configs/diffusion/mnist5k-progressive.yaml", "methods.progressive.from_steps=8",
                 "methods.progressive.to_steps=2", f"train.steps={n // 2}", "data.batch_size=16", *every]
    classifier = ["distill", "configs/classifier/mnist5k-hinton.yaml", f"teacher.path={teacher / 'teacher'}", f"train.steps={n}",
                  "data.batch_size=32", "student.args={hidden: [16]}", *every]
    transfer = [*classifier, "data.transfer=builtin:gan-mnist5k", "data.transfer_images=256", "data.transfer_batch=16"]
    if quick:
        return [("GAN distillation", gan, [[4], [5]]), ("progressive diffusion, 2 rounds", diffusion, [[2], [3, 2]]),
                ("classifier KD", classifier, [[4]]), ("classifier KD + transfer set", transfer, [[4]])]
    # mid-interval (4, 5, 7, 11), right after a checkpoint (3, 6, 9), twice in one run; a kill before the first checkpoint
    # leaves nothing to resume (--resume then says so), so the scenarios start at it
    mid = [[3], [4], [5], [6], [7], [9], [11], [4, 8]]
    rounds = [[1], [2], [4], [6], [6, 2], [6, 4], [2, 6, 5]]  # round 1 (6 steps), its end, inside round 2, thrice
    return [("GAN distillation", gan, mid), ("progressive diffusion, 2 rounds", diffusion, rounds),
            ("classifier KD", classifier, mid), ("classifier KD + transfer set", transfer, mid)]


def part_resume(out: Path, quick: bool) -> tuple[str, dict]:
    rows, raw = [], {}
    for kind, args, scenarios in resume_kinds(out, quick):
        slug = kind.split()[0].lower() + ("-transfer" if "transfer" in kind else "")
        ref = out / f"resume-{slug}-ref"
        cli([*args, f"out={ref}", "--overwrite"])
        hits, kills, t0 = 0, 0, time.perf_counter()
        for s, steps in enumerate(scenarios):
            run = out / f"resume-{slug}-{s}"
            for i, k in enumerate(steps):
                proc = cli([*args, f"out={run}", *(["--resume"] if i else ["--overwrite"])], kill_at=k)
                if proc.returncode != -signal.SIGKILL:
                    raise SystemExit(f"{kind}: the run meant to be killed at step {k} ended with {proc.returncode}\n{proc.stderr[-2000:]}")
                kills += 1
            cli([*args, f"out={run}", "--resume"])
            same = identical(ref / "student", run / "student")
            hits += same
            raw.setdefault(kind, []).append({"kills": steps, "identical": same, "segments": len(train_record(run).get("segments", []))})
        rows.append(f"| {kind} | {' · '.join('+'.join(map(str, s)) for s in scenarios)} | {kills} | **{hits} of {len(scenarios)}** | "
                    f"{time.perf_counter() - t0:.0f} s |")
    body = ("| method kind | kill scenarios (steps killed at, run after run) | SIGKILLs | bit-identical students | time |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))
    return body, raw


# --------------------------------------------------------------------------- cache


def part_cache(out: Path, quick: bool) -> tuple[str, dict]:
    steps, pairs = (20, 512) if quick else (300, 4096)
    base = ["distill", "configs/gan/mnist5k-demo.yaml", f"train.steps={steps}", "train.checkpoint_every=100000", *QUIET, "--overwrite"]
    cache = out / "teacher-cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)  # drawn afresh, so its drawing time is measured
    cli([*base, f"out={out / 'cache-live'}"])
    cli([*base, f"out={out / 'cache-cached'}", f"data.teacher_cache={cache}", f"data.teacher_cache_size={pairs}"])
    live, cached = train_record(out / "cache-live"), train_record(out / "cache-cached")
    rec = cached["teacher_cache"]
    sps_live, sps_cached = steps / live["seconds"], steps / cached["seconds"]
    mb = rec["bytes_per_pair"] * pairs / 2**20
    body = (f"Demo recipe (builtin:gan-mnist5k teacher, student width 0.25, output + feature + adversarial terms, batch 64), "
            f"{steps} steps each, eval off.\n\n"
            "| teacher | steps/s | vs live | pairs | bytes per pair | cache size | drawing the cache |\n|---|---|---|---|---|---|---|\n"
            f"| live (runs every step) | {sps_live:.2f} | 1.00× | - | - | - | - |\n"
            f"| cached (data.teacher_cache) | {sps_cached:.2f} | **{sps_cached / sps_live:.2f}×** | {pairs} | {rec['bytes_per_pair']:,} | "
            f"{mb:.0f} MiB | {rec['seconds']:.1f} s, once, shared by later runs |")
    return body, {"live": live, "cached": cached, "steps_per_s": [sps_live, sps_cached]}


# --------------------------------------------------------------------------- bf16


def part_bf16(out: Path, quick: bool) -> tuple[str, dict]:
    steps = 20 if quick else 200
    speed = {}
    for mp in ("no", "bf16"):
        run = out / f"bf16-speed-{mp}"
        cli(["distill", "configs/gan/mnist5k-demo.yaml", f"out={run}", f"train.steps={steps}", f"train.mixed_precision={mp}",
             "train.checkpoint_every=100000", *QUIET, "--overwrite"])
        speed[mp] = steps / train_record(run)["seconds"]
    quality: dict[str, list[float]] = {"no": [], "bf16": []}
    seeds = [0] if quick else [0, 1]
    full = ["train.steps=30", "eval.num_samples=200"] if quick else []
    for mp in ("no", "bf16"):
        for seed in seeds:
            run = out / f"bf16-demo-{mp}-s{seed}"
            cli(["distill", "configs/gan/mnist5k-demo.yaml", f"out={run}", f"train.mixed_precision={mp}", f"train.seed={seed}", *full,
                 "--overwrite"])
            quality[mp].append(json.loads((run / "metrics.json").read_text())["student"]["fid"])
    fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    spread = max(quality["no"]) - min(quality["no"])
    gap = abs(sum(quality["bf16"]) / len(seeds) - sum(quality["no"]) / len(seeds))
    body = (f"Demo recipe on one CPU thread (this CPU has AVX512-BF16). Speed: {steps} steps, eval off. Quality: the full demo "
            f"(train.seed {', '.join(map(str, seeds))}), student FID on 2,000 samples in the featnet-mnist5k space.\n\n"
            "| precision | steps/s | vs fp32 | student FID per seed |\n|---|---|---|---|\n"
            f"| fp32 | {speed['no']:.2f} | 1.00× | {fmt(quality['no'])} |\n"
            f"| bf16 (autocast) | {speed['bf16']:.2f} | **{speed['bf16'] / speed['no']:.2f}×** | {fmt(quality['bf16'])} |\n\n"
            f"Mean FID gap bf16 vs fp32: {gap:.2f}; fp32's own spread over seeds: {spread:.2f} "
            f"({'within' if gap <= max(spread, 1e-9) else 'outside'} seed noise).")
    return body, {"steps_per_s": speed, "fid": quality}


# --------------------------------------------------------------------------- ddp


def part_ddp(out: Path, quick: bool) -> tuple[str, dict]:
    steps = 10 if quick else 150
    rate = {}
    for world in (1, 2):
        run = out / f"ddp-{world}"
        cli(["distill", "configs/gan/mnist5k-demo.yaml", f"out={run}", f"train.steps={steps}", "train.checkpoint_every=100000", *QUIET,
             "--overwrite"], torchrun=world)
        rec = train_record(run)
        rate[world] = {"steps_per_s": steps / rec["seconds"], "images_per_s": steps * 64 * world / rec["seconds"],
                       "ranks_max_abs_diff": rec.get("ranks_max_abs_diff")}
    body = (f"Demo recipe under torchrun (gloo), {steps} steps, batch 64 per process, one torch thread per process, on this "
            f"{os.cpu_count()}-core machine.\n\n| processes | steps/s | images/s | vs 1 process | ranks' largest parameter difference |\n"
            "|---|---|---|---|---|\n" + "\n".join(
                f"| {w} | {r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | **{r['images_per_s'] / rate[1]['images_per_s']:.2f}×** | "
                f"{'-' if r['ranks_max_abs_diff'] is None else r['ranks_max_abs_diff']} |" for w, r in rate.items()))
    return body, rate


PARTS = {"resume": ("Resume equivalence: kill -9, then --resume", part_resume),
         "cache": ("The teacher cache (TinyGAN-style pairs)", part_cache),
         "bf16": ("bf16 vs fp32 on CPU", part_bf16),
         "ddp": ("Two processes vs one on CPU", part_ddp)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--out", default="runs/bench-scale")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PARTS if args.part == "all" else [args.part]:
        title, fn = PARTS[name]
        t0 = time.perf_counter()
        body, raw = fn(out, args.quick)
        (out / f"{name}.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
        command = f"python benchmarks/scale.py --part {name}" + (" --quick" if args.quick else "")
        section = f"### {title} (issue 14)\n\n{header(command, time.perf_counter() - t0)}\n{body}\n"
        print(section, flush=True)
        if not args.quick:
            write_section(f"scale-{name}", section)


if __name__ == "__main__":
    main()
