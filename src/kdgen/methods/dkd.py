"""Decoupled Knowledge Distillation: Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import _check
from ..errors import KdgenError
from .classifier_base import ClassifierContext, ClassifierTerm, ClsBatch
from .registry import METHODS


def _kl(p_t: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
    """sum_k p_t log(p_t / p_s), batch mean; zero-probability teacher entries contribute 0."""
    return (torch.xlogy(p_t, p_t) - p_t * torch.log(p_s.clamp_min(1e-12))).sum(1).mean()


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
             temperature: float, alpha: float, beta: float) -> torch.Tensor:
    """DKD = alpha * TCKD + beta * NCKD (Zhao et al., CVPR 2022, eq. 7), both scaled by T^2.

    With p = softmax(z / T) and target class y:
      TCKD = KL([p_t(y), 1 - p_t(y)] || [p_s(y), 1 - p_s(y)])         (target vs. all non-target, binary)
      NCKD = KL(softmax(t / T) over k != y || softmax(s / T) over k != y)  (among the non-target classes)
    Classic KD equals TCKD + (1 - p_t(y)) * NCKD; DKD frees NCKD from that suppressing factor.
    Shapes: logits [n, K], labels [n].
    """
    t = temperature
    target = F.one_hot(labels, student_logits.shape[1]).bool()
    p_s, p_t = F.softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1)
    bin_s = torch.stack([p_s[target], 1 - p_s[target]], 1)
    bin_t = torch.stack([p_t[target], 1 - p_t[target]], 1)
    tckd = _kl(bin_t, bin_s)
    masked_s = (student_logits / t).masked_fill(target, -1e9)  # the target class removed from both
    masked_t = (teacher_logits / t).masked_fill(target, -1e9)
    nckd = F.kl_div(F.log_softmax(masked_s, 1), F.softmax(masked_t, 1), reduction="none").masked_fill(target, 0).sum(1).mean()
    return t**2 * (alpha * tckd + beta * nckd)


def warmup_factor(step: int, warmup: int) -> float:
    """min(step / warmup, 1): the linear ramp of the DKD terms over the first `warmup` training steps.

    Zhao et al. (2022) multiply the KD part (not the cross-entropy) by min(epoch / warmup, 1), warmup = 20
    epochs on CIFAR-100 (mdistiller's DKD); here the ramp counts optimizer steps. warmup = 0: no ramp.
    """
    return 1.0 if warmup <= 0 else min(step / warmup, 1.0)


@METHODS.register("dkd")
class DKDTerm(ClassifierTerm):
    """Decoupled KD (Zhao et al., CVPR 2022): ce * CE + ramp * (alpha * TCKD + beta * NCKD), needs labels.

    `warmup` (steps) ramps the KD part linearly from 1/warmup to 1 as in the paper; the count of training
    steps seen is a buffer, so it is saved in checkpoints and a resumed run continues the ramp.
    """

    needs_true_class = True

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        temperature: float = field(default=4.0, metadata=_check(gt=0))
        alpha: float = field(default=1.0, metadata=_check(ge=0))  # target-class term (TCKD)
        beta: float = field(default=8.0, metadata=_check(ge=0))  # non-target-class term (NCKD)
        ce: float = field(default=1.0, metadata=_check(ge=0))  # hard-label cross-entropy
        warmup: int = field(default=0, metadata=_check(ge=0))  # steps over which the KD part ramps up linearly; 0: none

    def __init__(self, options: "DKDTerm.Options", ctx: ClassifierContext):
        super().__init__()
        self.options = options
        if not ctx.has_labels:
            raise KdgenError("methods.dkd splits the teacher's output at the true class, and this data has no labels; use hinton with alpha=0")
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))  # training steps so far, for the warm-up

    def loss(self, b: ClsBatch) -> torch.Tensor:
        o = self.options
        if b.labels is None:
            raise KdgenError("methods.dkd needs labels in every batch; use hinton with alpha=0 for unlabelled data")
        # 1. the warm-up ramp: one more training step seen (evaluation passes do not count)
        if self.training:
            self.steps_seen += 1
        ramp = warmup_factor(int(self.steps_seen), o.warmup)
        # 2. hard labels plus the ramped decoupled KD terms
        kd = dkd_loss(b.student_logits, b.teacher_logits, b.labels, temperature=o.temperature, alpha=o.alpha, beta=o.beta)
        return o.ce * F.cross_entropy(b.student_logits, b.labels) + ramp * kd
