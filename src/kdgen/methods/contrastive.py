"""Self-supervised feature learning for unlabelled images (how `train-features` makes a feature net for a folder).

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"): two random
augmentations of each image; the NT-Xent loss pulls the pair together and pushes the other 2N - 2 views away, on a
projection g(h) of the representation h. FID is then measured in h (the feature net's pre-ReLU embedding), the
layer before the projection, as the paper finds h keeps more information than g(h).

Augmentations, all per image and vectorised (one affine grid, one blend per colour op):
- random resized crop (area `crop` .. 1, aspect 3/4 .. 4/3) and a translation, by one affine warp;
- horizontal flip (`flip`: off by default, since it changes what digits and text mean);
- colour jitter for RGB (brightness, contrast, saturation, each by up to `jitter`) and random greyscale (p 0.2);
  brightness and contrast only for greyscale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import KdgenError
from .base import DistillationMethod, StepOutput

OPTIONS = {"temperature": 0.5, "crop": 0.5, "flip": False, "jitter": 0.4}  # model.simclr keys and their defaults


class ContrastiveFeatures(DistillationMethod):
    """NT-Xent on two augmented views of each image; `model.head` is the projection, `model.features` the representation."""

    def __init__(self, model: nn.Module, options: dict | None = None):
        super().__init__()
        o = {**OPTIONS, **check_options(options or {})}
        self.student, self.temperature, self.crop, self.flip, self.jitter = model, o["temperature"], o["crop"], o["flip"], o["jitter"]

    def trainable(self, phase: str):
        return self.student.parameters()

    def forward(self, batch: dict, phase: str) -> StepOutput:
        x = batch["image"]
        views = torch.cat([augment(x, crop=self.crop, flip=self.flip, jitter=self.jitter),
                           augment(x, crop=self.crop, flip=self.flip, jitter=self.jitter)])
        z = F.normalize(self.student(views), dim=1)
        loss, acc = nt_xent(z, self.temperature)
        return StepOutput(loss, {"loss/nt_xent": loss.item(), "train/pair_acc": acc})

    @torch.no_grad()
    def pair_accuracy(self, images: torch.Tensor, net: nn.Module, seed: int = 0) -> float:
        """On held-out images (two seeded views each, this method's augmentations): how often an image's other view is the
        nearest in `net`'s representation h (the FID layer; the trained, possibly EMA, net) - chance 1 / (2N - 1)."""
        net = net.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = torch.cat([augment(images, crop=self.crop, flip=self.flip, jitter=self.jitter) for _ in range(2)])
        device = next(net.parameters()).device
        h = torch.cat([net.features(v.to(device)).cpu() for v in views.split(500)])
        return nt_xent(F.normalize(h, dim=1), self.temperature)[1]


def check_options(options: dict) -> dict:
    """model.simclr, checked: known keys, values in range (a sentence naming the key otherwise)."""
    for key, value in options.items():
        if key not in OPTIONS:
            raise KdgenError(f"unknown model.simclr key '{key}'; valid keys are: {', '.join(sorted(OPTIONS))}")
        ok = {"temperature": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "crop": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
              "flip": lambda v: isinstance(v, bool),
              "jitter": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1}[key](value)
        if not ok:
            want = {"temperature": "a number > 0", "crop": "a number in (0, 1]", "flip": "true or false", "jitter": "a number in [0, 1)"}
            raise KdgenError(f"model.simclr.{key} must be {want[key]}, got {value!r}")
    return options


def nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """The NT-Xent loss of 2N unit vectors whose i-th and (i+N)-th rows are a positive pair; and how often the pair is the
    nearest view (a readable training signal: 1 / (2N - 1) by chance)."""
    n = z.shape[0] // 2
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target), float((sim.argmax(1) == target).float().mean())


def augment(x: torch.Tensor, *, crop: float, flip: bool, jitter: float) -> torch.Tensor:
    """One random view of each image in [-1, 1]: resized crop + shift (+ flip) by an affine warp, then colour jitter."""
    n, c = x.shape[:2]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(crop, 1.0)
    log_ratio = torch.empty(n, device=dev).uniform_(-0.2877, 0.2877)  # aspect 3/4 .. 4/3
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, device=dev) * 2 - 1) * (1 - sy)
    if flip:
        sx = torch.where(torch.rand(n, device=dev) < 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter > 0:
        u = (v + 1) / 2

        def factor() -> torch.Tensor:
            return torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - jitter, 1 + jitter)

        u = u * factor()  # brightness
        mean = u.mean(dim=(1, 2, 3), keepdim=True)
        u = (u - mean) * factor() + mean  # contrast
        if c == 3:
            grey = (0.299 * u[:, :1] + 0.587 * u[:, 1:2] + 0.114 * u[:, 2:]).expand_as(u)
            u = (u - grey) * factor() + grey  # saturation
            u = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.2, grey, u)  # random greyscale
        v = u.clamp(0, 1) * 2 - 1
    return v
