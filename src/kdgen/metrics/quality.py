"""FID and KID in a stated feature space (torchmetrics with kdgen's feature net as `feature=`), and fidelity.

The real-image statistics are computed once and shared: teacher and student see the same
reference set, the same seeds and the same sample count.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from ..errors import KdgenError
from ..io import file_sha256, load_state_dict_file, resolve_path
from ..models.featnet import FeatureExtractor
from ..models.loading import load_model
from ..sampling import Sampler
from .prdc import prdc

# torchmetrics warns on every KID that it keeps the features in memory: expected at our sizes
warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save all extracted features")


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


INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class InceptionExtractor(torch.nn.Module):
    """The standard FID Inception-v3 (torch-fidelity's port of the TF graph), 2048-d pool features.

    Images in [-1, 1] become uint8 RGB (grey repeated), as every published FID expects.
    """

    num_features = 2048

    def __init__(self, weights: str | None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        if weights is not None:
            if not Path(weights).expanduser().is_file():
                raise KdgenError(f"Inception weights file '{weights}' does not exist; download it from {INCEPTION_URL}")
            try:  # our own safe read first (weights_only): a pickle with code never reaches torch-fidelity
                load_state_dict_file(Path(weights).expanduser())
            except KdgenError as e:
                raise KdgenError(f"'{weights}' is not a valid Inception weights file ({e}); download it from {INCEPTION_URL}") from None
        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(Path(weights).expanduser()) if weights else None)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            how = "is not a valid Inception weights file" if weights else f"could not be downloaded ({type(e).__name__})"
            raise KdgenError(
                f"the FID Inception network {how}; fetch {INCEPTION_URL} on a machine with internet and pass "
                "--inception-weights FILE (or eval.features=inception:FILE)"
            ) from None
        self.net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).reshape(x.shape[0], -1)


# eval.features=auto: the feature net kdgen ships for a dataset
AUTO_FEATURES = {"mnist5k": "builtin:featnet-mnist5k", "mnist": "builtin:featnet-mnist5k", "digits": "builtin:featnet-mnist5k",
                 "emoji": "builtin:featnet-emoji"}
# datasets of one domain: a net trained on one measures the others, with a caveat (mnist5k is 5,000 of MNIST's images;
# scikit-learn's digits are other handwritten digits, at 8x8)
DOMAIN = {"mnist5k": "handwritten digits", "mnist": "handwritten digits", "digits": "handwritten digits"}


def feature_path(features: str, *, data: str, channels: int) -> str:
    """eval.features with `auto` resolved: kdgen's feature net for `data`, or a sentence saying there is none."""
    if features != "auto":
        return features
    path = AUTO_FEATURES.get(data)
    if path is None and data.startswith("python:") and channels == 1:
        path = AUTO_FEATURES["mnist5k"]  # a Dataset handed in: kdgen cannot tell what it holds; grey images get the digit net, noted
    if path is None and data.startswith("python:"):
        raise KdgenError(
            f"kdgen has no feature net for the {channels}-channel images of the Dataset handed in ({data}); give eval.features: a "
            "feature net trained on such images (kdgen train-features on a folder of them), or inception:FILE / dinov2:FILE")
    if path is None:
        raise KdgenError(
            f"kdgen has no feature net for '{data}', so FID on it would be measured in a space made for other images; train one "
            f"on it (kdgen train-features configs/features/folder.yaml data.name={data}) and set eval.features=RUN/featnet, or "
            "give eval.features=inception:FILE")
    return path


def _data_key(name: str) -> str:
    """A dataset name to compare by: a folder by its absolute path (folder:~/x and folder:/home/me/x are one folder)."""
    if name.startswith("folder:"):
        return "folder:" + str(Path(name.split(":", 1)[1]).expanduser().resolve())
    return name


def same_dataset(a: str, b: str) -> bool:
    """Whether two dataset names name the same data (folders compared by absolute path)."""
    return _data_key(a) == _data_key(b)


def feature_space(features: str, *, data: str, channels: int, allow_mismatch: bool = False) -> tuple[torch.nn.Module, dict]:
    """The extractor FID/KID use for `data`, and its record; a feature net trained on other data is refused (or, allowed,
    noted in info["caveat"]). `features` "auto" picks kdgen's net for the data."""
    path = feature_path(features, data=data, channels=channels)
    extractor, info = load_feature_extractor(path, channels=channels)
    trained = info.get("trained_on")
    if trained is not None and _data_key(trained) != _data_key(data):
        note = f"the feature net {path} was trained on {trained}, not on the measured data {data}"
        if DOMAIN.get(trained, trained) == DOMAIN.get(data, data):
            info["caveat"] = f"{note} (both {DOMAIN[data]})"
            return extractor, info
        if not (data.startswith("python:") or allow_mismatch):
            raise KdgenError(f"{note}, so its FID says little about these images; train one on this data (kdgen train-features with "
                             f"data.name={data}) and set eval.features to it, or set eval.allow_feature_mismatch=true to measure anyway")
        info["caveat"] = note + (" (kdgen cannot check a Dataset handed in from Python)" if data.startswith("python:") else " (allowed)")
    return extractor, info


def load_feature_extractor(path: str | Path, *, channels: int) -> tuple[torch.nn.Module, dict]:
    """The feature space quality is measured in: a kdgen feature net folder, `inception` or `inception:FILE`, `dinov2:FILE`."""
    text = str(path)
    if text == "inception" or text.startswith("inception:"):
        weights = text.split(":", 1)[1] if ":" in text else None
        extractor = InceptionExtractor(weights)
        digest = file_sha256(Path(weights).expanduser()) if weights else "downloaded torch-fidelity weights"
        return extractor, {"path": text, "sha256": digest, "num_features": 2048, "layer": "Inception-v3 pool3 (FID standard)"}
    if text.startswith("dinov2:") or text == "dinov2":
        weights = text.split(":", 1)[1] if ":" in text else ""
        if not weights:
            raise KdgenError("eval.features=dinov2 needs a weights file: eval.features=dinov2:FILE (timm's vit_small_patch14_dinov2 "
                             "model.safetensors, fetched where there is internet)")
        extractor = DinoV2Extractor(weights)
        return extractor, {"path": text, "sha256": file_sha256(Path(weights).expanduser()), "num_features": extractor.num_features,
                           "layer": f"{extractor.variant} CLS token at 224 px (Stein et al. 2023)"}
    folder = resolve_path(path)
    net = load_feature_net(folder, channels=channels)
    meta = getattr(net, "kdgen_meta", None) or {}
    info = {"path": str(path), "sha256": file_sha256(folder / "model.safetensors"), "num_features": net.num_features,
            "layer": "embed (pre-ReLU penultimate linear)",
            **{k: meta[k] for k in ("trained_on", "image_size", "channels", "data_sha256", "objective") if k in meta}}
    return FeatureExtractor(net), info


DINOV2_SIZES = {384: "small", 768: "base", 1024: "large", 1536: "giant"}


class DinoV2Extractor(torch.nn.Module):
    """DINOv2 ViT features (Oquab et al. 2023), the space Stein et al. (2023, "Exposing flaws of generative model
    evaluation metrics") recommend for the Frechet distance: the normalised CLS token at 224x224.

    The variant (small / base / large / giant, with or without registers) is read off the weights file: timm's
    `vit_*_patch14[_reg4]_dinov2` layout, or the original facebookresearch checkpoints (converted by timm).
    Images in [-1, 1] are resized (bicubic, antialiased) to 224, grey repeated to RGB, ImageNet-normalised."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, weights: str):
        super().__init__()
        try:
            import timm
            from timm.models.vision_transformer import checkpoint_filter_fn
        except ImportError:
            raise KdgenError("eval.features=dinov2:FILE needs timm; install it with pip install 'kdgen[timm]'") from None
        state = load_state_dict_file(Path(weights).expanduser())
        cls = state.get("cls_token")
        if cls is None or cls.dim() != 3 or cls.shape[-1] not in DINOV2_SIZES:
            raise KdgenError(f"'{weights}' is not a DINOv2 ViT weights file (no cls_token of width 384/768/1024/1536); give timm's "
                             "vit_*_patch14_dinov2 model.safetensors or a facebookresearch dinov2_vit*14 checkpoint")
        reg = "_reg4" if "reg_token" in state or "register_tokens" in state else ""
        self.variant = f"vit_{DINOV2_SIZES[cls.shape[-1]]}_patch14{reg}_dinov2"
        self.net = timm.create_model(self.variant, pretrained=False, num_classes=0, dynamic_img_size=True)
        try:
            self.net.load_state_dict(checkpoint_filter_fn(state, self.net))
        except RuntimeError as e:
            raise KdgenError(f"'{weights}' does not fit {self.variant} ({str(e).splitlines()[0]}); give the matching DINOv2 weights") from None
        self.net.eval().requires_grad_(False)
        self.num_features = self.net.num_features
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        return self.net((x - self.mean) / self.std)


class QualityMetric:
    """FID, KID, precision/recall/density/coverage of generated sets against one fixed real set.

    Real statistics are computed once; every `score` call sees the same reference.
    """

    def __init__(self, extractor: FeatureExtractor, real: torch.Tensor, *, batch_size: int = 500, kid_subset: int = 1000, k: int = 5):
        if len(real) <= k:
            raise KdgenError(f"the reference set has {len(real)} images; it needs more than eval.k={k} (lower eval.k or use more real images)")
        self.extractor, self.batch_size, self.kid_subset, self.k = extractor, batch_size, kid_subset, k
        subset = min(kid_subset, len(real))
        from torchmetrics.image.fid import FrechetInceptionDistance  # here, not at import: torchmetrics.image takes ~2 s to load
        from torchmetrics.image.kid import KernelInceptionDistance

        self.fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        self.kid = KernelInceptionDistance(feature=extractor, reset_real_features=False, subset_size=subset, subsets=50)
        for chunk in real.split(batch_size):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)
        self.n_real = len(real)
        self.real_features = self.features(real)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.extractor(chunk).double().cpu() for chunk in images.split(self.batch_size)])

    def score(self, fake: torch.Tensor) -> dict[str, float]:
        return self.score_with_features(fake)[0]

    @torch.no_grad()
    def score_with_features(self, fake: torch.Tensor, seed: int = 0) -> tuple[dict[str, float], torch.Tensor]:
        if len(fake) <= self.k:
            raise KdgenError(f"scoring needs more than eval.k={self.k} generated images; raise eval.num_samples or lower eval.k")
        self.fid.reset()
        self.kid.reset()
        self.kid.subset_size = min(self.kid_subset, len(fake), self.n_real)  # set per call: sets differ in size
        for chunk in fake.split(self.batch_size):
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        with torch.random.fork_rng(devices=[]):  # KID draws random subsets: seed them, leave the caller's RNG alone
            torch.manual_seed(seed)
            kid_mean, kid_std = self.kid.compute()
        feats = self.features(fake)
        scores = {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_subset_std": float(kid_std)}
        scores.update(prdc(self.real_features, feats, k=self.k))
        return scores, feats


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


SUMMARISED = ("fid", "kid", "precision", "recall", "density", "coverage")


def evaluate_quality(metric: QualityMetric, sampler: Sampler, *, num_samples: int, seeds: list[int],
                     features: dict | None = None) -> dict:
    """Every metric of `sampler` as mean and std across `seeds` (plus each seed's FID).

    Pass a dict as `features` to receive {seed: generated feature matrix}.
    """
    per_seed = []
    for seed in seeds:
        scores, feats = metric.score_with_features(sampler.sample(num_samples, seed), seed)
        per_seed.append(scores)
        if features is not None:
            features[seed] = feats
    out: dict = {}
    for key in SUMMARISED:
        out[key], out[f"{key}_std"] = mean_std([r[key] for r in per_seed])
    out["fid_per_seed"] = [r["fid"] for r in per_seed]
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def fidelity(student: Sampler, teacher: Sampler, extractor: FeatureExtractor, *, n: int, seed: int, batch_size: int = 250) -> dict:
    """How closely the student reproduces the teacher on the same latents: PSNR, L1, feature distance
    (means, and PSNR and feature distance per image)."""
    s, t = student.sample(n, seed), teacher.sample(n, seed)
    with torch.no_grad():
        fd = torch.cat([(extractor(a) - extractor(b)).norm(dim=1).cpu() for a, b in zip(s.split(batch_size), t.split(batch_size))])
    p, l1 = psnr(s, t), (s - t).abs().flatten(1).mean(1)
    return {"psnr_db": float(p.mean()), "l1": float(l1.mean()), "feature_dist": float(fd.mean()),
            "seed": seed, "count": n, "psnr_db_per_image": [round(v, 3) for v in p.tolist()],
            "l1_per_image": [round(v, 5) for v in l1.tolist()], "feature_dist_per_image": [round(v, 4) for v in fd.tolist()]}
