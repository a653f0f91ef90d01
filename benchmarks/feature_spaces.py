"""Does a self-supervised feature space rank generators like a labelled one? And does FID in it grow with damage?

    python benchmarks/feature_spaces.py            # everything; rewrites the feature_spaces section of RESULTS.md
    python benchmarks/feature_spaces.py --quick    # smoke run: tiny trainings; RESULTS.md untouched

1. Feature nets, each trained here by `kdgen train-features` (the time each took is reported):
   - mnist5k, SimCLR (configs/features/mnist5k-simclr.yaml; labels unused) against the shipped labelled featnet-mnist5k;
   - a folder of photo patches, SimCLR (configs/features/folder.yaml): 32x32 patches, stride 16, of the two photos that
     ship with scikit-learn (china.jpg, flower.jpg; CC-BY 2.0, see sklearn/datasets/images/README.txt), written here
     as PNGs; its seeded 10% held-out split is the reference.
2. The ladder on mnist5k: the shipped GAN teacher; two students distilled from it here (demo recipe, widths 0.25 and
   0.0625, a few hundred steps); the teacher's samples with Gaussian noise and with Gaussian blur at several
   strengths; the shipped DDPM at 4, 8 and 16 DDIM steps. The same 2,000 images of each are scored in both spaces
   against the 500 held-out test images; the agreement is Spearman's rank correlation of the two FID columns
   (target >= 0.9).
3. Monotonicity on the photo folder, in its SimCLR space: the training patches with noise (sigma in [-1, 1] units),
   blur (sigma in px) and shift (translation by N px, the uncovered border black) at increasing strength, each
   against the held-out patches. FID must grow at every step of every ladder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, replacing, write_section  # noqa: E402

import kdgen  # noqa: E402
from kdgen.data import load_dataset, stack_images  # noqa: E402
from kdgen.metrics import QualityMetric, load_feature_extractor  # noqa: E402
from kdgen.models.loading import load_model  # noqa: E402
from kdgen.sampling import make_sampler  # noqa: E402

NOISE = (0.05, 0.1, 0.2, 0.4)
BLUR = (0.5, 1.0, 1.5, 2.5)
SHIFT = (1, 2, 4, 8)


def photo_folder(out: Path) -> Path:
    """32x32 patches (stride 16) of scikit-learn's two sample photos, as PNG files in a flat folder."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = out / "photos"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    folder.mkdir(parents=True)
    for k, img in enumerate(load_sample_images().images):
        h, w, _ = img.shape
        for y in range(0, h - 32 + 1, 16):
            for x in range(0, w - 32 + 1, 16):
                Image.fromarray(img[y:y + 32, x:x + 32]).save(folder / f"p{k}_{y:03d}_{x:03d}.png")
    return folder


def train_featnet(recipe: str, run: Path, extra: list[str], quick: bool) -> tuple[Path, dict]:
    if not (run / "featnet" / "model.json").is_file():
        replacing(kdgen.train_features, recipe, [f"out={run}", *extra, *(["train.steps=20"] if quick else [])])
    return run / "featnet", json.loads((run / "metrics.json").read_text())


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def shifted(x: torch.Tensor, px: int) -> torch.Tensor:
    """Translate right and down by px; the uncovered border is black (-1)."""
    out = torch.full_like(x, -1.0)
    out[:, :, px:, px:] = x[:, :, : x.shape[2] - px, : x.shape[3] - px]
    return out


def ladder(out: Path, n: int, quick: bool) -> dict[str, torch.Tensor]:
    """name -> n images in [-1, 1] (28x28 grey) from generators of graded quality."""
    teacher = load_model("builtin:gan-mnist5k")
    sets = {"GAN teacher": make_sampler(teacher).sample(n, 0)}
    for width, steps in ((0.25, 5 if quick else 400), (0.0625, 5 if quick else 400)):
        run = out / f"student-w{width}"
        if not (run / "student" / "model.json").is_file():
            replacing(kdgen.distill, None, [f"out={run}", f"student.width={width}", f"train.steps={steps}", "eval.enabled=false"])
        sets[f"student w{width}, {steps} steps"] = make_sampler(load_model(run / "student")).sample(n, 0)
    for s in NOISE:
        sets[f"teacher + noise {s}"] = noisy(sets["GAN teacher"], s)
    for s in BLUR:
        sets[f"teacher + blur {s}"] = gaussian_blur(sets["GAN teacher"], s)
    ddpm = load_model("builtin:ddpm-mnist5k")
    for steps in (4, 8, 16):
        sets[f"DDPM, {steps} DDIM steps"] = make_sampler(ddpm, steps=steps).sample(n, 0)
    return sets


def fids(space: str | Path, channels: int, real: torch.Tensor, sets: dict[str, torch.Tensor]) -> dict[str, float]:
    extractor, _ = load_feature_extractor(space, channels=channels)
    metric = QualityMetric(extractor, real)
    return {name: metric.score(x)["fid"] for name, x in sets.items()}


def main() -> None:
    from scipy.stats import spearmanr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/bench-features")
    args = ap.parse_args()
    out, n = Path(args.out), 200 if args.quick else 2000
    t0 = time.perf_counter()
    # 1. feature nets
    folder = photo_folder(out)
    simclr_mnist, m_mnist = train_featnet("configs/features/mnist5k-simclr.yaml", out / "featnet-mnist5k-simclr", [], args.quick)
    simclr_photos, m_photos = train_featnet("configs/features/folder.yaml", out / "featnet-photos",
                                            [f"data.name=folder:{folder}", "model.simclr={flip: true}"], args.quick)
    # 2. the ladder, in both mnist5k spaces
    sets = ladder(out, n, args.quick)
    real = load_dataset("mnist5k", split="test").images
    labelled = fids("builtin:featnet-mnist5k", 1, real, sets)
    selfsup = fids(simclr_mnist, 1, real, sets)
    rho = spearmanr([labelled[k] for k in sets], [selfsup[k] for k in sets]).statistic
    # 3. monotonicity on the photo folder
    cfg = f"folder:{folder}"
    train_p = stack_images(load_dataset(cfg, split="train"))
    test_p = stack_images(load_dataset(cfg, split="test"))
    damage = {"noise": [(s, noisy(train_p, s)) for s in NOISE], "blur": [(s, gaussian_blur(train_p, s)) for s in BLUR],
              "shift": [(s, shifted(train_p, s)) for s in SHIFT]}
    extractor, _ = load_feature_extractor(simclr_photos, channels=3)
    metric = QualityMetric(extractor, test_p)
    clean = metric.score(train_p)["fid"]
    mono = {kind: [clean] + [metric.score(x)["fid"] for _, x in steps] for kind, steps in damage.items()}
    # 4. the section
    cmd = "python benchmarks/" + Path(__file__).name + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    lines = ["## Feature spaces: self-supervised against labelled, and FID under damage (issue 13)", "",
             header(cmd, time.perf_counter() - t0),
             "Feature nets trained here by `kdgen train-features` (seconds from each run's own record; the other core was busy):", "",
             "| feature net | data | objective | train steps | train time | quality |", "|---|---|---|---:|---:|---|",
             f"| `{simclr_mnist}` | mnist5k train split (labels unused) | SimCLR | {m_mnist['train']['steps']} | "
             f"{m_mnist['train']['seconds']:.0f} s | held-out pair accuracy {m_mnist['test_pair_accuracy']:.3f}, "
             f"5-NN accuracy {m_mnist['knn_accuracy']:.3f} |",
             f"| `{simclr_photos}` | {len(train_p)} + {len(test_p)} photo patches (train + held-out) | SimCLR | "
             f"{m_photos['train']['steps']} | {m_photos['train']['seconds']:.0f} s | held-out pair accuracy "
             f"{m_photos['test_pair_accuracy']:.3f} |",
             "| `builtin:featnet-mnist5k` (shipped) | mnist5k train split | classifier | 2000 | see assets/README.md | "
             "test accuracy 0.988 |", "",
             f"**The ladder on mnist5k** ({n} images each vs the 500 held-out test images; one seed):", "",
             "| generator | FID, labelled featnet-mnist5k | rank | FID, SimCLR | rank |", "|---|---:|---:|---:|---:|"]
    rank_l = {k: i + 1 for i, k in enumerate(sorted(sets, key=labelled.get))}
    rank_s = {k: i + 1 for i, k in enumerate(sorted(sets, key=selfsup.get))}
    lines += [f"| {k} | {labelled[k]:.2f} | {rank_l[k]} | {selfsup[k]:.2f} | {rank_s[k]} |" for k in sets]
    verdict = "met" if rho >= 0.9 else "MISSED"
    lines += ["", f"- **Spearman rank correlation: {rho:.3f}** over {len(sets)} generators (target >= 0.9: {verdict}).", "",
              f"**Monotonicity on the photo folder** (FID in its SimCLR space, training patches vs the {len(test_p)} held-out ones; "
              "strength 0 is the clean training patches):", "",
              "| damage | strengths | FID at each strength | grows at every step |", "|---|---|---|---|"]
    strengths = {"noise": (0,) + NOISE, "blur": (0,) + BLUR, "shift": (0,) + SHIFT}
    units = {"noise": "sigma", "blur": "sigma px", "shift": "px"}
    for kind, values in mono.items():
        grows = all(b > a for a, b in zip(values, values[1:]))
        lines.append(f"| {kind} | {units[kind]} {', '.join(str(s) for s in strengths[kind])} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} | {'yes' if grows else '**no**'} |")
    body = "\n".join(lines)
    if not args.quick:
        write_section("feature_spaces", body)
    print(body)


if __name__ == "__main__":
    main()
