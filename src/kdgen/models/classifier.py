"""Classifier families for classic knowledge distillation: MLPs, small CNNs and torchvision ResNets.

Every family takes `channels`, `image_size` and `num_classes` and maps images [n, C, H, W] in [-1, 1]
to logits [n, K]. Layer names are stable so feature methods (fitnet, attention) can tap them:

- `mlp`:    hidden.0, hidden.1, ... (Linear -> ReLU -> Dropout), head. Hinton et al. (2015) used
            1200-1200 (teacher, with dropout) and 800-800 (student) on MNIST.
- `cnn`:    blocks.0, blocks.1, ... (3x3 conv -> BN -> ReLU -> 2x2 max-pool), head.
- `resnet`: torchvision resnet18/34/50 adapted to small images (3x3 stride-1 stem, no max-pool, any
            channel count): conv1, layer1 .. layer4, fc.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODEL_FAMILIES

CLASSIFIER_FAMILIES = ("mlp", "cnn", "resnet", "featnet")


def _positive(**values: int) -> None:
    for name, v in values.items():
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_shape(channels: int, image_size: int, num_classes: int, name: str, widths, what: str) -> None:
    """Positive image shape and class count, and a non-empty list of positive widths named `name`."""
    _positive(channels=channels, image_size=image_size, num_classes=num_classes)
    if not widths:
        raise ValueError(f"{name} must list at least one {what}")
    _positive(**{f"{name}[{i}]": w for i, w in enumerate(widths)})


@MODEL_FAMILIES.register("mlp")
class MLPClassifier(nn.Module):
    """Flattened pixels -> len(hidden) fully connected ReLU layers (with dropout) -> logits."""

    face_kind = "classifier"

    def __init__(self, *, channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 hidden: list[int] | tuple[int, ...] = (800, 800), dropout: float = 0.0):
        super().__init__()
        _check_shape(channels, image_size, num_classes, "hidden", hidden, "layer width, e.g. [800, 800]")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.image_size = channels, image_size
        widths = [channels * image_size * image_size, *hidden]
        self.hidden = nn.Sequential(*[
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)) for a, b in zip(widths[:-1], widths[1:])
        ])
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x.flatten(1)))


@MODEL_FAMILIES.register("cnn")
class CNNClassifier(nn.Module):
    """A small CNN: one conv block per entry of `widths` (each halves the image), global average pool, linear head."""

    face_kind = "classifier"

    def __init__(self, *, channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 widths: list[int] | tuple[int, ...] = (32, 64), dropout: float = 0.0):
        super().__init__()
        _check_shape(channels, image_size, num_classes, "widths", widths, "block width, e.g. [32, 64]")
        self.channels, self.image_size = channels, image_size
        chans = [channels, *widths]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True),
                          nn.MaxPool2d(2) if image_size >> (i + 1) >= 2 else nn.Identity())
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        ])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


RESNETS = ("resnet18", "resnet34", "resnet50")


@MODEL_FAMILIES.register("resnet")
class ResNetClassifier(nn.Module):
    """A torchvision ResNet for small images: 3x3 stride-1 stem, no max-pool, `channels` inputs."""

    face_kind = "classifier"

    def __init__(self, *, arch: str = "resnet18", channels: int = 3, image_size: int = 32, num_classes: int = 10):
        super().__init__()
        import torchvision

        if arch not in RESNETS:
            raise ValueError(f"arch must be one of {', '.join(RESNETS)}, got {arch!r}")
        _positive(channels=channels, image_size=image_size, num_classes=num_classes)
        self.channels, self.image_size = channels, image_size
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        self.conv1 = nn.Conv2d(channels, net.conv1.out_channels, 3, 1, 1, bias=False)
        self.bn1, self.relu = net.bn1, net.relu  # no max-pool: small images keep their resolution
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool, self.fc = net.avgpool, net.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def is_classifier(model: nn.Module) -> bool:
    """True for a model whose face is a classifier (kdgen's families, torchvision/timm, or a user's stated one)."""
    from ..faces import face_of

    return face_of(model).kind == "classifier"
