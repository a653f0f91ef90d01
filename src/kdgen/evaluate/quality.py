"""FID and KID in a stated feature space (torchmetrics with kdgen's feature net as `feature=`), and fidelity.

The real-image statistics are computed once and shared: teacher and student see the same
reference set, the same seeds and the same sample count.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ..errors import KdgenError
from ..io import file_sha256, load_model, resolve_path
from ..models.featnet import FeatureExtractor
from ..sampling import Sampler


def load_feature_net(path: str | Path, *, channels: int, key: str = "eval.features"):
    """A kdgen feature net (eval mode) that takes `channels`-channel images, or a sentence saying why not."""
    net = load_model(path)
    if not hasattr(net, "features"):
        raise KdgenError(f"{key} '{path}' is not a feature network (it has no features()); train one with kdgen train-features")
    if net.channels != channels:
        raise KdgenError(
            f"{key} '{path}' takes {net.channels}-channel images but the models make {channels}; "
            "train a matching one with kdgen train-features"
        )
    return net


def load_feature_extractor(path: str | Path, *, channels: int) -> tuple[FeatureExtractor, dict]:
    folder = resolve_path(path)
    net = load_feature_net(folder, channels=channels)
    info = {"path": str(path), "sha256": file_sha256(folder / "model.safetensors"), "num_features": net.num_features,
            "layer": "embed (pre-ReLU penultimate linear)"}
    return FeatureExtractor(net), info


class QualityMetric:
    """FID + KID against one fixed real set; update/compute per generated set."""

    def __init__(self, extractor: FeatureExtractor, real: torch.Tensor, *, batch_size: int = 500, kid_subset: int = 1000):
        self.batch_size, self.kid_subset = batch_size, kid_subset
        subset = min(kid_subset, len(real))
        self.fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        self.kid = KernelInceptionDistance(feature=extractor, reset_real_features=False, subset_size=subset, subsets=50)
        for chunk in real.split(batch_size):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)
        self.n_real = len(real)

    @torch.no_grad()
    def score(self, fake: torch.Tensor) -> dict[str, float]:
        if len(fake) < 2:
            raise KdgenError("FID needs at least 2 generated images; raise eval.num_samples")
        self.fid.reset()
        self.kid.reset()
        self.kid.subset_size = min(self.kid_subset, len(fake), self.n_real)  # set per call: sets differ in size
        for chunk in fake.split(self.batch_size):
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_subset_std": float(kid_std)}


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def evaluate_quality(metric: QualityMetric, sampler: Sampler, *, num_samples: int, seeds: list[int]) -> dict:
    """FID/KID of `sampler` over `seeds` (mean, std across seeds, and each seed's value)."""
    per_seed = [metric.score(sampler.sample(num_samples, seed)) for seed in seeds]
    fid_m, fid_s = mean_std([r["fid"] for r in per_seed])
    kid_m, kid_s = mean_std([r["kid"] for r in per_seed])
    return {"fid": fid_m, "fid_std": fid_s, "kid": kid_m, "kid_std": kid_s, "fid_per_seed": [r["fid"] for r in per_seed]}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def fidelity(student: Sampler, teacher: Sampler, extractor: FeatureExtractor, *, n: int, seed: int) -> dict[str, float]:
    """How closely the student reproduces the teacher on the same latents: PSNR, L1, feature distance."""
    s, t = student.sample(n, seed), teacher.sample(n, seed)
    with torch.no_grad():
        fd = (extractor(s) - extractor(t)).norm(dim=1)
    return {"psnr_db": float(psnr(s, t).mean()), "l1": float((s - t).abs().mean()), "feature_dist": float(fd.mean())}
