"""Plain denoising training of a diffusion model (how `train-teacher` makes a DDPM teacher).

Ho et al. 2020's objective with the model's own parametrisation: t ~ U{0..T-1}, x_t = a_t x_0 + s_t eps,
loss = ||net(x_t, t) - target||^2 where target is eps, v (Salimans & Ho 2022) or x_0. A class-conditional
model sees the null class with probability `label_dropout`, which enables classifier-free guidance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion import Schedule
from ..models.unet import DiffusionModel
from ..sampling import DiffusionSampler
from .base import DistillationMethod, StepOutput


class DenoisingTraining(DistillationMethod):
    def __init__(self, model: DiffusionModel, *, label_dropout: float = 0.1, preview_steps: int = 16):
        super().__init__()
        self.student = model
        self.schedule = Schedule(model.scheduler_config)
        self.label_dropout, self.preview_steps = label_dropout, preview_steps

    def trainable(self, phase: str):
        return self.student.parameters()

    def forward(self, batch: dict, phase: str) -> StepOutput:
        x0 = batch["image"]
        labels = None
        if self.student.num_classes:
            labels = batch["label"].long()
            if self.student.null_class is not None and self.label_dropout > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, int(self.student.null_class)), labels)
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, eps, t)
        loss = F.mse_loss(self.student(x_t, t, labels), self.schedule.target(x0, eps, t))
        return StepOutput(loss, {"loss/denoise": loss.item()})

    def preview(self, n: int = 16, module=None):
        m = module or self.student
        return DiffusionSampler(m, steps=self.preview_steps).sample(n, seed=1234)
