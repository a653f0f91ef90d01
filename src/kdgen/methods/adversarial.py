from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..config import _check
from ..errors import KdgenError
from ..losses import hinge_d_loss, hinge_g_loss
from ..models.loading import build_model, load_model
from ..teacher import teacher_discriminator_path
from .base import GenBatch, LossTerm, TermContext
from .registry import METHODS

log = logging.getLogger("kdgen")


@METHODS.register("adversarial")
class AdversarialTerm(LossTerm):
    """Hinge GAN loss against a discriminator on real images; phases (discriminator, student)."""

    phases = ("discriminator", "student")
    needs_teacher = False

    @dataclass
    class Options:
        weight: float = field(default=0.01, metadata=_check(ge=0))
        init: Literal["auto", "teacher", "random"] = "auto"  # auto: the teacher's discriminator when one ships
        width: float = field(default=1.0, metadata=_check(gt=0))  # of a randomly initialised discriminator
        discriminator: str | None = None  # a discriminator folder of your own (kdgen model folder); None: as init says

    def __init__(self, options: "AdversarialTerm.Options", ctx: TermContext, *, discriminator: torch.nn.Module | None = None):
        super().__init__()
        self.options = options
        if discriminator is not None:  # given by the caller (train-teacher builds its own)
            self.discriminator = discriminator
            return
        if options.discriminator is not None:  # the user's own (e.g. the one their GAN teacher was trained with)
            if options.init == "random":
                raise KdgenError("methods.adversarial.discriminator names a trained discriminator and init=random asks for a fresh one; keep one")
            self.discriminator = load_model(options.discriminator).train().requires_grad_(True)
            return
        shipped = teacher_discriminator_path(ctx.teacher_path) if ctx.teacher_path is not None else None
        if options.init == "teacher" and shipped is None:
            raise KdgenError(
                "methods.adversarial.init=teacher but no discriminator ships beside the teacher (<teacher>/discriminator); "
                "use init=auto or init=random"
            )
        if options.init != "random" and shipped is not None:
            self.discriminator = load_model(shipped).train()
            self.discriminator.requires_grad_(True)
        else:
            if options.init == "auto" and ctx.teacher_path is not None:
                log.info("no discriminator ships with the teacher; the adversarial term starts from a random one")
            if ctx.in_channels is not None:  # image-to-image: a conditional PatchGAN on (input, output)
                self.discriminator = build_model("patchgan-discriminator", {"in_channels": ctx.in_channels + ctx.channels,
                                                                            "width": options.width})
            else:
                self.discriminator = build_model(
                    "dcgan-discriminator", {"image_size": ctx.image_size, "channels": ctx.channels, "width": options.width}
                )

    def _score(self, images: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(images if condition is None else torch.cat([condition, images], 1))

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        return hinge_g_loss(self._score(b.student_images, b.condition))

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, condition: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        r, f = self._score(real, condition), self._score(fake, condition)
        return hinge_d_loss(r, f), {"d/real": r.mean().item(), "d/fake": f.mean().item()}

    def trainable(self, phase: str) -> list:
        return list(self.discriminator.parameters()) if phase == "discriminator" else []
