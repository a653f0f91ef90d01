"""The small CNN classifier whose penultimate layer is kdgen's FID/KID feature space.

`features(x)` is the 128-d output of a linear layer *before* its ReLU (no dead units, so the
feature covariance stays well conditioned), standardised by a non-affine BatchNorm so every
dimension has unit scale on real data (FID/KID values then stay in a readable range);
`forward(x)` gives class logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODEL_FAMILIES


@MODEL_FAMILIES.register("featnet")
class FeatureNet(nn.Module):
    """Small CNN classifier; its pre-ReLU penultimate layer is the evaluation feature space."""

    face_kind = "classifier"

    def __init__(self, *, channels: int = 1, num_classes: int = 10, width: int = 32, num_features: int = 128, dropout: float = 0.3):
        super().__init__()
        for name, v in {"channels": channels, "num_classes": num_classes, "width": width, "num_features": num_features}.items():
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.channels, self.num_features = channels, num_features

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))

        self.body = nn.Sequential(
            block(channels, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(2 * width * 16, num_features), nn.BatchNorm1d(num_features, affine=False))
        # a classifier's head; for a self-supervised net (train-features on unlabelled images) the SimCLR projection
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(num_features, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureExtractor(nn.Module):
    """Adapter for torchmetrics `feature=`: images in [-1, 1] -> features, with `num_features` set."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.net.channels:
            raise ValueError(f"feature net expects {self.net.channels} channel(s), images have {x.shape[1]}")
        return self.net.features(x.float())
