"""The Sampler face: how evaluation, comparison and export see any image generator.

`sample(n, seed) -> [n, C, H, W]` in [-1, 1]; the same seed gives the same latents for every
Sampler with the same latent size, so teacher and student are compared image for image.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from .utils import device_of, eval_mode


class Sampler(Protocol):
    module: nn.Module

    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor: ...

    def example_input(self, batch: int) -> torch.Tensor: ...


class GeneratorSampler:
    """A GAN generator (or VAE decoder): z ~ N(0, I) [n, z_dim] -> image, one network call per image."""

    steps = 1

    def __init__(self, module: nn.Module, *, z_dim: int, batch_size: int = 500):
        self.module, self.z_dim, self.batch_size = module, z_dim, batch_size

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))

    def example_input(self, batch: int) -> torch.Tensor:
        return self.latents(batch, 0)

    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = self.latents(n, seed)
        with eval_mode(self.module) as m:
            device = device_of(m)
            return torch.cat([m(z[i : i + self.batch_size].to(device)).float().cpu() for i in range(0, n, self.batch_size)])
