from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..config import _check
from ..losses import output_distance
from .base import GenBatch, LossTerm, TermContext
from .registry import METHODS


@METHODS.register("output")
class OutputTerm(LossTerm):
    """Pixel L1/L2 between student and teacher images for the same latent z (GAN Compression, TinyGAN)."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        distance: Literal["l1", "l2"] = "l1"

    def __init__(self, options: "OutputTerm.Options", ctx: TermContext):
        super().__init__()
        self.options = options

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        return output_distance(b.student_images, b.teacher_images, self.options.distance)


@METHODS.register("truth")
class TruthTerm(OutputTerm):
    """Pixel L1/L2 between the student's image and a paired task's ground truth (GAN Compression's paired L_recon)."""

    needs_teacher = False  # the same options as `output`: weight, distance
    paired_only = True  # only image-to-image runs on a paired task have a ground truth

    def __init__(self, options: "OutputTerm.Options", ctx: TermContext):
        super().__init__(options, ctx)
        if not ctx.paired:
            from ..errors import KdgenError

            raise KdgenError("methods.truth pulls the student to a paired task's ground truth; this run has none (a noise -> image "
                             "generator, or data.task=none) - remove it, or set data.task to sr4, denoise or colorize")

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        return output_distance(b.student_images, b.real, self.options.distance)
