"""How noisy is kdgen's evaluation, and what does it cost? (issue 3)

    python benchmarks/eval_noise.py [--run runs/bench-gan/demo] [--quick]

Re-evaluates a finished distill run (default: the demo row of benchmarks/gan_demo.py) over 5
evaluation seeds at the default sample count, and reports, for teacher and student, every metric as
mean ± std across seeds, the teacher/student FID gap in units of that std, and the wall time of one
full evaluation (both models, all metrics, 5 seeds) relative to one teacher sampling pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

import kdgen  # noqa: E402
from kdgen.faces import face_of  # noqa: E402
from kdgen.sampling import GeneratorSampler  # noqa: E402
from kdgen.teacher import load_teacher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/bench-gan/demo")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 300 samples; does not write RESULTS.md")
    args = ap.parse_args()
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    n = 300 if args.quick else kdgen.load_config(Path(args.run) / "config.yaml").eval.num_samples
    cfg = kdgen.load_config(Path(args.run) / "config.yaml")
    teacher = load_teacher(cfg.teacher.path)
    # 1. one teacher sampling pass (the unit of cost)
    sampler = GeneratorSampler(teacher, z_shape=face_of(teacher).z_shape, batch_size=cfg.eval.batch_size)
    sampler.sample(n, 99)  # warm-up
    t0 = time.perf_counter()
    sampler.sample(n, 0)
    sample_s = time.perf_counter() - t0
    # 2. the full evaluation, 5 seeds
    t0 = time.perf_counter()
    result = kdgen.evaluate(args.run, [f"eval.seeds=[{','.join(map(str, seeds))}]", f"eval.num_samples={n}"])
    eval_s = time.perf_counter() - t0
    body = report(result.metrics, seeds, n, sample_s, eval_s, args)
    print(body)
    if not args.quick:
        write_section("eval_noise", body)


def report(m: dict, seeds: list[int], n: int, sample_s: float, eval_s: float, args) -> str:
    t, s = m["teacher"], m["student"]
    gap = abs(s["fid"] - t["fid"])
    std = max(s["fid_std"], t["fid_std"])
    rows = ["| metric | teacher mean ± std | student mean ± std |", "|---|---:|---:|"]
    for key, scale, fmt in (("fid", 1, "{:.3f}"), ("kid", 1e3, "{:.2f}"), ("precision", 1, "{:.3f}"), ("recall", 1, "{:.3f}"),
                            ("density", 1, "{:.3f}"), ("coverage", 1, "{:.3f}")):
        label = "KID×1e3" if key == "kid" else key
        cell = lambda d: f"{fmt.format(d[key] * scale)} ± {fmt.format(d[key + '_std'] * scale)}"  # noqa: E731
        rows.append(f"| {label} | {cell(t)} | {cell(s)} |")
    p = m["protocol"]
    return "\n".join([
        "## Evaluation noise and cost (issue 3)", "",
        header(f"python benchmarks/eval_noise.py --run {args.run}", eval_s + sample_s),
        f"Run: `{args.run}` (the demo recipe). {n} generated images per seed, seeds {seeds}, vs the {p['reference_count']} "
        f"images of the {p['reference']}, feature net sha256 {p['feature_net']['sha256'][:12]}; precision/recall/density/coverage "
        f"with k = {p['prdc_k']}.", "", *rows, "",
        f"- FID across {len(seeds)} seeds: teacher std {t['fid_std']:.3f}, student std {s['fid_std']:.3f}; the teacher/student FID gap "
        f"is {gap:.3f} = {gap / std if std else float('inf'):.1f}× the larger std (aim: ≥ 3×) — "
        f"{'met' if std and gap / std >= 3 else 'missed'}.",
        f"- One full evaluation (teacher + student, all metrics, {len(seeds)} seeds, cost and latency included) took {eval_s:.1f} s = "
        f"{eval_s / sample_s:.0f}× one teacher sampling pass of {n} images ({sample_s:.2f} s) on this machine.",
    ])


if __name__ == "__main__":
    main()
