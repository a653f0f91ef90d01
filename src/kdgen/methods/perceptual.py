from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import _check
from ..metrics.quality import load_feature_net
from ..teacher import Frozen
from .base import GenBatch, LossTerm, TermContext
from .registry import METHODS


@METHODS.register("perceptual")
class PerceptualTerm(LossTerm):
    """MSE between student and teacher images in a frozen feature network's space (the FID feature net by default)."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        features: str = "builtin:featnet-mnist5k"

    def __init__(self, options: "PerceptualTerm.Options", ctx: TermContext):
        super().__init__()
        self.options = options
        net = load_feature_net(options.features, channels=ctx.channels, key="methods.perceptual.features")
        self.featnet = Frozen(net)

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        with torch.no_grad():
            target = self.featnet.module.features(b.teacher_images)
        return F.mse_loss(self.featnet.module.features(b.student_images), target)
