"""Diffusion distillation on mnist5k: the teacher at 8/16/64/256 DDIM steps against progressive,
consistency and one-step students at 1/2/4/8 steps, and a structural (narrower, attention-free) student.

    python benchmarks/diffusion_steps.py                  # train the students, measure every row, write RESULTS.md
    python benchmarks/diffusion_steps.py --stage train    # only the distillation runs
    python benchmarks/diffusion_steps.py --stage measure  # only the measurements (re-uses finished rows)
    python benchmarks/diffusion_steps.py --quick          # smoke run: 10 steps per round, 200 samples; RESULTS.md untouched

Teacher: builtin:ddpm-mnist5k (configs/diffusion/mnist5k-ddpm.yaml). Students: the four
configs/diffusion/mnist5k-*.yaml recipes, trained with eval off; every row is then measured by the
same `kdgen.evaluate` code: FID/KID in kdgen's mnist5k feature space, N samples from the same seeded
noise vs the 500 held-out test images. MACs count every network call of sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

import kdgen  # noqa: E402

HERE = Path(__file__).resolve().parent
TEACHER = "builtin:ddpm-mnist5k"
RUNS = ["structural", "progressive", "consistency", "onestep"]  # recipe configs/diffusion/mnist5k-NAME.yaml
REFERENCE_STEPS = 256


def rows(out: Path) -> list[tuple[str, str, str, int]]:
    """(row name, what, model folder, sampling steps)."""
    # the teacher at the students' step counts too: the baseline distillation has to beat
    r = [(f"teacher@{s}", f"teacher, DDIM {s} steps", TEACHER, s) for s in (256, 64, 16, 8, 4, 2, 1)]
    r += [(f"progressive@{s}", f"progressive distillation, {s} step(s)", str(out / "progressive" / "rounds" / f"steps-{s}" / "student"), s)
          for s in (8, 4, 2, 1)]
    r += [(f"consistency@{s}", f"consistency distillation, {s} step(s)", str(out / "consistency" / "student"), s) for s in (8, 4, 2, 1)]
    r += [("onestep@1", "one-step regression of 64-step teacher trajectories", str(out / "onestep" / "student"), 1)]
    r += [(f"structural@{s}", f"structural: width 0.5, DDIM {s} steps", str(out / "structural" / "student"), s) for s in (64, 16)]
    return r


def train(out: Path, quick: bool, only: list[str] | None) -> None:
    for name in RUNS:
        if only and name not in only:
            continue
        run = out / name
        if (run / "student" / "kdgen.json").is_file():
            print(f"[train {name}] done earlier: {run}", flush=True)
            continue
        extra = ["train.steps=10", "methods.onestep.cache_size=256"] if quick and name == "onestep" else (["train.steps=10"] if quick else [])
        t0 = time.perf_counter()
        kdgen.distill(f"configs/diffusion/mnist5k-{name}.yaml", [f"out={run}", "eval.enabled=false", *extra],
                      resume=(run / "config.yaml").is_file())
        wall = time.perf_counter() - t0
        (run / "bench_train.json").write_text(json.dumps({"wall_seconds": round(wall, 1)}) + "\n")
        print(f"[train {name}] {wall / 60:.1f} min", flush=True)


def measure(out: Path, num_samples: int, seeds: list[int], only: list[str] | None) -> dict[str, dict]:
    results = {}
    for name, what, folder, steps in rows(out):
        if only and not any(name.startswith(o) for o in only):
            continue
        target = out / "eval" / name.replace("@", "-")
        saved = target / "metrics.json"
        if saved.is_file():
            m = json.loads(saved.read_text())
            if m["protocol"]["generated_count"] == num_samples and m["protocol"]["seeds"] == seeds:
                results[name] = {"what": what, **m["model"]}
                continue
        if not Path(folder).exists() and not folder.startswith("builtin:"):
            print(f"[measure {name}] skipped: {folder} is missing (run --stage train)", flush=True)
            continue
        t0 = time.perf_counter()
        r = kdgen.evaluate(folder, [f"eval.num_samples={num_samples}", f"eval.seeds={seeds}"], steps=steps, out=target)
        results[name] = {"what": what, **r.metrics["model"]}
        print(f"[measure {name}] FID {r.metrics['model']['fid']:.2f} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return results


def latency_pass(results: dict[str, dict], out: Path) -> None:
    """Re-time every row in this one process, one after another, so the latency column compares like with like
    (the rows' own evaluations may have shared the cores with training)."""
    from kdgen.metrics.cost import latency_ms
    from kdgen.models.loading import load_model
    from kdgen.sampling import make_sampler

    for name, _, folder, steps in rows(out):
        if name in results:
            sampler = make_sampler(load_model(folder), steps=steps)
            results[name]["latency_ms"] = {"b1": latency_ms(sampler, batch=1, repeats=30), "b64": latency_ms(sampler, batch=64, repeats=10)}


def table(results: dict[str, dict], out: Path) -> str:
    ref = results.get(f"teacher@{REFERENCE_STEPS}")
    lines = ["| row | what | steps | network evals | FID | FID / teacher@256 | KID x1e3 | precision | recall | params | MACs / image | MACs / step | latency b1 per image (ms) | train (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        fid = f"{m['fid']:.2f}" + (f" ± {m['fid_std']:.2f}" if m.get("fid_std") else "")
        ratio = f"{m['fid'] / ref['fid']:.2f}x" if ref else "-"
        run = name.split("@")[0]
        bench = out / run / "bench_train.json"
        train_min = f"{json.loads(bench.read_text())['wall_seconds'] / 60:.1f}" if bench.is_file() else "-"
        lines.append(
            f"| {name} | {m['what']} | {m['sampling_steps']} | {m['network_evals']} | {fid} | {ratio} | {m['kid'] * 1e3:.2f} | "
            f"{m['precision']:.3f} | {m['recall']:.3f} | {m['params']:,} | {m['macs'] / 1e6:,.1f} M | "
            f"{m['macs'] / m['network_evals'] / 1e6:,.2f} M | {m['latency_ms']['b1']:.1f} | {train_min} |")
    return "\n".join(lines)


def targets(results: dict[str, dict]) -> str:
    ref = results.get(f"teacher@{REFERENCE_STEPS}")
    if not ref:
        return "(no teacher@256 row: targets not checked)"
    out = []

    def best(prefixes: list[str], steps: int):
        cands = [(results[f"{p}@{steps}"]["fid"], f"{p}@{steps}") for p in prefixes if f"{p}@{steps}" in results]
        return min(cands) if cands else None

    teacher_best = min((m["fid"], n) for n, m in results.items() if n.startswith("teacher@"))
    out.append(f"- (the teacher's best row is {teacher_best[1]} at FID {teacher_best[0]:.2f}; the issue's reference is teacher@256 at {ref['fid']:.2f})")
    four = best(["progressive", "consistency"], 4)
    if four:
        out.append(f"- 4-step student FID <= 1.2x teacher@256 ({ref['fid']:.2f}): best is {four[1]} at {four[0]:.2f} = "
                   f"{four[0] / ref['fid']:.2f}x, with {REFERENCE_STEPS // 4}x fewer network evaluations -> "
                   f"{'met' if four[0] <= 1.2 * ref['fid'] else 'MISSED'}")
    one = best(["progressive", "consistency", "onestep"], 1)
    if one:
        out.append(f"- 1-step student FID <= 2x teacher@256: best is {one[1]} at {one[0]:.2f} = {one[0] / ref['fid']:.2f}x -> "
                   f"{'met' if one[0] <= 2 * ref['fid'] else 'MISSED'}")
    for k in (8, 4, 2, 1):
        plain = results.get(f"teacher@{k}")
        cands = best(["progressive", "consistency", "onestep"], k)
        if plain and cands:
            out.append(f"- at {k} step(s): best student {cands[1]} FID {cands[0]:.2f} vs the teacher's own {k}-step DDIM {plain['fid']:.2f} "
                       f"({'better' if cands[0] < plain['fid'] else 'worse'}) and vs teacher@{teacher_best[1].split('@')[1]} "
                       f"{teacher_best[0]:.2f} ({cands[0] / teacher_best[0]:.2f}x)")
    for k in (64, 16):
        st, tk = results.get(f"structural@{k}"), results.get(f"teacher@{k}")
        if not (st and tk):
            continue
        per_step = (tk["macs"] / tk["network_evals"]) / (st["macs"] / st["network_evals"])
        ok = per_step >= 2 and st["fid"] <= 1.1 * tk["fid"]
        out.append(f"- structural student >= 2x fewer MACs per step at FID <= 1.1x (teacher at the same {k} steps, {tk['fid']:.2f}): "
                   f"{per_step:.1f}x fewer MACs per step, FID {st['fid']:.2f} = {st['fid'] / tk['fid']:.2f}x -> {'met' if ok else 'MISSED'}")
    return "\n".join(out)


def figure(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run, marker in (("teacher", "o-"), ("progressive", "s-"), ("consistency", "^-"), ("onestep", "D"), ("structural", "v")):
        pts = sorted((m["network_evals"], m["fid"]) for n, m in results.items() if n.split("@")[0] == run)
        if pts:
            ax.plot(*zip(*pts), marker, label=run)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # the teacher at 1-2 steps is off the scale of everything else
    ax.set_xlabel("network evaluations per image (log scale)")
    ax.set_ylabel("FID, log scale (kdgen mnist5k feature space)")
    ax.set_title("Diffusion distillation on mnist5k: quality vs sampling cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def samples(results: dict[str, dict], out: Path, path: Path) -> None:
    """One panel per model, the same 16 noises: teacher@256 and the students."""
    from kdgen.models.loading import load_model
    from kdgen.report import save_side_by_side
    from kdgen.sampling import DiffusionSampler

    panels = {}
    for name, _, folder, steps in rows(out):
        if name in results and name in ("teacher@256", "teacher@8", "progressive@4", "consistency@4", "progressive@1", "consistency@1",
                                        "onestep@1", "structural@16"):
            panels[name] = DiffusionSampler(load_model(folder), steps=steps).sample(16, seed=0)
    save_side_by_side(panels, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["train", "measure", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="10 steps per round, 200 samples: checks the script, not the numbers")
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--seeds", default="0", help="comma-separated evaluation seeds")
    ap.add_argument("--only", nargs="*", help="only these runs / rows (prefix match)")
    ap.add_argument("--out", default="runs/bench-diffusion")
    args = ap.parse_args()
    out = Path(args.out + ("-quick" if args.quick else ""))
    n = 200 if args.quick else args.num_samples
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    if args.stage in ("train", "all"):
        train(out, args.quick, args.only)
    if args.stage == "train":
        return
    results = measure(out, n, seeds, args.only)
    latency_pass(results, out)
    body = table(results, out)
    print(body)
    print(targets(results))
    if args.quick or args.only:
        return
    figure(results, HERE / "diffusion_steps" / "fid_vs_evals.png")
    samples(results, out, HERE / "diffusion_steps" / "samples.png")
    (HERE / "diffusion_steps").mkdir(exist_ok=True)
    (HERE / "diffusion_steps" / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    intro = (
        "## Diffusion distillation: fewer steps, smaller UNet (`benchmarks/diffusion_steps.py`)\n\n"
        + header("python benchmarks/diffusion_steps.py " + " ".join(sys.argv[1:]), time.perf_counter() - t0)
        + f"\nFID/KID in kdgen's mnist5k feature space (shipped featnet), {n:,} samples per row from the same seeded noise "
        f"(seeds {seeds}) vs the 500 held-out mnist5k test images. Teacher: builtin:ddpm-mnist5k "
        "(diffusers UNet2DModel, v-prediction, 1,024 timesteps), DDIM with trailing timesteps. Train times are this machine's "
        "wall time for the whole run (every round, the onestep cache included), one torch thread each, with other jobs sharing "
        "the 2 cores: read them as upper bounds. Latency is re-timed for every row in one process at the end (PyTorch eager, "
        "batch 1, all steps). Progressive rows come from one run (64 -> 1 steps, 6 rounds of train.steps each).\n\n"
    )
    write_section("diffusion_steps", intro + body + "\n\nTargets (issue 4):\n" + targets(results)
                  + "\n\n![FID vs network evaluations](diffusion_steps/fid_vs_evals.png)\n\n"
                  "Same noise, each panel one model: ![samples](diffusion_steps/samples.png)\n")


if __name__ == "__main__":
    main()
