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


def gaussian_latents(n: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """kdgen's noise for `seed`: N(0, I) of [n, *shape]; every Sampler (and the ONNX one) draws it this way."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


class GeneratorSampler:
    """A GAN generator (or VAE decoder): z ~ N(0, I) [n, *z_shape] -> image, one network call per image."""

    steps = 1

    def __init__(self, module: nn.Module, *, z_shape: tuple[int, ...] | int, batch_size: int = 500):
        self.z_shape = (z_shape,) if isinstance(z_shape, int) else tuple(z_shape)
        self.module, self.batch_size = module, batch_size

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return gaussian_latents(n, seed, self.z_shape)

    def example_input(self, batch: int) -> torch.Tensor:
        return self.latents(batch, 0)

    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = self.latents(n, seed)
        with eval_mode(self.module) as m:
            device = device_of(m)
            return torch.cat([m(z[i : i + self.batch_size].to(device)).float().cpu() for i in range(0, n, self.batch_size)])


class _NetCall(nn.Module):
    """ONE network evaluation of a diffusion model at a mid timestep: what cost() counts and times, then
    multiplies by the sampler's network evaluations per image (steps x 2 with guidance)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.t = model.num_train_timesteps // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.full((x.shape[0],), self.t, device=x.device, dtype=torch.long)
        labels = self.model.default_labels(x.shape[0])
        return self.model(x, t, labels.to(x.device) if labels is not None else None)


class DiffusionSampler:
    """A diffusion model with its scheduler and step count: noise [n, C, H, W] -> image.

    Sampling runs the diffusers scheduler itself (DDIM, deterministic; LCM for consistency students),
    so a plain diffusers loop with the same latents gives the same images. `steps` (what cost()
    multiplies by) counts network evaluations per image: sampling steps x (2 with guidance).
    """

    def __init__(self, model: nn.Module, *, steps: int | None = None, batch_size: int = 500, net=None):
        from .errors import KdgenError

        self.model, self.batch_size = model, batch_size
        self.net = net or model.guided  # net(x, t, labels): one guided call; export swaps in a TorchScript graph
        self._scheduler = None
        self.sampling_steps = int(model.steps if steps is None else steps)
        most = model.num_train_timesteps
        if model.sampler == "LCMScheduler":  # a consistency student samples on its solver grid
            most = int(model.scheduler_config.get("original_inference_steps", 50))
        if not 1 <= self.sampling_steps <= most:
            raise KdgenError(f"{self.sampling_steps} sampling steps is outside what this model can take (1..{most}); pick a step count in that range")
        labelled = model.num_classes is not None
        self.steps = self.sampling_steps * model.evals_per_step(labelled)
        self.module = _NetCall(model)
        self.shape = (model.channels, model.image_size, model.image_size)

    def latents(self, n: int, seed: int) -> torch.Tensor:
        return gaussian_latents(n, seed, self.shape)

    def example_input(self, batch: int) -> torch.Tensor:
        return self.latents(batch, 0)

    @torch.no_grad()
    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        z = self.latents(n, seed) if latents is None else latents
        labels = cond if cond is not None else self.model.default_labels(n)
        noise_gen = torch.Generator().manual_seed(seed + 1)  # LCM's per-step noise (DDIM draws none)
        with eval_mode(self.model) as m:
            device = device_of(m)
            out = []
            for i in range(0, n, self.batch_size):
                y = labels[i : i + self.batch_size].to(device) if labels is not None else None
                out.append(self.run(z[i : i + self.batch_size].to(device), y, noise_gen).float().cpu())
            return torch.cat(out)

    def run(self, x: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator | None = None, record=None) -> torch.Tensor:
        """All sampling steps from noise x; `record(x, t)` (optional) sees every network input (int8 calibration)."""
        if self._scheduler is None:  # built once per sampler: set_timesteps resets its state for every run
            self._scheduler = self.model.make_scheduler()
        scheduler = self._scheduler
        scheduler.set_timesteps(self.sampling_steps)
        for t in scheduler.timesteps:
            if record is not None:
                record(x, t)
            out = self.net(x, t.to(x.device), labels)
            x = scheduler.step(out, t, x, generator=generator).prev_sample
        return x.clamp(-1, 1)


def make_sampler(model: nn.Module, *, batch_size: int = 500, steps: int | None = None):
    """The Sampler of a loaded model, from its face: a DiffusionSampler for diffusion models, a GeneratorSampler for generators."""
    from .errors import KdgenError
    from .faces import face_of

    face = face_of(model)
    if face.kind == "diffusion":
        return DiffusionSampler(model, steps=steps, batch_size=batch_size)
    if face.kind != "generator":
        raise KdgenError(f"this model is a {face.kind}, which makes no images from noise; give a generator or diffusion model")
    if steps is not None:
        raise KdgenError("a step count applies to diffusion models; this one makes an image in one call")
    return GeneratorSampler(model, z_shape=face.z_shape, batch_size=batch_size)
