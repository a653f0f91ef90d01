"""Attention transfer: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import _check
from ..errors import KdgenError
from .classifier_base import ClassifierContext, ClassifierTerm, ClsBatch
from .fitnet import paired_shapes
from .registry import METHODS


def attention_map(feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Q = vec(sum_c |A_c|^2) / ||vec(sum_c |A_c|^2)||_2 (activation-based, p = 2). [n, C, H, W] -> [n, H*W];
    a vector activation [n, D] gives its squared entries, normalised. `size` resizes the map first."""
    amap = feat.pow(2).mean(1, keepdim=True) if feat.dim() == 4 else feat.pow(2)
    if size is not None and feat.dim() == 4 and amap.shape[-2:] != size:
        amap = F.interpolate(amap, size=size, mode="bilinear", align_corners=False)
    return F.normalize(amap.flatten(1), dim=1)


def at_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_i || Q_s,i - Q_t,i ||_2^2 (Zagoruyko & Komodakis 2017, eq. 2 with p = 2, squared as in their code);
    the student's map is resized to the teacher's spatial size. Channel counts may differ."""
    size = tuple(teacher_feat.shape[-2:]) if teacher_feat.dim() == 4 else None
    return (attention_map(student_feat, size) - attention_map(teacher_feat)).pow(2).sum(1).mean()


@METHODS.register("attention")
class AttentionTerm(ClassifierTerm):
    """Attention transfer (Zagoruyko & Komodakis 2017): match normalised spatial attention maps of paired layers."""

    @dataclass
    class Options:
        weight: float = field(default=1000.0, metadata=_check(ge=0))  # the paper's beta = 1e3
        student_layers: list[str] = field(default_factory=list)
        teacher_layers: list[str] = field(default_factory=list)

    def __init__(self, options: "AttentionTerm.Options", ctx: ClassifierContext):
        super().__init__()
        self.options = options
        self.student_layers, self.teacher_layers, s_shapes, t_shapes = paired_shapes(options, ctx, "attention")
        for s, t in zip(self.student_layers, self.teacher_layers):
            a, b = s_shapes[s], t_shapes[t]
            if len(a) != len(b) or (len(a) == 1 and a != b):
                raise KdgenError(f"methods.attention {s} -> {t}: shapes {tuple(a)} and {tuple(b)} give attention maps of different "
                                 "sizes; pair feature maps with feature maps, or vectors of the same length")

    def loss(self, b: ClsBatch) -> torch.Tensor:
        pairs = zip(self.student_layers, self.teacher_layers)
        return sum(at_loss(b.student_feats[s], b.teacher_feats[t]) for s, t in pairs) / len(self.student_layers)
