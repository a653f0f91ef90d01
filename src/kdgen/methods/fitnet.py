"""FitNets: Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import _check
from ..errors import KdgenError
from ..taps import FeatureTaps, check_layer_names
from ..utils import eval_mode
from .classifier_base import ClassifierContext, ClassifierTerm, ClsBatch
from .registry import METHODS


def probe(model: nn.Module, layers: list[str], example: torch.Tensor, role: str) -> dict[str, torch.Size]:
    """The activation shape (without the batch) of each named layer on `example`."""
    check_layer_names(model, layers, role=role)
    with torch.no_grad(), eval_mode(model), FeatureTaps(model, layers, role=role) as taps:
        model(example[:2])
    return {k: v.shape[1:] for k, v in taps.outputs.items()}


def make_adapter(s_shape: torch.Size, t_shape: torch.Size, where: str) -> nn.Module:
    """Identity when shapes match; a 1x1 conv for feature maps [C, H, W], a linear map for vectors [D]."""
    if s_shape == t_shape:
        return nn.Identity()
    if len(s_shape) == 3 and len(t_shape) == 3:
        return nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False)
    if len(s_shape) == 1 and len(t_shape) == 1:
        return nn.Linear(s_shape[0], t_shape[0], bias=False)
    raise KdgenError(f"{where}: the student's activation {tuple(s_shape)} and the teacher's {tuple(t_shape)} are not both "
                     "feature maps or both vectors; pair a conv layer with a conv layer, or a linear layer with a linear layer")


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNets hint: mean squared error ||r(s) - t||^2 / numel after the adapter r; the student map is resized to
    the teacher's spatial size (bilinear) when they differ. Shapes: [n, C, H, W] or [n, D]."""
    if student_feat.dim() == 4 and student_feat.shape[-2:] != teacher_feat.shape[-2:]:
        student_feat = F.interpolate(student_feat, size=teacher_feat.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(student_feat, teacher_feat)


def paired_layers(student_layers: list[str], teacher_layers: list[str], method: str) -> None:
    if not student_layers or len(student_layers) != len(teacher_layers):
        raise KdgenError(f"methods.{method} needs student_layers and teacher_layers of the same, non-zero length "
                         f"(got {len(student_layers)} and {len(teacher_layers)}); pair each student layer with a teacher layer")


def paired_shapes(options, ctx: ClassifierContext, method: str) -> tuple[list[str], list[str], dict, dict]:
    """The checked layer pairs of a paired-layer term and each layer's output shape (one probe forward each)."""
    paired_layers(options.student_layers, options.teacher_layers, method)
    student_layers, teacher_layers = list(options.student_layers), list(options.teacher_layers)
    return (student_layers, teacher_layers, probe(ctx.student, student_layers, ctx.example, "student"),
            probe(ctx.teacher, teacher_layers, ctx.example, "teacher"))


@METHODS.register("fitnet")
class FitNetTerm(ClassifierTerm):
    """FitNets hints (Romero et al. 2015): MSE between paired intermediate layers, through a learned adapter."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        student_layers: list[str] = field(default_factory=list)  # e.g. [hidden.1] or [blocks.1]
        teacher_layers: list[str] = field(default_factory=list)  # the same length, paired in order

    def __init__(self, options: "FitNetTerm.Options", ctx: ClassifierContext):
        super().__init__()
        self.options = options
        self.student_layers, self.teacher_layers, s_shapes, t_shapes = paired_shapes(options, ctx, "fitnet")
        self.adapters = nn.ModuleList(
            make_adapter(s_shapes[s], t_shapes[t], f"methods.fitnet {s} -> {t}") for s, t in zip(self.student_layers, self.teacher_layers)
        )

    def loss(self, b: ClsBatch) -> torch.Tensor:
        pairs = zip(self.adapters, self.student_layers, self.teacher_layers)
        return sum(hint_loss(a(b.student_feats[s]), b.teacher_feats[t]) for a, s, t in pairs) / len(self.adapters)
