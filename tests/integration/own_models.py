"""Models kdgen does not define: what a user brings. Used by the "your model in" tests.

`ResidualGenerator` is not chain-shaped: residual blocks (x + f(x)), a skip concatenation of an early
feature map into the last stage, and group norms. It keeps no channel counts as attributes, so a
pruned copy runs unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.GroupNorm(4, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGenerator(nn.Module):
    """z [n, z_dim] -> image [n, channels, 28, 28] in [-1, 1]."""

    def __init__(self, z_dim: int = 32, width: int = 32, channels: int = 1):
        super().__init__()
        self.z_dim = z_dim
        self.stem = nn.ConvTranspose2d(z_dim, 2 * width, 7)  # 1x1 -> 7x7
        self.block7 = ResBlock(2 * width)
        self.up14 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, 1, 1), nn.GroupNorm(4, width), nn.SiLU())
        self.block14 = ResBlock(width)
        self.up28 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(4, width), nn.SiLU())
        self.skip = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(2 * width, width, 1))  # 7x7 features straight to 28x28
        self.out = nn.Conv2d(2 * width, channels, 3, 1, 1)  # on [up28 | skip], concatenated

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h7 = self.block7(self.stem(z.view(z.shape[0], -1, 1, 1)))
        h28 = self.up28(self.block14(self.up14(h7)))
        return torch.tanh(self.out(torch.cat([h28, self.skip(h7)], dim=1)))


class TinyClassifier(nn.Module):
    """A classifier of the user's own: images [n, C, 28, 28] -> logits [n, num_classes]."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AttentionClassifier(nn.Module):
    """Conv features as tokens through multi-head self-attention, then a linear head (a ViT-like layout)."""

    def __init__(self, channels: int = 1, num_classes: int = 10, dim: int = 32, heads: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, 4, 4)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.mean(1))


class HiddenSetting(nn.Module):
    """A generator whose channel count lives under another name: its args cannot be read back."""

    def __init__(self, z_dim: int = 8, ch: int = 4):
        super().__init__()
        self.z_dim, self.c_ = z_dim, ch
        self.fc = nn.Linear(z_dim, ch * 16)
        self.out = nn.Conv2d(ch, 1, 3, 1, 1)
        self.scale = 1.0 / ch

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.fc(z).view(-1, self.c_, 4, 4)) * self.scale)
