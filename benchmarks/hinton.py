"""Hinton et al. (2015) on mnist5k: teacher, student alone, student distilled, over several seeds; and a T / alpha sweep.

    python benchmarks/hinton.py            # full (5 seeds and the sweep; about 30 min on one CPU thread); rewrites the `hinton` section of RESULTS.md
    python benchmarks/hinton.py --quick    # smoke run, a minute; does not touch RESULTS.md unless --write

For every seed: the teacher (configs/classifier/mnist5k-teacher.yaml, a 1200-1200 MLP with dropout and shifted
images), the student alone (the teacher recipe with the student's shape and data.shift, both read from the
distillation recipe) and the student distilled from that seed's teacher (configs/classifier/mnist5k-hinton.yaml).
The two students share shape, steps, data (the recipe's data.shift: 0, Hinton's unregularised student) and seed.
Errors are counted on the 500 mnist5k test images. Gap closed = (alone - distilled) / (alone - teacher), per
seed and of the means. The sweep distils the teachers of the first `--sweep-seeds` seeds at T = 1, 2, 4, 8, 20
(the recipe's alpha) and at alpha = 0, 0.1, 0.5 (the recipe's T); the recipe's own setting is the main run, reused.
The section ends with benchmarks/hinton/steps.md when present (longer training, written by hinton/probe_steps.py --write)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

import kdgen  # noqa: E402,F401
from kdgen.api import distill, train_teacher  # noqa: E402

TEACHER = "configs/classifier/mnist5k-teacher.yaml"
RECIPE = "configs/classifier/mnist5k-hinton.yaml"
HERE = Path(__file__).resolve().parent
TARGET = 0.90
TEST_IMAGES = 500


def recipe_facts() -> dict:
    """What the table states about the two recipes, read from them so text and runs cannot drift apart."""
    teacher, recipe = (yaml.safe_load(Path(p).read_text()) for p in (TEACHER, RECIPE))
    hinton = recipe["methods"]["hinton"]
    return {"teacher_args": teacher["model"]["args"], "student_args": recipe["student"]["args"],
            "teacher_shift": int(teacher["data"].get("shift", 0)), "student_shift": int(recipe["data"].get("shift", 0)),
            "temperature": float(hinton["temperature"]), "alpha": float(hinton["alpha"])}


def shape(args: dict) -> str:
    return "-".join(str(h) for h in args["hidden"])


def one_seed(root: Path, seed: int, common: list[str], facts: dict) -> dict:
    """Teacher, student alone, student distilled for one seed: their test errors and parameter counts.
    The student alone is the teacher recipe with the distillation recipe's student shape and data.shift."""
    seeded = [f"train.seed={seed}", *common]
    t = train_teacher(TEACHER, [f"out={root}/teacher-s{seed}", *seeded])
    a = train_teacher(TEACHER, [f"out={root}/alone-s{seed}", f"model.args={json.dumps(facts['student_args'])}",
                                f"data.shift={facts['student_shift']}", *seeded])
    d = distill(RECIPE, [f"out={root}/distilled-s{seed}", f"teacher.path={t.out}/teacher", *seeded])
    if a.metrics["teacher"]["params"] != d.metrics["student"]["params"]:
        raise RuntimeError("the student alone and the distilled student differ in size; the comparison would be unfair")
    return {"seed": seed, "teacher": t.metrics["teacher"]["errors"], "alone": a.metrics["teacher"]["errors"],
            "distilled": d.metrics["student"]["errors"], "agreement": d.metrics["student"]["agreement"],
            "teacher_params": t.metrics["teacher"]["params"], "student_params": d.metrics["student"]["params"],
            "alone_params": a.metrics["teacher"]["params"], "teacher_path": str(t.out / "teacher"),
            "seconds": round(t.train_seconds + a.train_seconds + d.train_seconds, 1)}


def gap_closed(teacher: float, alone: float, distilled: float) -> float:
    return (alone - distilled) / (alone - teacher) if alone != teacher else float("nan")


def mean_std(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def sweep(root: Path, rows: list[dict], settings: list[tuple[float, float]], facts: dict, common: list[str]) -> dict[tuple[float, float], list[int]]:
    """{(T, alpha): distilled errors for each swept seed}; the recipe's own (T, alpha) is the main run's result."""
    out: dict[tuple[float, float], list[int]] = {}
    for t, alpha in settings:
        out[t, alpha] = []
        for r in rows:
            if (t, alpha) == (facts["temperature"], facts["alpha"]):
                out[t, alpha].append(r["distilled"])
                continue
            run = distill(RECIPE, [f"out={root}/sweep-s{r['seed']}-T{t:g}-a{alpha:g}", f"teacher.path={r['teacher_path']}",
                                   f"methods.hinton.temperature={t}", f"methods.hinton.alpha={alpha}", f"train.seed={r['seed']}", *common])
            out[t, alpha].append(run.metrics["student"]["errors"])
        print(f"T={t:g} alpha={alpha:g}: {out[t, alpha]} errors", flush=True)
    return out


def sweep_plot(swept: dict[tuple[float, float], list[int]], rows: list[dict], facts: dict, path: Path) -> None:
    """Errors vs T (at the recipe's alpha) and vs alpha (at the recipe's T): mean ± std over the swept seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, axis in zip(axes, ("T", "alpha")):
        pts = sorted((k[0] if axis == "T" else k[1], v) for k, v in swept.items()
                     if (k[1] == facts["alpha"] if axis == "T" else k[0] == facts["temperature"]))
        xs = [x for x, _ in pts]
        ax.errorbar(xs, [statistics.mean(v) for _, v in pts], yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts],
                    fmt="o-", capsize=3, label=f"student distilled ({len(rows)} seeds, mean ± std)")
        ax.axhline(statistics.mean(r["alone"] for r in rows), color="tab:red", ls="--", label="student alone (mean)")
        ax.axhline(statistics.mean(r["teacher"] for r in rows), color="tab:green", ls=":", label="teacher (mean)")
        if axis == "T":
            ax.set(xscale="log", xlabel=f"temperature T (alpha = {facts['alpha']:g})", xticks=xs, xticklabels=[f"{x:g}" for x in xs])
        else:
            ax.set(xlabel=f"alpha, weight of the hard labels (T = {facts['temperature']:g})", xticks=xs)
        ax.grid(alpha=0.3)
    axes[0].set(ylabel=f"test errors (of {TEST_IMAGES})")
    axes[0].set_ylim(bottom=0)
    axes[1].legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})


def table(rows: list[dict], swept: dict[tuple[float, float], list[int]], facts: dict, steps: int, wall: float, command: str) -> str:
    t, a, d = ([r[k] for r in rows] for k in ("teacher", "alone", "distilled"))
    closed = [gap_closed(*x) for x in zip(t, a, d)]
    of_means = gap_closed(statistics.mean(t), statistics.mean(a), statistics.mean(d))
    tp, sp = rows[0]["teacher_params"], rows[0]["student_params"]
    ratio = tp / sp
    met = "met" if statistics.mean(a) > statistics.mean(t) and of_means >= TARGET and ratio >= 3 else "missed"
    n_swept = len(next(iter(swept.values())))
    ts, as_ = statistics.mean(t[:n_swept]), statistics.mean(a[:n_swept])
    shifts = (f"random shifts of up to {facts['teacher_shift']} px for the teacher, "
              + (f"up to {facts['student_shift']} px for both students" if facts["student_shift"] else
                 "none for the students (as in Hinton et al.: the student alone is unregularised; the distilled "
                 "student's only regulariser is the soft targets, on the same unshifted training images)"))
    lines = [
        "## Hinton KD on mnist5k (classifiers)", "", header(command, wall),
        f"Teacher: {shape(facts['teacher_args'])} MLP, dropout {facts['teacher_args'].get('dropout', 0)} ({tp:,} params). "
        f"Student: {shape(facts['student_args'])} MLP, no dropout ({sp:,} params, {ratio:.1f}x fewer). {steps} steps each, "
        f"batch 128, Adam 1e-3; {shifts}. Distilled: hinton T = {facts['temperature']:g}, alpha = {facts['alpha']:g} "
        f"(configs/classifier/mnist5k-hinton.yaml). Test errors of the {TEST_IMAGES} mnist5k test images; every seed "
        "trains its own teacher, student alone and distilled student.", "",
        "| seed | teacher | student alone | student distilled | gap (alone − teacher) | gap closed |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['seed']} | {r['teacher']} | {r['alone']} | {r['distilled']} | {r['alone'] - r['teacher']} | {c:.0%} |"
          for r, c in zip(rows, closed)),
        f"| mean ± std | {mean_std(t)} | {mean_std(a)} | {mean_std(d)} | {mean_std([x - y for x, y in zip(a, t)])} | "
        f"{mean_std([100 * c for c in closed])} % |", "",
        "| model | params | test errors (mean ± std) | accuracy |", "|---|---:|---:|---:|",
        f"| teacher | {tp:,} | {mean_std(t)} | {1 - statistics.mean(t) / TEST_IMAGES:.4f} |",
        f"| student alone | {sp:,} | {mean_std(a)} | {1 - statistics.mean(a) / TEST_IMAGES:.4f} |",
        f"| student distilled | {sp:,} | {mean_std(d)} | {1 - statistics.mean(d) / TEST_IMAGES:.4f} |", "",
        f"- gap closed by distillation: **{of_means:.1%} of the means**; per seed {', '.join(f'{c:.0%}' for c in closed)} "
        f"(mean ± std {mean_std([100 * c for c in closed])} %, lowest {min(closed):.0%})",
        f"- target ≥ {TARGET:.0%} of the gap at ≥ 3x fewer parameters: **{met}** (measured {of_means:.1%} of the means at {ratio:.1f}x fewer)",
        f"- teacher-student agreement (arg-max): {mean_std([100 * r['agreement'] for r in rows])} %",
        "- Hinton et al. (2015), full MNIST, 1200-1200 vs 800-800: 67 / 146 / 74 errors (91% of the gap closed at T = 20)", "",
        f"Sweep (seeds {', '.join(str(r['seed']) for r in rows[:n_swept])}: their teachers, the same students; distilled-student errors "
        f"mean ± std; gap closed of the means, against those seeds' teacher {ts:.1f} and student alone {as_:.1f}). "
        "The settings were compared on the test images (mnist5k has no validation split), so read the best row as "
        "optimistic; the recipe's row is the main run above.", "",
        "| T | alpha | distilled errors | gap closed |", "|---:|---:|---:|---:|",
        *(f"| {k[0]:g} | {k[1]:g}{' (recipe)' if k == (facts['temperature'], facts['alpha']) else ''} | {mean_std(v)} | "
          f"{gap_closed(ts, as_, statistics.mean(v)):.0%} |" for k, v in swept.items()), "",
        "![T and alpha sweep](hinton/t_sweep.png)",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed, few steps, two temperatures")
    p.add_argument("--write", action="store_true", help="with --quick: still rewrite RESULTS.md")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 1 with --quick)")
    p.add_argument("--sweep-seeds", type=int, default=3, help="how many of the seeds the T / alpha sweep uses")
    args = p.parse_args()
    facts = recipe_facts()
    steps = args.steps or (100 if args.quick else 3000)
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    temps = [1.0, 20.0] if args.quick else [1.0, 2.0, 4.0, 8.0, 20.0]
    alphas = [0.5] if args.quick else [0.0, 0.1, 0.5]
    settings = [(t, facts["alpha"]) for t in temps] + [(facts["temperature"], x) for x in alphas if x != facts["alpha"]]
    common = [f"train.steps={steps}", "train.checkpoint_every=100000"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdgen-hinton-") as tmp:
        root = Path(tmp)
        rows = []
        for s in seeds:
            rows.append(one_seed(root, s, common, facts))
            r = rows[-1]
            print(f"seed {s}: teacher {r['teacher']}, alone {r['alone']}, distilled {r['distilled']}, "
                  f"gap closed {gap_closed(r['teacher'], r['alone'], r['distilled']):.0%} ({r['seconds']:.0f} s)", flush=True)
        swept = sweep(root, rows[:args.sweep_seeds], settings, facts, common)
    sweep_plot(swept, rows[:args.sweep_seeds], facts, HERE / "hinton" / ("t_sweep_quick.png" if args.quick else "t_sweep.png"))
    command = ("python benchmarks/hinton.py" + (" --quick" if args.quick else "") + (f" --steps {args.steps}" if args.steps else "")
               + (f" --seeds {args.seeds}" if args.seeds else "") + (f" --sweep-seeds {args.sweep_seeds}" if args.sweep_seeds != 3 else ""))
    body = table(rows, swept, facts, steps, time.perf_counter() - t0, command)
    tried = HERE / "hinton" / "steps.md"  # what benchmarks/hinton/probe_steps.py --write found; kept across reruns
    if tried.exists() and not args.quick:
        body += "\n\n" + tried.read_text().rstrip()
    print(body)
    raw = {"steps": steps, "seeds": seeds, "recipe": facts, "rows": rows,
           "sweep": [{"temperature": k[0], "alpha": k[1], "errors": v} for k, v in swept.items()]}
    (HERE / "hinton" / ("results_quick.json" if args.quick else "results.json")).write_text(json.dumps(raw, indent=2) + "\n")
    if not args.quick or args.write:
        write_section("hinton", body)


if __name__ == "__main__":
    main()
