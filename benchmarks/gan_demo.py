"""GAN distillation on mnist5k: the demo recipe vs the from-scratch baseline, ablations, width sweep.

    python benchmarks/gan_demo.py            # full (about an hour on 2 CPU cores)
    python benchmarks/gan_demo.py --quick    # smoke run, minutes; does not touch RESULTS.md unless --write

Every row is a `kdgen.distill` run of configs/gan/mnist5k-demo.yaml with the overrides shown; the
teacher is measured in every run by the same code (its row is from the demo run). FID/KID are in
kdgen's mnist5k feature space (shipped featnet, 128-d pre-ReLU embedding, standardised), N generated
samples per seed vs the 500 held-out mnist5k test images, mean +- std over evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402

RECIPE = "configs/gan/mnist5k-demo.yaml"
HERE = Path(__file__).resolve().parent
SCRATCH = ["student.init=random", "methods={adversarial: {weight: 1.0, init: random}}", "train.lr=0.0002", "train.grad_clip=0"]

RUNS = [  # (name, what it shows, overrides)
    ("demo", "output + feature + adversarial, prune init (the demo)", []),
    ("scratch", "same student, same steps, no teacher (GAN from scratch)", SCRATCH),
    ("output", "output (L1) only", ["methods={output: {weight: 1.0}}"]),
    ("output+feature", "output + feature", ["methods={output: {weight: 1.0}, feature: {weight: 1.0}}"]),
    ("random-init", "demo losses, random init", ["student.init=random"]),
    ("w0.5", "demo, width 0.5", ["student.width=0.5"]),
    ("w0.125", "demo, width 0.125", ["student.width=0.125"]),
    ("w0.0625", "demo, width 0.0625", ["student.width=0.0625"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 steps, 200 samples: checks the script, not the numbers")
    ap.add_argument("--write", action="store_true", help="with --quick: still write RESULTS.md")
    ap.add_argument("--only", nargs="*", help="run only these rows")
    ap.add_argument("--out", default="runs/bench-gan")
    args = ap.parse_args()
    common = ["eval.seeds=[0,1,2]", "eval.latency_repeats=30"]
    if args.quick:
        common = ["train.steps=20", "eval.num_samples=200", "eval.seeds=[0,1]", "eval.latency_repeats=3"]
    t_all = time.perf_counter()
    rows = {}
    for name, what, overrides in RUNS:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        result = replacing(kdgen.distill, RECIPE, [f"out={args.out}/{name}", *common, *overrides])
        rows[name] = (what, overrides, result.metrics, time.perf_counter() - t0)
        print(f"[{name}] FID {result.metrics['student']['fid']:.2f} (teacher {result.metrics['teacher']['fid']:.2f}) "
              f"in {rows[name][3] / 60:.1f} min", flush=True)
    body = report(rows, args, time.perf_counter() - t_all)
    if not args.quick or args.write:
        # the trade curve as a picture: every row's teacher and student, FID vs MACs and vs latency
        kdgen.compare([f"{args.out}/{name}" for name in rows], HERE / "gan_demo")
        body += "\n\nPareto plot of every row (`kdgen compare`): ![pareto](gan_demo/pareto.png); table: [gan_demo/compare.md](gan_demo/compare.md)."
        write_section("gan_demo", body)
    print(body)


def _teacher_training_seconds() -> str:
    path = Path(kdgen.__file__).parent / "assets" / "gan-mnist5k" / "training.json"  # the train-teacher run's metrics.json
    return f"{json.loads(path.read_text())['train']['seconds'] / 60:.1f} min" if path.exists() else "not recorded"


def report(rows: dict, args, wall: float) -> str:
    cmd = "python benchmarks/gan_demo.py" + (" --quick" if args.quick else "")
    demo = rows.get("demo", next(iter(rows.values())))[2]
    t = demo["teacher"]
    p = demo["protocol"]
    lines = [
        "## GAN distillation on mnist5k (issue 2)", "", header(cmd, wall),
        f"Protocol: FID/KID in kdgen's feature space ({p['feature_net']['path']}, sha256 {p['feature_net']['sha256'][:12]}), "
        f"{p['generated_count']} samples per seed, seeds {p['seeds']}, vs the {p['reference_count']} images of the {p['reference']}; "
        f"mean ± std over seeds. Floor (2,000 real *train* images vs the same reference): FID {p['real_train_vs_reference']['fid']:.2f}. "
        f"Latency: PyTorch eager on this machine's CPU, median of repeats. Training: {demo['train']['steps']} steps of batch 64 per run.",
        "",
        "| run | what | FID | FID / teacher | KID×1e3 | MACs/img | MACs: teacher / student | latency b1 ms | b64 ms | PSNR to teacher dB | train min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| teacher | shipped builtin:gan-mnist5k | {t['fid']:.2f} ± {t['fid_std']:.2f} | 1.000 | {t['kid'] * 1e3:.1f} | "
        f"{t['macs'] / 1e6:.2f}M | 1.0× | {t['latency_ms']['b1']:.2f} | {t['latency_ms']['b64']:.1f} | - | {_teacher_training_seconds()} |",
    ]
    for name, (what, _, m, _secs) in rows.items():
        s, tt = m["student"], m["teacher"]
        lines.append(
            f"| {name} | {what} | {s['fid']:.2f} ± {s['fid_std']:.2f} | {s['fid'] / tt['fid']:.3f} | {s['kid'] * 1e3:.1f} | "
            f"{s['macs'] / 1e6:.2f}M | {tt['macs'] / s['macs']:.1f}× | {s['latency_ms']['b1']:.2f} | {s['latency_ms']['b64']:.1f} | "
            f"{s['fidelity']['psnr_db']:.1f} | {m['train']['seconds'] / 60:.1f} |"
        )
    lines += ["", "Overrides per row (on top of the demo recipe):", ""]
    lines += [f"- {name}: `{' '.join(ov) or '(none)'}`" for name, (_, ov, _, _) in rows.items()]
    lines += ["", targets(rows)]
    return "\n".join(lines)


def targets(rows: dict) -> str:
    out = ["Targets (issue 2):", ""]
    if "demo" in rows:
        m = rows["demo"][2]
        r = m["student"]["fid"] / m["teacher"]["fid"]
        mac = m["teacher"]["macs"] / m["student"]["macs"]
        out.append(f"- demo student ≥ 14× fewer MACs: measured {mac:.1f}× — {'met' if mac >= 14 else 'missed'}.")
        out.append(f"- demo student FID ≤ 1.05× teacher: measured {r:.3f}× — {'met' if r <= 1.05 else 'missed'}.")
        if "scratch" in rows:
            sc = rows["scratch"][2]["student"]
            gap = (sc["fid"] - m["student"]["fid"]) / max(sc["fid_std"], m["student"]["fid_std"], 1e-9)
            out.append(f"- beats the from-scratch baseline: demo {m['student']['fid']:.2f} vs scratch {sc['fid']:.2f} "
                       f"({gap:.0f}× the larger seed std) — {'met' if m['student']['fid'] < sc['fid'] else 'missed'}.")
        wall, teach = m["train"]["seconds"], _teacher_training_seconds()
        out.append(f"- distillation wall time {wall / 60:.1f} min vs teacher training {teach} (same machine).")
    for name in ("w0.125", "w0.0625"):
        if name in rows:
            m = rows[name][2]
            mac, r = m["teacher"]["macs"] / m["student"]["macs"], m["student"]["fid"] / m["teacher"]["fid"]
            out.append(f"- {name}: {mac:.0f}× fewer MACs at FID {r:.3f}× the teacher's (aim at ≥ 40×: ≤ 1.0×) — "
                       f"{'met' if mac >= 40 and r <= 1.0 else ('missed' if mac >= 40 else 'n/a (< 40×)')}.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
