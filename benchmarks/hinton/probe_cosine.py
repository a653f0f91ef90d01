"""Hinton KD with a cosine learning-rate decay (train.lr_schedule=cosine) for both students, seeds 0-2.

    python benchmarks/hinton/probe_cosine.py [--steps 3000 6000] [--root /tmp/kdgen-hinton-cosine] [--teachers DIR]

The protocol of benchmarks/hinton.py (1200-1200 teacher with dropout and shifts, 3000 steps; 400-400 students,
unshifted images, batch 128, Adam 1e-3), except that both students decay their learning rate to 0 along a
cosine. Each (steps, student) is its own run: a cosine run cannot be extended by resuming. Teachers are reused
from --teachers (teacher-s<seed>/teacher, as probe_steps.py leaves them) or trained. Writes the `hinton_cosine`
section of RESULTS.md. Settings are chosen on the test images (no validation split): optimistic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import header, write_section  # noqa: E402

from kdgen.api import distill, train_teacher  # noqa: E402

TEACHER = "configs/classifier/mnist5k-teacher.yaml"
RECIPE = "configs/classifier/mnist5k-hinton.yaml"
STUDENT = '{"hidden": [400, 400], "dropout": 0.0}'
SETTINGS = {"T4a0.1": (4.0, 0.1), "T20a0": (20.0, 0.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, nargs="+", default=[3000])
    p.add_argument("--root", type=Path, default=Path("/tmp/kdgen-hinton-cosine"))
    p.add_argument("--teachers", type=Path, default=Path("/tmp/kdgen-hinton-steps"))
    args = p.parse_args()
    t0 = time.perf_counter()
    teachers, rows = {}, []
    for seed in args.seeds:
        folder = args.teachers / f"teacher-s{seed}"
        if not (folder / "teacher" / "model.json").is_file():
            folder = args.root / f"teacher-s{seed}"
            train_teacher(TEACHER, [f"out={folder}", f"train.seed={seed}", "train.steps=3000"])
        teachers[seed] = json.loads((folder / "metrics.json").read_text())["teacher"]["errors"]
    for steps in args.steps:
        common = [f"train.steps={steps}", "train.lr_schedule=cosine", "train.checkpoint_every=100000"]
        alone = {s: train_teacher(TEACHER, [f"out={args.root}/alone-{steps}-s{s}", f"train.seed={s}", f"model.args={STUDENT}",
                                            "data.shift=0", *common]).metrics["teacher"]["errors"] for s in args.seeds}
        rows.append((steps, "alone (cosine)", alone))
        for name, (t, a) in SETTINGS.items():
            d = {s: distill(RECIPE, [f"out={args.root}/{name}-{steps}-s{s}", f"teacher.path={args.teachers / f'teacher-s{s}' / 'teacher'}",
                                     f"train.seed={s}", f"methods.hinton.temperature={t}", f"methods.hinton.alpha={a}", *common]
                            ).metrics["student"]["errors"] for s in args.seeds}
            rows.append((steps, f"distilled {name} (cosine)", d))
    tm = statistics.mean(teachers.values())
    lines = [f"teachers (3000 steps, constant lr), seeds {args.seeds}: {list(teachers.values())} errors, mean {tm:.1f}", "",
             "| steps | student | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | gap closed (of the means) | per seed |",
             "|---:|---|" + "---:|" * (len(args.seeds) + 3)]
    for steps, who, errs in rows:
        base = next(e for st, w, e in rows if st == steps and w.startswith("alone"))
        am, dm = statistics.mean(base.values()), statistics.mean(errs.values())
        closed = "" if who.startswith("alone") else f"**{(am - dm) / (am - tm):.0%}**"
        per = "" if who.startswith("alone") else ", ".join(f"{(base[s] - errs[s]) / (base[s] - teachers[s]):.0%}" for s in args.seeds)
        lines.append(f"| {steps} | {who} | " + " | ".join(str(errs[s]) for s in args.seeds) + f" | {dm:.1f} | {closed} | {per} |")
    body = "\n".join(["### What else was tried: a cosine learning-rate decay (`benchmarks/hinton/probe_cosine.py`)", "",
                      header("python benchmarks/hinton/probe_cosine.py " + " ".join(sys.argv[1:]), time.perf_counter() - t0).rstrip(), "",
                      "Both students decay their learning rate to 0 along a cosine (`train.lr_schedule=cosine`); otherwise as the main table. "
                      "Gap closed against these seeds' teachers and the cosine student alone at the same steps.", "", *lines])
    print(body)
    write_section("hinton_cosine", body)


if __name__ == "__main__":
    main()
