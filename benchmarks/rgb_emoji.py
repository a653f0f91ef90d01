"""RGB data that ships: the emoji GAN and DDPM teachers (32x32 RGB) and their students, in the emoji feature space.

    python benchmarks/rgb_emoji.py --part gan        # the GAN rows; rewrites the rgb_emoji_gan section of RESULTS.md
    python benchmarks/rgb_emoji.py --part diffusion  # the DDPM rows; rewrites rgb_emoji_diffusion
    python benchmarks/rgb_emoji.py --quick           # smoke run of both: tiny steps; RESULTS.md untouched

Data: `emoji` (`kdgen data install emoji`: npm emoji-datasource-google 16.0.0, Google Noto Color Emoji images,
Apache-2.0), 3,421 training and 360 held-out images at 32x32 RGB, nine categories; the split is by emoji, so no
emoji is in both as two skin tones. Teachers: the shipped builtin:gan-emoji and builtin:ddpm-emoji (made by
configs/gan/emoji-teacher.yaml and configs/diffusion/emoji-ddpm.yaml; their training time is in the assets'
training.json). Every row is a `kdgen.distill` run of the recipe shown (teacher and student measured by the same
code on the same seeds), FID/KID in the emoji feature space (builtin:featnet-emoji, a classifier of the nine
categories, 128-d pre-ReLU embedding) against the 360 held-out images.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402

SCRATCH = ["student.init=random", "methods={adversarial: {weight: 1.0, init: random}}", "train.lr=0.0002", "train.grad_clip=0"]
PARTS = {
    "gan": [  # (name, what, recipe, overrides)
        ("demo", "output + feature + adversarial, width 0.25, prune init", "configs/gan/emoji-demo.yaml", []),
        ("scratch", "the same student and steps, no teacher (a GAN from scratch)", "configs/gan/emoji-demo.yaml", SCRATCH),
        ("w0.125", "the demo at width 0.125", "configs/gan/emoji-demo.yaml", ["student.width=0.125"]),
    ],
    "diffusion": [
        ("progressive", "progressive 64 -> 8 DDIM steps, 500 steps a round", "configs/diffusion/emoji-progressive.yaml", []),
        ("structural", "structural, width 0.5, 64 steps, 1,500 steps", "configs/diffusion/emoji-structural.yaml", []),
    ],
}


def run_part(part: str, out: Path, quick: bool) -> dict:
    common = ["eval.latency_repeats=10"]
    if quick:
        common = ["train.steps=4", "eval.num_samples=100", "eval.latency_repeats=2", "eval.k=3"]
    rows = {}
    for name, what, recipe, overrides in PARTS[part]:
        folder = out / name
        if (folder / "metrics.json").is_file() and json.loads((folder / "metrics.json").read_text()).get("student"):
            rows[name] = (what, recipe, overrides, json.loads((folder / "metrics.json").read_text()))
            continue
        r = replacing(kdgen.distill, recipe, [f"out={folder}", *common, *overrides])
        rows[name] = (what, recipe, overrides, r.metrics)
        print(f"[{name}] student FID {r.metrics['student']['fid']:.2f}, teacher {r.metrics['teacher']['fid']:.2f}", flush=True)
    if part == "diffusion":  # the teacher at the progressive student's step count: what the student saves against
        r = kdgen.evaluate("builtin:ddpm-emoji", [f"eval.num_samples={100 if quick else 2000}", "eval.seeds=[0]", "eval.latency_repeats=5"],
                           data="emoji", steps=8, out=out / "teacher-8")
        rows["teacher@8"] = r.metrics
    return rows


def _fid(m: dict) -> str:
    std = m.get("fid_std")
    return f"{m['fid']:.2f}" + (f" ± {std:.2f}" if std and len(m.get("fid_per_seed") or []) > 1 else "")


def _asset_seconds(name: str) -> str:
    from kdgen.io import resolve_path

    path = resolve_path(f"builtin:{name}") / "training.json"
    return f"{json.loads(path.read_text())['train']['seconds']:.0f}" if path.is_file() else "?"


def report(part: str, rows: dict, args, wall: float) -> str:
    cmd = "python benchmarks/" + Path(__file__).name + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    first = next(iter(v for k, v in rows.items() if k != "teacher@8"))[3]
    p = first["protocol"]
    title = {"gan": "GAN", "diffusion": "DDPM"}[part]
    lines = [f"## RGB data that ships: the emoji {title} teacher and its students (issue 13)", "", header(cmd, wall),
             f"- data: emoji, {p['image_size']}x{p['image_size']} RGB; reference {p['reference']} ({p['reference_count']} images); "
             f"{p['generated_count']} generated per seed, seeds {p['seeds']}; feature net `{p['feature_net']['path']}` "
             f"(sha256 {p['feature_net']['sha256'][:12]}, trained on {p['feature_net'].get('trained_on')})",
             f"- the feature net's cost: {_asset_seconds('featnet-emoji')} s to train (`configs/features/emoji.yaml`, 3,000 steps); "
             f"the teacher's: {_asset_seconds('gan-emoji' if part == 'gan' else 'ddpm-emoji')} s (its recipe, see the data line above)",
             f"- real training images vs the reference (the floor): FID {p['real_train_vs_reference']['fid']:.2f}"
             if p.get("real_train_vs_reference") else "- floor: not measured", "",
             "| row | what | FID ± std | KID x1000 | params | MACs / image | FID / teacher | MACs / teacher | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    t = first["teacher"]
    steps = f" ({t['sampling_steps']} steps)" if "sampling_steps" in t else ""
    lines.append(f"| teacher{steps} | shipped builtin:{'gan' if part == 'gan' else 'ddpm'}-emoji | {_fid(t)} | {t['kid'] * 1000:.2f} | "
                 f"{t['params']:,} | {t['macs']:,} | 1.000 | 1.000 | - |")
    if "teacher@8" in rows:
        t8 = rows["teacher@8"]["model"]
        lines.append(f"| teacher (8 steps) | the teacher sampled at the progressive student's steps | {_fid(t8)} | {t8['kid'] * 1000:.2f} | "
                     f"{t8['params']:,} | {t8['macs']:,} | {t8['fid'] / t['fid']:.3f} | {t8['macs'] / t['macs']:.3f} | - |")
    for name, v in rows.items():
        if name == "teacher@8":
            continue
        what, recipe, overrides, m = v
        s = m["student"]
        steps = f", {s['sampling_steps']} steps" if "sampling_steps" in s else ""
        lines.append(f"| {name}{steps} | {what} | {_fid(s)} | {s['kid'] * 1000:.2f} | {s['params']:,} | {s['macs']:,} | "
                     f"{s['fid'] / m['teacher']['fid']:.3f} | {s['macs'] / m['teacher']['macs']:.3f} | {m['train']['seconds']:.0f} |")
    lines += ["", "Recipes: " + "; ".join(f"{name}: `{recipe}`" + (f" with `{' '.join(ov)}`" if ov else "")
                                          for name, (_, recipe, ov, _) in ((k, v) for k, v in rows.items() if k != "teacher@8")) + ".",
              "Train seconds are each run's own record, with other jobs sharing the 2 cores: upper bounds."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["gan", "diffusion", "all"], default="all")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/bench-emoji")
    args = ap.parse_args()
    for part in (["gan", "diffusion"] if args.part == "all" else [args.part]):
        t0 = time.perf_counter()
        rows = run_part(part, Path(args.out) / part, args.quick)
        body = report(part, rows, args, time.perf_counter() - t0)
        if not args.quick:
            write_section(f"rgb_emoji_{part}", body)
        print(body)


if __name__ == "__main__":
    main()
