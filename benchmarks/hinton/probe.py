"""One-seed probes that chose the student and the protocol of benchmarks/hinton.py (logs: benchmarks/logs/hinton-probe*.log).

    python benchmarks/hinton/probe.py 100x100@T4 100x100@T20 30x30@T4 400x400@sh0@T4 400x400@sh0@T4@a0

A spec is the student's hidden widths, then optional @T<temperature> (4), @a<alpha> (0.1), @sh<data.shift of
both students> (2), @s<steps> (3000), @seed<seed> (0). Each spec prints teacher / student alone / student
distilled test errors (of 500) and the gap closed, from ONE seed: a quick look, far noisier than the benchmark
(there a seed's distilled student moves by up to 9 errors). Teachers and students alone are cached under --root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdgen.api import distill, train_teacher

TEACHER = "configs/classifier/mnist5k-teacher.yaml"
RECIPE = "configs/classifier/mnist5k-hinton.yaml"


def parse(spec: str) -> dict:
    widths, *opts = spec.split("@")
    o = {"hidden": [int(w) for w in widths.split("x")], "T": 4.0, "a": 0.1, "sh": 2, "s": 3000, "seed": 0}
    for p in opts:
        key = next(k for k in ("seed", "sh", "T", "a", "s") if p.startswith(k))
        o[key] = float(p[len(key):]) if key in ("T", "a") else int(p[len(key):])
    return o


def errors(run: Path, who: str) -> int:
    return json.loads((run / "metrics.json").read_text())[who]["errors"]


def probe(root: Path, spec: str) -> str:
    o = parse(spec)
    common = [f"train.steps={o['s']}", "train.checkpoint_every=100000", f"train.seed={o['seed']}"]
    teacher = root / f"teacher-s{o['seed']}-{o['s']}"
    if not (teacher / "metrics.json").exists():
        train_teacher(TEACHER, [f"out={teacher}", *common])
    student = json.dumps({"hidden": o["hidden"], "dropout": 0.0})
    name = "-".join(map(str, o["hidden"]))
    alone = root / f"alone-{name}-s{o['seed']}-{o['s']}-sh{o['sh']}"
    if not (alone / "metrics.json").exists():
        train_teacher(TEACHER, [f"out={alone}", f"model.args={student}", f"data.shift={o['sh']}", *common])
    d = distill(RECIPE, [f"out={root}/d-{spec}", f"teacher.path={teacher}/teacher", f"student.args={student}", f"data.shift={o['sh']}",
                         f"methods.hinton.temperature={o['T']}", f"methods.hinton.alpha={o['a']}", *common])
    t, a, s = errors(teacher, "teacher"), errors(alone, "teacher"), d.metrics["student"]["errors"]
    closed = f"{(a - s) / (a - t):.0%}" if a != t else "n/a"
    return f"{spec}: teacher {t} alone {a} distilled {s} gap closed {closed} ({d.train_seconds:.0f}s)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="+")
    p.add_argument("--root", type=Path, default=Path("/tmp/kdgen-hinton-probe"))
    args = p.parse_args()
    for spec in args.specs:
        print(probe(args.root, spec), flush=True)


if __name__ == "__main__":
    main()
