"""DCGAN-style generator and discriminator with a width multiplier (Radford et al. 2016).

Stages are named `blocks.0 .. blocks.N` so feature taps and students can address them. The
generator maps z [n, z_dim] (or [n, z_dim, 1, 1]) to images [n, C, H, W] in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODEL_FAMILIES


def stage_plan(image_size: int) -> tuple[int, int]:
    """(start size, number of x2 upsamplings) so that start * 2**n == image_size, start <= 8."""
    start, n_up = image_size, 0
    while start % 2 == 0 and start > 7:
        start //= 2
        n_up += 1
    if start > 8 or n_up == 0:
        raise ValueError(
            f"image_size {image_size} cannot be built as s * 2**n with s <= 8 and n >= 1; use e.g. 8, 16, 28, 32 or 64"
        )
    return start, n_up


def check_positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


def stage_channels(base_width: int, width: float, n_up: int) -> list[int]:
    """Channels of stages 0..n_up, widest first: base_width * width * 2**(n_up - i), at least 1."""
    return [max(1, int(round(base_width * width * 2 ** (n_up - i)))) for i in range(n_up + 1)]


@MODEL_FAMILIES.register("dcgan-generator")
class DCGANGenerator(nn.Module):
    """DCGAN generator: z -> transposed-conv stages -> 3x3 conv -> tanh."""

    face_kind = "generator"

    def __init__(self, *, z_dim: int = 100, image_size: int = 28, channels: int = 1, base_width: int = 64, width: float = 1.0):
        super().__init__()
        check_positive(z_dim=z_dim, channels=channels, base_width=base_width, width=width)
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        start, n_up = stage_plan(image_size)
        ch = stage_channels(base_width, width, n_up)
        layers = [nn.Sequential(nn.ConvTranspose2d(z_dim, ch[0], start, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True))]
        for i in range(1, n_up + 1):
            layers.append(
                nn.Sequential(nn.ConvTranspose2d(ch[i - 1], ch[i], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i]), nn.ReLU(True))
            )
        self.blocks = nn.Sequential(*layers)
        self.to_image = nn.Sequential(nn.Conv2d(ch[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.to_image(self.blocks(z))


@MODEL_FAMILIES.register("dcgan-discriminator")
class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: strided convs with LeakyReLU -> one logit per image."""

    def __init__(self, *, image_size: int = 28, channels: int = 1, base_width: int = 64, width: float = 1.0):
        super().__init__()
        check_positive(channels=channels, base_width=base_width, width=width)
        self.image_size, self.channels = image_size, channels
        start, n_up = stage_plan(image_size)
        ch = list(reversed(stage_channels(base_width, width, n_up)))[1:]  # narrow -> wide
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(channels, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True))]
        for i in range(1, n_up):
            layers.append(
                nn.Sequential(nn.Conv2d(ch[i - 1], ch[i], 4, 2, 1, bias=False), nn.BatchNorm2d(ch[i]), nn.LeakyReLU(0.2, True))
            )
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch[n_up - 1], 1, start, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x)).flatten(1).squeeze(1)
