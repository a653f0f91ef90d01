"""Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", arXiv:1503.02531."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import _check
from ..errors import KdgenError
from .classifier_base import ClassifierContext, ClassifierTerm, ClsBatch
from .registry import METHODS


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch. Logits [n, K] -> scalar.

    The T^2 factor keeps the gradient scale of the soft term roughly independent of T (Hinton et al. 2015, sec. 2).
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None, *,
                temperature: float, alpha: float) -> torch.Tensor:
    """L = alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T)).

    Hinton, Vinyals & Dean (2015). `labels` may be None only when alpha = 0 (teacher-only distillation).
    Shapes: logits [n, K], labels [n] of class indices.
    """
    soft = soft_kl(student_logits, teacher_logits, temperature)
    if alpha == 0:
        return soft
    if labels is None:
        raise KdgenError("the hinton term's alpha > 0 needs labels, and this data has none; set methods.hinton.alpha=0")
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha) * soft


@METHODS.register("hinton")
class HintonTerm(ClassifierTerm):
    """Classic KD (Hinton et al. 2015): alpha * hard-label CE + (1 - alpha) * T^2 * KL of softened outputs."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        temperature: float = field(default=4.0, metadata=_check(gt=0))  # T
        alpha: float = field(default=0.1, metadata=_check(ge=0, le=1))  # weight of the hard-label term; 0: teacher only

    def __init__(self, options: "HintonTerm.Options", ctx: ClassifierContext):
        super().__init__()
        self.options = options
        if options.alpha > 0 and not ctx.has_labels:
            raise KdgenError(f"methods.hinton.alpha={options.alpha} needs labels, and this data has none; set methods.hinton.alpha=0")

    def loss(self, b: ClsBatch) -> torch.Tensor:
        o = self.options
        return hinton_loss(b.student_logits, b.teacher_logits, b.labels, temperature=o.temperature, alpha=o.alpha)
