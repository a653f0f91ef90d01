"""pix2pix training of an image-to-image teacher: L1 to the ground truth + a conditional PatchGAN (Isola et al. 2017).

The generator G maps the task's input x to y_hat; the discriminator D sees (x, y) or (x, y_hat) concatenated on channels
and scores every patch. Phases, as for the other GANs: discriminator (hinge loss on real pairs vs generated ones), then
student (l1_weight * |y_hat - y| + adversarial_weight * -D(x, y_hat)). pix2pix weighs L1 by 100 against the GAN term.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.paired import with_input
from ..losses import hinge_d_loss, hinge_g_loss
from ..metrics.restoration import shown_as
from ..utils import eval_mode
from .base import DistillationMethod, StepOutput


class Pix2PixTraining(DistillationMethod):
    phases = ("discriminator", "student")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, l1_weight: float = 100.0, adversarial_weight: float = 1.0,
                 preview_pairs: dict[str, torch.Tensor] | None = None, degradation: tuple[str, float] | None = None):
        super().__init__()
        self.student, self.discriminator = generator, discriminator
        self.l1_weight, self.adversarial_weight = float(l1_weight), float(adversarial_weight)
        if self.adversarial_weight == 0:  # L1 alone: no discriminator phase, none trained
            self.phases = ("student",)
        self._preview = preview_pairs  # a few held-out (input, image) pairs for the TensorBoard grids
        self.degradation = degradation  # (data.task, noise_sigma): how training batches get their inputs

    def trainable(self, phase: str) -> list[nn.Parameter]:
        return list((self.discriminator if phase == "discriminator" else self.student).parameters())

    def forward(self, batch: dict, phase: str) -> StepOutput:
        x, y = with_input(batch, self.degradation)["input"], batch["image"]
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.student(x)
            loss = hinge_d_loss(self.discriminator(torch.cat([x, y], 1)), self.discriminator(torch.cat([x, fake], 1)))
            return StepOutput(loss, {"loss/discriminator": loss.item()})
        y_hat = self.student(x)
        l1 = (y_hat - y).abs().mean()
        if self.adversarial_weight == 0:
            loss = self.l1_weight * l1
            return StepOutput(loss, {"loss/l1": l1.item(), "loss/student": loss.item()})
        adv = hinge_g_loss(self.discriminator(torch.cat([x, y_hat], 1)))
        loss = self.l1_weight * l1 + self.adversarial_weight * adv
        return StepOutput(loss, {"loss/l1": l1.item(), "loss/adversarial": adv.item(), "loss/student": loss.item()})

    @torch.no_grad()
    def preview(self, n: int, module: nn.Module | None = None) -> torch.Tensor | None:
        """Rows of input | output | ground truth for the held-out preview pairs."""
        if self._preview is None:
            return None
        net = module if module is not None else self.student
        device = next(net.parameters()).device
        x, y = self._preview["input"][: max(1, n // 3)].to(device), self._preview["image"][: max(1, n // 3)].to(device)
        with eval_mode(net):
            y_hat = net(x)
        return torch.stack([shown_as(x, y), y_hat, y], 1).flatten(0, 1)
