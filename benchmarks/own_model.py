"""Your model in (issue 12): models kdgen does not define, through the same pipeline as its own.

    python benchmarks/own_model.py            # full (about 40 minutes on 2 CPU cores)
    python benchmarks/own_model.py --quick    # smoke run; does not touch RESULTS.md unless --write

Three questions, each answered inside one run of this script:
1. open door: the shipped GAN handed in as a plain nn.Module (kdgen.Generator wrapper, student derived by
   torch-pruning) against the built-in path (family args + kdgen's own L1 pruner), same recipe and seed;
2. a generator kdgen does not define: a residual generator with a skip concatenation and group norms,
   trained here as a teacher by a plain PyTorch hinge-GAN loop, then distilled at >= 8x fewer MACs;
3. framework overhead: seconds per training step of kdgen's trainer against a plain PyTorch loop doing
   the same step (teacher forward, student forward/backward, L1, clipping, Adam, EMA) on the same models.
FID/KID are in kdgen's mnist5k feature space (shipped featnet), 2,000 samples per seed, seeds 0-2, vs the
500 held-out mnist5k test images.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "own_model"))
from _common import header, replacing, write_section  # noqa: E402
from residual_generator import ResidualGenerator  # noqa: E402

import kdgen  # noqa: E402
from kdgen.data import load_dataset  # noqa: E402
from kdgen.losses import hinge_d_loss, hinge_g_loss  # noqa: E402
from kdgen.models.gan import DCGANDiscriminator, DCGANGenerator  # noqa: E402

RECIPE = "configs/gan/mnist5k-demo.yaml"
EVAL = ["eval.seeds=[0,1,2]", "eval.latency_repeats=30"]


def plain_module(builtin: str) -> nn.Module:
    """The shipped generator as a user would hold it: the class built by hand, the weights loaded, no kdgen metadata."""
    shipped = kdgen.load_model(builtin)
    net = DCGANGenerator(**shipped.kdgen_meta["args"])
    net.load_state_dict(shipped.state_dict())
    return net


def open_door(args) -> dict:
    common = [*EVAL, *args.extra]
    t0 = time.perf_counter()
    builtin = replacing(kdgen.distill, RECIPE, [f"out={args.out}/builtin", *common])
    t1 = time.perf_counter()
    door = replacing(kdgen.distill, RECIPE, [f"out={args.out}/open-door", *common,
                                  "methods.adversarial.discriminator=builtin:gan-mnist5k/discriminator"],
                         teacher=kdgen.Generator(plain_module("builtin:gan-mnist5k"), z_shape=(100,)))
    t2 = time.perf_counter()
    return {"builtin": (builtin.metrics, t1 - t0), "open-door": (door.metrics, t2 - t1)}


def train_residual_teacher(steps: int, out: Path, seed: int = 0) -> Path:
    """The user's own teacher, trained by their own loop (hinge GAN, Adam 2e-4, betas (0.5, 0.999)); saved as a state dict."""
    torch.manual_seed(seed)
    g, d = ResidualGenerator(z_dim=64, width=16), DCGANDiscriminator(image_size=28, channels=1, base_width=64)
    data = load_dataset("mnist5k").images
    og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    t0 = time.perf_counter()
    for step in range(steps):
        real = data[torch.randint(len(data), (64,))]
        fake = g(torch.randn(64, 64))
        od.zero_grad()
        hinge_d_loss(d(real), d(fake.detach())).backward()
        od.step()
        og.zero_grad()
        hinge_g_loss(d(fake)).backward()
        og.step()
        if step % 500 == 0:
            print(f"  teacher step {step}/{steps} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(g.state_dict(), out / "teacher.pt")
    return out / "teacher.pt"


def residual(args) -> dict:
    """Teacher trained here, then kdgen distils it from a recipe: derived (pruned) student at --residual-width."""
    t0 = time.perf_counter()
    weights = train_residual_teacher(args.teacher_steps, Path(args.out) / "residual-teacher")
    teach_s = time.perf_counter() - t0
    teacher_keys = ["teacher.path=null", "teacher.class=residual_generator:ResidualGenerator", "teacher.args={z_dim: 64, width: 16}",
                    f"teacher.weights={weights}", "teacher.face=generator", "teacher.z_shape=[64]"]
    rows = {}
    for name, extra in (("distilled", []), ("scratch", ["student.init=random", "methods={adversarial: {weight: 1.0, init: random}}",
                                                         "train.lr=0.0002", "train.grad_clip=0"])):
        t1 = time.perf_counter()
        r = replacing(kdgen.distill, RECIPE, [f"out={args.out}/residual-{name}", *teacher_keys, f"student.width={args.residual_width}",
                                   *EVAL, *args.extra, *extra])
        rows[name] = (r.metrics, time.perf_counter() - t1)
    rows["teacher_train_s"] = teach_s
    return rows


def overhead(args) -> dict:
    """kdgen's trainer vs a plain loop doing the same step on the same models; alternated, several repeats."""
    torch.manual_seed(0)
    teacher = ResidualGenerator(z_dim=64, width=16).eval().requires_grad_(False)
    student = ResidualGenerator(z_dim=64, width=8)
    data = load_dataset("mnist5k").images
    steps = args.overhead_steps
    kd, plain = [], []
    for rep in range(args.repeats):
        # kdgen: the output term through the trainer (EMA, clipping, logs, checkpoints as configured), no evaluation
        r = replacing(kdgen.distill, RECIPE, [f"out={args.out}/overhead", f"train.steps={steps}", "methods={output: {weight: 1.0}}",
                                   "eval.enabled=false", f"train.checkpoint_every={steps}", f"train.seed={rep}"],
                          teacher=kdgen.Generator(teacher, z_shape=(64,), args={"z_dim": 64, "width": 16}),
                          student=kdgen.Generator(copy.deepcopy(student), z_shape=(64,), args={"z_dim": 64, "width": 8}))
        kd.append(r.metrics["train"]["seconds"] / steps)
        plain.append(plain_loop(teacher, copy.deepcopy(student), data, steps, seed=rep))
        print(f"  overhead repeat {rep}: kdgen {kd[-1] * 1e3:.1f} ms/step, plain {plain[-1] * 1e3:.1f} ms/step", flush=True)
    return {"kdgen": kd, "plain": plain, "steps": steps}


def plain_loop(teacher: nn.Module, student: nn.Module, data: torch.Tensor, steps: int, *, seed: int) -> float:
    """The same step by hand: teacher forward (no grad), student forward, L1, backward, clip 1.0, Adam, EMA 0.999."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3, betas=(0.5, 0.999))
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=64, shuffle=True, drop_last=True)
    batches = iter(loader)
    student.train()
    t0 = time.perf_counter()
    for step in range(steps):
        try:
            (real,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (real,) = next(batches)
        z = torch.randn(real.shape[0], 64)
        with torch.no_grad():
            target = teacher(z)
        loss = (student(z) - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        d = min(0.999, (2 + step) / (11 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), student.parameters()):
                e.lerp_(p, 1 - d)
        _ = loss.item()  # kdgen reads every logged loss back as a float
    return (time.perf_counter() - t0) / steps


def unet(args) -> dict:
    """The shipped DDPM's UNet at width 0.5: its config path (student.structure=auto) against torch-pruning (pruned),
    both by the structural recipe, trained at once in two one-thread processes, then measured by kdgen.evaluate."""
    import json
    import os
    import subprocess

    out = Path(args.out)
    procs = {}
    for name in ("auto", "pruned"):
        run = out / f"unet-{name}"
        if (run / "student" / "kdgen.json").is_file():
            continue
        extra = ["student.structure=pruned", "student.attention=true"] if name == "pruned" else []
        cmd = [sys.executable, "-c", "import sys, kdgen; kdgen.distill(sys.argv[1], sys.argv[2:], overwrite=True)", "configs/diffusion/mnist5k-structural.yaml",
               f"out={run}", "eval.enabled=false", *extra, *args.extra]
        run.mkdir(parents=True, exist_ok=True)
        procs[name] = (subprocess.Popen(cmd, stdout=open(run.parent / f"unet-{name}.log", "w"), stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"}), time.perf_counter())
    for name, (p, t0) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"unet-{name} failed; see {out / f'unet-{name}.log'}")
    rows = {}
    samples = 200 if args.quick else 2000
    for name in ("auto", "pruned"):
        for steps in (64, 16):
            r = kdgen.evaluate(out / f"unet-{name}" / "student", [f"eval.num_samples={samples}", "eval.seeds=[0]", "eval.latency_repeats=5"],
                               steps=steps, out=out / "unet-eval" / f"{name}-{steps}")
            rows[(name, steps)] = r.metrics["model"]
        rows[(name, "train")] = json.loads((out / f"unet-{name}" / "metrics.json").read_text())["train"]
    t = {}
    for steps in (64, 16):
        r = kdgen.evaluate("builtin:ddpm-mnist5k", [f"eval.num_samples={samples}", "eval.seeds=[0]", "eval.latency_repeats=5"], steps=steps,
                           out=out / "unet-eval" / f"teacher-{steps}")
        t[steps] = r.metrics["model"]
    rows["teacher"] = t
    return rows


def fid(m: dict) -> str:
    return f"{m['fid']:.2f} ± {m['fid_std']:.2f}"


def report(door: dict | None, res: dict | None, ovh: dict | None, args, wall: dict[str, float], unet_rows: dict | None = None) -> dict[str, str]:
    """One RESULTS.md section per question, each with its own header (the parts may run in separate processes)."""
    quick = " --quick" if args.quick else ""
    parts = {}
    if door:
        lines = ["## Your model in (issue 12), 1: the demo through the open door", "",
                 header(f"python benchmarks/own_model.py --only door{quick}", wall["door"])]
        b, o = door["builtin"][0], door["open-door"][0]
        p = b["protocol"]
        lines += [
            f"Protocol: FID/KID in kdgen's feature space ({p['feature_net']['path']}), {p['generated_count']} samples per seed, "
            f"seeds {p['seeds']}, vs the {p['reference_count']} images of the {p['reference']}; mean ± std over seeds.", "",
            "The shipped teacher handed in as a plain `DCGANGenerator` module (`kdgen.Generator(net, z_shape=(100,))`): no kdgen "
            "metadata, so the student is derived by torch-pruning (DepGraph, L1 channel importance) at width 0.25 instead of the "
            "family's own args + L1 pruner. Same recipe, same train seed; the teacher's discriminator is named with "
            "`methods.adversarial.discriminator`.", "",
            "| path | student FID | FID / teacher | MACs/img | params | PSNR to teacher dB | train min |", "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, (m, _) in door.items():
            s = m["student"]
            lines.append(f"| {name} | {fid(s)} | {s['fid'] / m['teacher']['fid']:.3f} | {s['macs'] / 1e6:.2f}M | {s['params'] / 1e6:.3f}M | "
                         f"{s['fidelity']['psnr_db']:.1f} | {m['train']['seconds'] / 60:.1f} |")
        t = b["teacher"]
        lines.append(f"| teacher | {fid(t)} | 1.000 | {t['macs'] / 1e6:.2f}M | {t['params'] / 1e6:.3f}M | - | - |")
        gap = abs(o["student"]["fid"] - b["student"]["fid"])
        std = max(o["student"]["fid_std"], b["student"]["fid_std"])
        same_macs = o["student"]["macs"] == b["student"]["macs"]
        lines += ["", f"- target: open-door FID within 2 seed-stds of the built-in path at the same MACs: |Δ| = {gap:.2f}, "
                      f"2 × std = {2 * std:.2f}, MACs {'equal' if same_macs else 'differ'} — "
                      f"{'met' if gap <= 2 * std and same_macs else 'missed'}."]
        parts["door"] = "\n".join(lines)
    if res:
        d, sc = res["distilled"][0], res["scratch"][0]
        t, s = d["teacher"], d["student"]
        r, mac = s["fid"] / t["fid"], t["macs"] / s["macs"]
        p = d["protocol"]
        lines = [
            "## Your model in (issue 12), 2: a generator kdgen does not define", "",
            header(f"python benchmarks/own_model.py --only residual{quick}", wall["residual"]),
            f"Protocol: FID/KID in kdgen's feature space ({p['feature_net']['path']}), {p['generated_count']} samples per seed, "
            f"seeds {p['seeds']}, vs the {p['reference_count']} images of the {p['reference']}; mean ± std over seeds.", "",
            f"`benchmarks/own_model/residual_generator.py`: residual blocks, a 7→28 skip concatenation, group norms (z 64, width 16). "
            f"Trained here by a plain PyTorch hinge-GAN loop ({args.teacher_steps} steps of batch 64, {res['teacher_train_s'] / 60:.1f} min), "
            f"saved as a state dict, then named in a recipe (`teacher.class`, `teacher.weights`, `teacher.face: generator`). "
            f"Student: derived by torch-pruning at width {args.residual_width}; demo losses (output + feature by resolution + "
            "adversarial, random discriminator) for the demo's steps.", "",
            "| model | FID | FID / teacher | MACs/img | params | PSNR to teacher dB |", "|---|---:|---:|---:|---:|---:|",
            f"| teacher | {fid(t)} | 1.000 | {t['macs'] / 1e6:.2f}M | {t['params'] / 1e6:.3f}M | - |",
            f"| distilled student | {fid(s)} | {r:.3f} | {s['macs'] / 1e6:.2f}M | {s['params'] / 1e6:.3f}M | {s['fidelity']['psnr_db']:.1f} |",
            f"| same student, no teacher | {fid(sc['student'])} | {sc['student']['fid'] / t['fid']:.3f} | {sc['student']['macs'] / 1e6:.2f}M | "
            f"{sc['student']['params'] / 1e6:.3f}M | {sc['student']['fidelity']['psnr_db']:.1f} |",
            "", f"- target: ≥ 8× fewer MACs at FID ≤ 1.1× the teacher's: {mac:.1f}× fewer MACs, FID {r:.3f}× — "
                f"{'met' if mac >= 8 and r <= 1.1 else 'missed'}.",
        ]
        parts["residual"] = "\n".join(lines)
    if ovh:
        k, p = statistics.median(ovh["kdgen"]), statistics.median(ovh["plain"])
        lines = [
            "## Your model in (issue 12), 3: framework overhead", "",
            header(f"python benchmarks/own_model.py --only overhead{quick}", wall["overhead"]),
            f"Output (L1) distillation of a width-8 residual student from the width-16 teacher, {ovh['steps']} steps of batch 64, "
            f"{len(ovh['kdgen'])} repeats alternating kdgen and the plain loop in one process. kdgen's time is the trainer's own "
            "(`train.seconds`: the loop with data loading, EMA, clipping, progress bar, TensorBoard logs and its checkpoint); "
            "setup and the final save are not in it.", "",
            "| | ms/step, median | all repeats |", "|---|---:|---|",
            f"| kdgen | {k * 1e3:.1f} | {', '.join(f'{x * 1e3:.1f}' for x in ovh['kdgen'])} |",
            f"| plain PyTorch loop | {p * 1e3:.1f} | {', '.join(f'{x * 1e3:.1f}' for x in ovh['plain'])} |",
            "", f"- target: ≤ 1.10× the plain loop: {k / p:.3f}× — {'met' if k / p <= 1.10 else 'missed'}.",
        ]
        parts["overhead"] = "\n".join(lines)
    if unet_rows:
        t = unet_rows["teacher"]
        lines = [
            "## Your model in (issue 12), 4: a diffusers UNet pruned by torch-pruning", "",
            header(f"python benchmarks/own_model.py --only unet{quick}", wall["unet"]),
            "The shipped `builtin:ddpm-mnist5k` UNet at width 0.5 by `configs/diffusion/mnist5k-structural.yaml` (output + block "
            "features, the teacher's sampler): `student.structure=auto` builds a narrower UNet from the teacher's config "
            "(leading-channel init), `student.structure=pruned` prunes the teacher's own UNet with torch-pruning (L1 group "
            f"importance). FID in kdgen's mnist5k feature space, {200 if args.quick else 2000} samples from seed 0's noise vs the 500 held-out test images.", "",
            "| student | DDIM steps | FID | FID / teacher at those steps | params | MACs / image |", "|---|---:|---:|---:|---:|---:|",
        ]
        for steps in (64, 16):
            lines.append(f"| teacher | {steps} | {t[steps]['fid']:.2f} | 1.00 | {t[steps]['params']:,} | {t[steps]['macs'] / 1e6:,.1f} M |")
            for name in ("auto", "pruned"):
                m = unet_rows[(name, steps)]
                lines.append(f"| structure={name} | {steps} | {m['fid']:.2f} | {m['fid'] / t[steps]['fid']:.2f} | {m['params']:,} | "
                             f"{m['macs'] / 1e6:,.1f} M |")
        a, p = unet_rows[("auto", 16)], unet_rows[("pruned", 16)]
        lines += ["", f"- at 16 steps the pruned student scores {p['fid']:.2f} against the config path's {a['fid']:.2f} "
                      f"({p['fid'] / a['fid']:.2f}×) at {p['macs'] / a['macs']:.2f}× its MACs."]
        parts["unet"] = "\n".join(lines)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny steps and samples: checks the script, not the numbers")
    ap.add_argument("--write", action="store_true", help="with --quick: still write RESULTS.md")
    ap.add_argument("--only", nargs="*", choices=["door", "residual", "overhead", "unet"])
    ap.add_argument("--out", default="runs/bench-own")
    ap.add_argument("--teacher-steps", type=int, default=3000)
    ap.add_argument("--residual-width", type=float, default=0.25)
    ap.add_argument("--overhead-steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.extra = []
    if args.quick:
        global EVAL
        EVAL = ["eval.num_samples=200", "eval.seeds=[0,1]", "eval.latency_repeats=3"]
        args.extra = ["train.steps=20"]
        args.teacher_steps, args.overhead_steps, args.repeats = 20, 10, 2
    torch.set_num_threads(1)
    only = set(args.only or ["door", "residual", "overhead", "unet"])
    wall, done = {}, {}
    for part, fn in (("door", open_door), ("residual", residual), ("overhead", overhead), ("unet", unet)):
        if part in only:
            t0 = time.perf_counter()
            done[part] = fn(args)
            wall[part] = time.perf_counter() - t0
    parts = report(done.get("door"), done.get("residual"), done.get("overhead"), args, wall, done.get("unet"))
    for part, body in parts.items():
        if not args.quick or args.write:
            write_section(f"own_model_{part}", body)
        print(body, flush=True)


if __name__ == "__main__":
    main()
