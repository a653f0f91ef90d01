"""The discrete noise process and the DDIM step as differentiable tensor functions.

x_t = a_t x_0 + s_t eps with a_t = sqrt(alphas_cumprod[t]), s_t = sqrt(1 - alphas_cumprod[t]); t = -1
means "clean" (a = 1, s = 0), as diffusers' `set_alpha_to_one`. The network predicts eps, v
(v = a eps - s x_0, Salimans & Ho 2022) or x_0; `to_x0_eps` turns any of them into (x_0, eps).

`ddim_step` is diffusers' `DDIMScheduler.step` at eta = 0 written for a batch of per-sample
timesteps, so the methods can build targets from it; a test checks the two agree.
"""

from __future__ import annotations

import torch

from .errors import KdgenError


class Schedule:
    def __init__(self, scheduler_config: dict, *, clip: bool | None = None):
        from diffusers import DDPMScheduler

        cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        ddpm = DDPMScheduler.from_config(cfg)  # the betas, computed exactly as diffusers does
        self.alphas_cumprod = ddpm.alphas_cumprod.float()
        self.T = int(ddpm.config.num_train_timesteps)
        self.prediction_type = ddpm.config.prediction_type
        self.clip = bool(cfg.get("clip_sample", True)) if clip is None else clip
        # what t = -1 (after the last step) means: clean (1.0), or alphas_cumprod[0] as diffusers does without set_alpha_to_one
        self.final_alpha = 1.0 if cfg.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        self.clip_range = float(cfg.get("clip_sample_range", 1.0))

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        ac = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.full(t.shape, self.final_alpha))
        shape = (-1,) + (1,) * (like.dim() - 1)
        ac = ac.to(like.device, like.dtype).reshape(shape)
        return ac.sqrt(), (1 - ac).clamp(min=0).sqrt()

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.alpha_sigma(t, x0)
        return a * x0 + s * eps

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for (x_0, eps) at t: the denoising training target."""
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x0
        a, s = self.alpha_sigma(t, x0)
        return a * eps - s * x0

    def to_x0_eps(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = self.alpha_sigma(t, x)
        if self.prediction_type == "epsilon":
            return (x - s * out) / a, out
        if self.prediction_type == "sample":
            return out, (x - a * out) / s.clamp(min=1e-8)
        return a * x - s * out, a * out + s * x

    def from_x0(self, x0: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network output that means "x_0" at (x, t) (inverse of to_x0_eps's x_0 part)."""
        a, s = self.alpha_sigma(t, x)
        eps = (x - a * x0) / s.clamp(min=1e-8)
        return self.target(x0, eps, t)

    def ddim_step(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, *, clip: bool | None = None) -> torch.Tensor:
        """Deterministic DDIM from t to t_prev (per sample): x_0 clipped as diffusers does, eps from the raw output."""
        x0, eps = self.to_x0_eps(out, x, t)
        if self.clip if clip is None else clip:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        a_prev, s_prev = self.alpha_sigma(t_prev, x)
        return a_prev * x0 + s_prev * eps

    def ddim_timesteps(self, steps: int) -> list[int]:
        """diffusers' trailing DDIM timesteps for `steps` steps, and the stride it steps back by (T // steps)."""
        if steps < 1 or steps > self.T:
            raise KdgenError(f"{steps} sampling steps is outside 1..{self.T} (the model's training timesteps)")
        import numpy as np

        ts = np.round(np.arange(self.T, 0, -self.T / steps)).astype(np.int64) - 1
        return [int(t) for t in ts]

    def stride(self, steps: int) -> int:
        return self.T // steps
