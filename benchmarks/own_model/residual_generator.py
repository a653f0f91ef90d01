"""The benchmark's generator of "the user's own": kdgen does not define it and knows nothing of its layout.

z [n, z_dim] -> image [n, 1, 28, 28] in [-1, 1]. Not chain-shaped: residual blocks at 7x7 and 14x14,
bilinear upsampling, and the 14x14 features concatenated into the 28x28 head (a U-Net-like skip),
GroupNorm throughout. Channel counts are not stored as attributes, so a pruned copy runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(g for g in range(1, 5) if ch % g == 0), ch)  # up to 4 groups


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.f = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), _norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class ResidualGenerator(nn.Module):
    def __init__(self, z_dim: int = 64, width: int = 32):
        super().__init__()
        self.z_dim = z_dim
        self.project = nn.ConvTranspose2d(z_dim, 4 * width, 7)
        self.low = nn.Sequential(Residual(4 * width), Residual(4 * width))
        self.mid_in = nn.Conv2d(4 * width, 2 * width, 3, padding=1)
        self.mid = Residual(2 * width)
        self.high_in = nn.Conv2d(2 * width, width, 3, padding=1)
        self.high = Residual(width)
        self.head = nn.Sequential(_norm(3 * width), nn.SiLU(), nn.Conv2d(3 * width, 1, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h7 = self.low(self.project(z.reshape(z.shape[0], -1, 1, 1)))
        h14 = self.mid(self.mid_in(F.interpolate(h7, scale_factor=2, mode="bilinear", align_corners=False)))
        up14 = F.interpolate(h14, scale_factor=2, mode="bilinear", align_corners=False)
        h28 = self.high(self.high_in(up14))
        return torch.tanh(self.head(torch.cat([h28, up14], dim=1)))
