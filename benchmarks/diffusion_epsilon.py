"""An epsilon-prediction DDPM teacher (the format of most UNets people have) through progressive and consistency distillation.

    python benchmarks/diffusion_epsilon.py                 # teacher (if missing), both students, every row, RESULTS.md
    python benchmarks/diffusion_epsilon.py --stage measure # only the measurements
    python benchmarks/diffusion_epsilon.py --stage report  # only the section, from the measurements in OUT/eval
    python benchmarks/diffusion_epsilon.py --quick         # smoke run: tiny steps; RESULTS.md untouched
    python benchmarks/diffusion_epsilon.py --out runs/bench-eps-p2k --tag p2k --progressive train.steps=2000
                                                           # a probe: extra overrides, its own RESULTS.md section

Teacher: trained here by `kdgen train-teacher configs/diffusion/mnist5k-ddpm.yaml` with the scheduler switched to
Ho et al.'s (2020) epsilon prediction on linear betas 1e-4..0.02 (over 1,024 timesteps so that DDIM step counts
nest; sqrt(alpha_cumprod) ends at 0.006, where an epsilon net's x_0 is 1/0.006 = 170x its error). The students
use kdgen's default for such a teacher (student_prediction: auto: progressive keeps epsilon, consistency predicts v
after a conversion round); --student-prediction forces one for both. Every row is measured by
`kdgen.evaluate`: FID/KID in kdgen's mnist5k feature space, 2,000 samples from the same seeded noise vs the
500 held-out test images; the teacher at 4..64 DDIM steps, its best row the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

import kdgen  # noqa: E402

SCHEDULER = ("model.args.scheduler={num_train_timesteps: 1024, beta_schedule: linear, beta_start: 0.0001, beta_end: 0.02, "
             "prediction_type: epsilon, clip_sample: true}")
TEACHER_STEPS = (64, 32, 16, 8, 4)
STUDENTS = {  # name: (recipe, overrides, sampling steps measured)
    # from the teacher's best step count (32), three halvings of 1,000 steps each
    "progressive": ("configs/diffusion/mnist5k-progressive.yaml",
                    ["methods.progressive.from_steps=32", "methods.progressive.to_steps=4", "train.steps=1000"], (8, 4)),
    "consistency": ("configs/diffusion/mnist5k-consistency.yaml", ["methods.consistency.steps=4"], (4, 2, 1)),
}


def teacher(out: Path, quick: bool) -> Path:
    folder = out / "teacher-run" / "teacher"
    if (folder / "kdgen.json").is_file():
        return folder
    steps = ["train.steps=20"] if quick else ["train.steps=6000"]
    kdgen.train_teacher("configs/diffusion/mnist5k-ddpm.yaml", [f"out={out / 'teacher-run'}", SCHEDULER, *steps], overwrite=True)
    return folder


def train(out: Path, teacher_dir: Path, quick: bool, prediction: str = "auto", more: dict[str, list[str]] | None = None) -> None:
    """Both students at once, in two processes of one thread each (`more`: extra overrides per student)."""
    procs = {}
    for name, (recipe, extra, _) in STUDENTS.items():
        extra = [*extra, *(more or {}).get(name, [])]
        run = out / name
        if (run / "student" / "kdgen.json").is_file():
            continue
        pred = [f"methods.{name}.student_prediction={prediction}"] if prediction != "auto" else []
        args = [f"out={run}", f"teacher.path={teacher_dir}", "eval.enabled=false", *extra, *pred, *(["train.steps=5"] if quick else [])]
        cmd = [sys.executable, "-c", "import sys, kdgen; kdgen.distill(sys.argv[1], sys.argv[2:], overwrite=True)", recipe, *args]
        log = open(out / f"{name}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    for name, p in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"{name} failed; see {out / (name + '.log')}")


def rows(out: Path, teacher_dir: Path) -> list[tuple[str, str, int]]:
    r = [(f"teacher@{s}", str(teacher_dir), s) for s in TEACHER_STEPS]
    r += [(f"progressive@{s}", str(out / "progressive" / "rounds" / f"steps-{s}" / "student"), s) for s in STUDENTS["progressive"][2]]
    r += [(f"consistency@{s}", str(out / "consistency" / "student"), s) for s in STUDENTS["consistency"][2]]
    return r


def measure(out: Path, teacher_dir: Path, num_samples: int, *, saved: bool = False, reuse: bool = False) -> dict[str, dict]:
    """Every row measured by kdgen.evaluate (saved: read back what an earlier measure wrote to OUT/eval; reuse: only
    the rows it has not measured yet are measured)."""
    results = {}
    for name, folder, steps in rows(out, teacher_dir):
        done = out / "eval" / name.replace("@", "-") / "metrics.json"
        if saved or (reuse and done.is_file()):
            results[name] = json.loads(done.read_text())["model"]
            continue
        t0 = time.perf_counter()
        r = kdgen.evaluate(folder, [f"eval.num_samples={num_samples}", "eval.seeds=[0]", "eval.latency_repeats=5"], steps=steps,
                           out=out / "eval" / name.replace("@", "-"))
        results[name] = r.metrics["model"]
        print(f"[measure {name}] FID {results[name]['fid']:.2f} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return results


def report(results: dict, out: Path, teacher_dir: Path, args, wall: float) -> str:
    tmeta = json.loads((teacher_dir / "kdgen.json").read_text())
    sched = json.loads((teacher_dir / "scheduler_config.json").read_text())
    teachers = {k: v for k, v in results.items() if k.startswith("teacher@")}
    best_name = min(teachers, key=lambda k: teachers[k]["fid"])
    best = teachers[best_name]
    title = "## Epsilon-prediction DDPM teacher: progressive and consistency students (issue 12)"
    title += "" if args.student_prediction == "auto" else f", {args.student_prediction.replace('_', '-')} students"
    title += f" — probe '{args.tag}'" if args.tag else ""
    lines = [title, "",
             header(" ".join(["python benchmarks/diffusion_epsilon.py", *map(shlex.quote, sys.argv[1:])]), wall),
             f"Teacher: `configs/diffusion/mnist5k-ddpm.yaml` with `{SCHEDULER}`, {tmeta.get('train_steps')} steps "
             f"({tmeta.get('train_seconds', 0) / 60:.1f} min); scheduler prediction_type `{sched['prediction_type']}`. Students: "
             f"`student_prediction: {args.student_prediction}` (the column 'predicts' says what each one predicts). FID/KID in kdgen's "
             f"mnist5k feature space, {args.samples} samples from seed 0's noise vs the 500 held-out test images. Progressive: "
             f"32 -> 4 DDIM steps (from the teacher's best step count), 1,000 steps per round; consistency: 1,500 steps on the "
             f"64-step DDIM grid. A student that predicts v first learns the teacher's clipped denoiser as v in a conversion round "
             f"(`convert_steps: auto`, half of train.steps); train (min) is the run's own training time, every round included."
             + (" The rows are read back from the measurements the script's measure stage wrote to its OUT/eval." if args.stage == "report" else "")
             + (" Rows already measured in OUT/eval (the same teacher and run folders) were kept (--reuse)." if args.reuse else "")
             + "".join(f" Extra {k} overrides: `{' '.join(v)}`." for k, v in (("progressive", args.progressive),
                                                                         ("consistency", args.consistency)) if v), "",
             "| row | predicts | steps | FID | FID / best teacher | KID x1e3 | precision | recall | MACs / image | train (min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        run = name.split("@")[0]
        record = out / run / "metrics.json"  # the run's own training seconds, every round (the conversion too) included
        train_min = f"{json.loads(record.read_text())['train']['seconds'] / 60:.1f}" if record.is_file() else "-"
        folder = teacher_dir if run == "teacher" else Path(m["path"])
        pred = json.loads((folder / "scheduler_config.json").read_text()).get("prediction_type", "epsilon")
        lines.append(f"| {name} | {pred} | {m['sampling_steps']} | {m['fid']:.2f} | {m['fid'] / best['fid']:.2f}x | {m['kid'] * 1e3:.2f} | "
                     f"{m['precision']:.3f} | {m['recall']:.3f} | {m['macs'] / 1e6:,.1f} M | {train_min} |")
    lines += ["", f"Targets: 4-step students FID ≤ 1.2× the teacher's best step count ({best_name}, FID {best['fid']:.2f}):"]
    for name in ("progressive@4", "consistency@4"):
        if name in results:
            r = results[name]["fid"] / best["fid"]
            lines.append(f"- {name}: {results[name]['fid']:.2f} = {r:.2f}× — {'met' if r <= 1.2 else 'missed'}"
                         f" (the teacher's own 4-step DDIM: {teachers.get('teacher@4', {}).get('fid', float('nan')):.2f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="with --quick: still write RESULTS.md")
    ap.add_argument("--stage", choices=["all", "measure", "report"], default="all",
                    help="report: rewrite the section from the measurements already in OUT/eval")
    ap.add_argument("--out", default="runs/bench-eps")
    ap.add_argument("--progressive", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for the progressive run")
    ap.add_argument("--consistency", nargs="*", default=[], metavar="KEY=VALUE", help="extra overrides for the consistency run")
    ap.add_argument("--tag", default="", help="write the section as diffusion_epsilon_probe_TAG (a probe beside the main rows)")
    ap.add_argument("--reuse", action="store_true", help="keep rows already measured in OUT/eval (same teacher, same run folders)")
    ap.add_argument("--student-prediction", default="auto", choices=["auto", "epsilon", "v_prediction", "sample"],
                    help="the students' parameterisation (auto: the teacher's, since they start as the teacher)")
    args = ap.parse_args()
    args.samples = 200 if args.quick else 2000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    teacher_dir = teacher(out, args.quick)
    if args.stage == "all":
        train(out, teacher_dir, args.quick, args.student_prediction, {"progressive": args.progressive, "consistency": args.consistency})
    results = measure(out, teacher_dir, args.samples, saved=args.stage == "report", reuse=args.reuse)
    body = report(results, out, teacher_dir, args, time.perf_counter() - t0)
    if not args.quick or args.write:
        name = "diffusion_epsilon" + ("" if args.student_prediction == "auto" else "_" + args.student_prediction)
        write_section(name + (f"_probe_{args.tag}" if args.tag else ""), body)
    print(body)


if __name__ == "__main__":
    main()
