"""Does longer training let Hinton KD close more of the gap on mnist5k? (log: benchmarks/logs/hinton-steps.log)

    python benchmarks/hinton/probe_steps.py                                   # seeds 0 1 2, 3000 6000 10000 20000 steps, T4a0.1 and T20a0
    python benchmarks/hinton/probe_steps.py --stages 3000 10000 --settings T4a0.1
    python benchmarks/hinton/probe_steps.py --lr 0.0003 --stages 3000 10000 --settings T20a0 --json benchmarks/hinton/steps-lr3e-4.json
    python benchmarks/hinton/probe_steps.py --no-train --write    # table from steps.json -> benchmarks/hinton/steps.md and RESULTS.md

Hypothesis: the soft targets regularise, so the distilled student keeps improving with longer training while the
unregularised student alone does not. Per seed, one teacher (configs/classifier/mnist5k-teacher.yaml, 3000 steps
as in benchmarks/hinton.py); then the student alone and each distilled student (the same 400-400 shape, unshifted
images, seed, batch, Adam 1e-3 constant) are trained to each stage by resuming their own run (`resume=True`,
the trainer replays the data order of an uninterrupted run, and the students have no dropout or shifts, so a
stage-s result is that of an s-step run; the 3000-step row reproduces benchmarks/hinton.py). Both students
always have the same number of steps. Test errors of the 500 mnist5k test images; gap closed of the means =
(alone - distilled) / (alone - teacher). Settings are chosen on the test images (no validation split): optimistic.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import RESULTS, header  # noqa: E402

from kdgen.api import distill, train_teacher  # noqa: E402

TEACHER = "configs/classifier/mnist5k-teacher.yaml"
RECIPE = "configs/classifier/mnist5k-hinton.yaml"
RECIPE_GAN = "configs/classifier/mnist5k-hinton-gan.yaml"  # --gan: the distilled students get the generated transfer set
STUDENT = '{"hidden": [400, 400], "dropout": 0.0}'
HERE = Path(__file__).resolve().parent


def errors(run: Path, who: str) -> int:
    return json.loads((run / "metrics.json").read_text())[who]["errors"]


def trained_steps(run: Path) -> int:
    m = run / "metrics.json"
    return json.loads(m.read_text())["train"]["steps"] if m.exists() else 0


def to_stage(kind: str, run: Path, steps: int, overrides: list[str], recipe: str = RECIPE) -> int:
    """Train (or resume) `run` to `steps`; its test errors there."""
    who = "teacher" if kind == "alone" else "student"
    if trained_steps(run) != steps:
        resume = (run / "state" / "last.pt").is_file()
        common = [f"out={run}", f"train.steps={steps}", "train.checkpoint_every=100000", *overrides]
        if kind == "alone":
            train_teacher(TEACHER, [*common, f"model.args={STUDENT}", "data.shift=0"], resume=resume)
        else:
            distill(recipe, common, resume=resume)
    return errors(run, who)


def parse_setting(s: str) -> tuple[float, float]:
    m = re.fullmatch(r"T([\d.]+)a([\d.]+)", s)
    if not m:
        raise SystemExit(f"bad setting {s!r}; write T<temperature>a<alpha>, e.g. T4a0.1")
    return float(m[1]), float(m[2])


def gap(t: float, a: float, d: float) -> float:
    return (a - d) / (a - t) if a != t else float("nan")


def table(res: dict, seeds: list[int], settings: list[str]) -> str:
    teachers = [res["teacher"][str(s)] for s in seeds]
    tm = statistics.mean(teachers)
    lines = [f"teachers ({res.get('teacher_steps', 3000)} steps), seeds {', '.join(map(str, seeds))}: {teachers} errors, mean {tm:.1f}", "",
             "| steps | student | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | gap closed (of the means) | per seed |",
             "|---:|---|" + "---:|" * (len(seeds) + 3)]
    for steps in sorted({int(k) for k in res["alone"]}):
        alone = res["alone"].get(str(steps), {})
        if len(alone) < len(seeds) or not any(len(res["distilled"].get(n, {}).get(str(steps), {})) == len(seeds) for n in settings):
            continue
        a = [alone[str(s)] for s in seeds]
        lines.append(f"| {steps} | alone | " + " | ".join(map(str, a)) + f" | {statistics.mean(a):.1f} | | |")
        for name in settings:
            got = res["distilled"].get(name, {}).get(str(steps), {})
            if len(got) < len(seeds):
                continue
            d = [got[str(s)] for s in seeds]
            per = ", ".join(f"{gap(t, x, y):.0%}" for t, x, y in zip(teachers, a, d))
            lines.append(f"| {steps} | distilled {name} | " + " | ".join(map(str, d)) + f" | {statistics.mean(d):.1f} | "
                         f"**{gap(tm, statistics.mean(a), statistics.mean(d)):.0%}** | {per} |")
    return "\n".join(lines)


def subsection(res: dict, seeds: list[int], settings: list[str], gan: bool = False) -> str:
    """'What else was tried' for the hinton section of RESULTS.md: the table, the best row and the verdict."""
    teachers = [res["teacher"][str(s)] for s in seeds]
    best = None
    for steps, alone in res["alone"].items():
        for name in settings:
            got = res["distilled"].get(name, {}).get(steps, {})
            if len(got) == len(seeds) == len(alone):
                g = gap(statistics.mean(teachers), statistics.mean(alone.values()), statistics.mean(got.values()))
                best = max(best or (g, 0, ""), (g, int(steps), name))
    verdict = (f"best: {best[2]} at {best[1]} steps, {best[0]:.0%} of the gap of the means; the >= 90% target is "
               + ("reached on these seeds" if best[0] >= 0.9 else "not reached by any row"))
    if gan:
        return "\n".join([
            "### What else was tried: the GAN transfer set, trained longer (`benchmarks/hinton/probe_steps.py --gan`)", "",
            res.get("header") or header(res.get("command", "python benchmarks/hinton/probe_steps.py --gan"), res["wall_s"]),
            f"As the table above, for the distilled students of configs/classifier/mnist5k-hinton-gan.yaml (the plain recipe plus "
            f"the generated transfer set; a pool of 20,000 images, the recipe's first value, unless the row says pool 100k, its value "
            f"since). Seeds {', '.join(map(str, seeds))} with their {res.get('teacher_steps', 3000)}-step teachers; "
            "the student alone at each step count is the one of the table above (the same runs). Each stage resumes the previous one, "
            "which redraws the same pool but not the same pool images per batch as an uninterrupted run. Distilled setting TxaY = "
            "temperature x, alpha y. Chosen on the test images: optimistic.", "",
            table(res, seeds, settings), "", f"- {verdict}",
        ])
    return "\n".join([
        "### What else was tried: longer training (`benchmarks/hinton/probe_steps.py`)", "",
        res.get("header") or header(res.get("command", "python benchmarks/hinton/probe_steps.py"), res["wall_s"]),
        f"Does more training let the soft targets close more of the gap? Seeds {', '.join(map(str, seeds))}, each with its "
        f"{res.get('teacher_steps', 3000)}-step teacher as above; the student alone and the distilled students (400-400, unshifted "
        "images, Adam 1e-3 constant) always train for the same number of steps, each resumed stage by stage (identical to an "
        "uninterrupted run: the 3000-step row reproduces the main table). Distilled setting TxaY = temperature x, alpha y. "
        "Gap closed of the means, against these seeds' teachers and the student alone at the same step count. "
        "Chosen on the test images: optimistic.", "",
        table(res, seeds, settings), "",
        f"- {verdict}",
        "- a cosine learning-rate decay could not be probed: the trainer's learning rate is constant (`train.*` has no schedule key) "
        "and src/ was left alone",
    ])


def write_into_results(text: str) -> None:
    """Put `text` at the end of RESULTS.md's hinton section, replacing an earlier copy of it."""
    body = RESULTS.read_text()
    end = "<!-- hinton:end -->"
    start = body.index("<!-- hinton:begin -->")
    stop = body.index(end, start)
    section = body[start:stop]
    cut = section.find("### What else was tried:")
    section = (section[:cut] if cut >= 0 else section).rstrip() + "\n\n" + text.rstrip() + "\n"
    RESULTS.write_text(body[:start] + section + body[stop:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--stages", type=int, nargs="+", default=[3000, 6000, 10000, 20000])
    p.add_argument("--settings", nargs="+", default=["T4a0.1", "T20a0"])
    p.add_argument("--teacher-steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=None, help="train.lr of both students (default: the recipes' 1e-3); runs named -lr<lr>")
    p.add_argument("--root", type=Path, default=Path("/tmp/kdgen-hinton-steps"))
    p.add_argument("--json", type=Path, default=HERE / "steps.json")
    p.add_argument("--no-train", action="store_true", help="only print (and --write) the table of --json")
    p.add_argument("--write", action="store_true", help="write benchmarks/hinton/steps.md (steps-gan.md with --gan) and put the probes' "
                   "tables at the end of RESULTS.md's hinton section")
    p.add_argument("--transfer-images", type=int, default=None, help="with --gan: data.transfer_images (default: the recipe's); "
                   "runs named -p<N>")
    p.add_argument("--gan", action="store_true", help="distil with mnist5k-hinton-gan.yaml (the generated transfer set); the students "
                   "alone are read from benchmarks/hinton/steps.json, not retrained")
    args = p.parse_args()
    if args.gan and args.json == HERE / "steps.json":
        args.json = HERE / "steps-gan.json"
    res = {"teacher": {}, "alone": {}, "distilled": {}}
    if args.json.exists():
        res = json.loads(args.json.read_text())
    if args.gan:  # the same students alone as the plain probe: its runs, not new ones
        res["alone"] = json.loads((HERE / "steps.json").read_text())["alone"]
    if not args.no_train:
        train(args, res)
    if "wall_s" not in res:  # a run that did not time itself: first config written to last metrics written
        times = [f.stat().st_mtime for f in args.root.glob("*/config.yaml")] + [f.stat().st_mtime for f in args.root.glob("*/metrics.json")]
        res["wall_s"] = max(times) - min(times) if times else 0.0
    text = subsection(res, args.seeds, args.settings, gan=args.gan)
    print(text)
    if args.write:
        (HERE / ("steps-gan.md" if args.gan else "steps.md")).write_text(text + "\n")
        write_into_results("\n\n".join(probe_tables()))


def probe_tables() -> list[str]:
    """The probes' subsections that end RESULTS.md's hinton section, in a fixed order (benchmarks/hinton.py appends the same)."""
    return [f.read_text().rstrip() for f in (HERE / "steps.md", HERE / "steps-gan.md") if f.exists()]


def train(args, res: dict) -> None:
    t0 = time.perf_counter()
    res["command"] = "python benchmarks/hinton/probe_steps.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    recipe, prefix = (RECIPE_GAN, "g") if args.gan else (RECIPE, "d")
    for s in args.seeds:
        t = args.root / f"teacher-s{s}"
        if trained_steps(t) != args.teacher_steps:
            train_teacher(TEACHER, [f"out={t}", f"train.steps={args.teacher_steps}", "train.checkpoint_every=100000", f"train.seed={s}"])
        res["teacher"][str(s)] = errors(t, "teacher")
    res["teacher_steps"] = args.teacher_steps
    for steps in sorted(args.stages):
        for s in args.seeds:
            seed = [f"train.seed={s}", *([f"train.lr={args.lr}"] if args.lr else [])]
            tag = f"-lr{args.lr:g}" if args.lr else ""
            pool = [f"data.transfer_images={args.transfer_images}"] if args.gan and args.transfer_images else []
            tag += f"-p{args.transfer_images}" if pool else ""
            if not args.gan:
                res["alone"].setdefault(str(steps), {})[str(s)] = to_stage("alone", args.root / f"alone-s{s}{tag}", steps, seed)
            for name in args.settings:
                temp, alpha = parse_setting(name)
                e = to_stage("distilled", args.root / f"{prefix}-{name}-s{s}{tag}", steps,
                             [*seed, *pool, f"teacher.path={args.root}/teacher-s{s}/teacher",
                              f"methods.hinton.temperature={temp}", f"methods.hinton.alpha={alpha}"], recipe)
                res["distilled"].setdefault(name, {}).setdefault(str(steps), {})[str(s)] = e
            res["wall_s"] = res.get("wall_s", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            print(f"{steps} steps, seed {s}: teacher {res['teacher'][str(s)]}, alone {res['alone'][str(steps)][str(s)]}, "
                  + ", ".join(f"{n} {res['distilled'][n][str(steps)][str(s)]}" for n in args.settings), flush=True)
            args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(table(res, args.seeds, args.settings) + "\n", flush=True)
    res["header"] = header(res["command"], res["wall_s"])  # date, commit and machine of the training, kept by --no-train --write
    args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
