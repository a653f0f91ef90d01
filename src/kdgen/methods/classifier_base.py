"""Classic knowledge distillation for classifiers: the loss-term interface and the method that sums them.

A classifier recipe names one or more registered terms (hinton, dkd, fitnet, attention), each with a
`weight`; `ClassifierDistiller` runs the frozen teacher and the student once per step (with feature taps
on the layers the terms ask for) and backpropagates the weighted sum:

    methods:
      hinton: {temperature: 4, alpha: 0.1}
      fitnet: {weight: 0.5, student_layers: [hidden.1], teacher_layers: [hidden.1]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from ..errors import KdgenError
from ..taps import FeatureTaps
from ..teacher import Frozen
from ..transfer import IGNORE
from .base import DistillationMethod, StepOutput
from .supervised import random_shift


@dataclass
class ClsBatch:
    """What one classifier step knows: the loss terms read from it."""

    student_logits: torch.Tensor  # [n, K]
    teacher_logits: torch.Tensor  # [n, K], no grad
    labels: torch.Tensor | None  # [n] or None when the data has none; IGNORE (-100) marks a transfer-set image
    student_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ClassifierContext:
    """What a term may look at when it is built: both networks and one example batch of images."""

    student: nn.Module
    teacher: nn.Module
    example: torch.Tensor  # [n, C, H, W]
    has_labels: bool = True
    transfer: bool = False  # unlabelled transfer-set images join the batches (data.transfer)


class ClassifierTerm(nn.Module):
    """One registered loss of a classifier distillation; `options.weight` scales it in the sum."""

    student_layers: list[str] = []
    teacher_layers: list[str] = []
    needs_true_class: bool = False  # True: every image needs a label (a transfer set, whose images have none, is refused)

    def loss(self, b: ClsBatch) -> torch.Tensor:
        raise NotImplementedError


def refuse_true_class_terms(terms: dict[str, ClassifierTerm]) -> None:
    """Transfer-set images have no label: terms that need the true class of every image cannot train on them."""
    if strict := [n for n, t in terms.items() if t.needs_true_class]:
        raise KdgenError(f"methods {strict} split the teacher's output at the true class, and data.transfer adds images without one; "
                         "use hinton (its hard-label part skips them) or remove data.transfer")


def _check_same_classes(student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        ks, kt = student.eval()(example[:2]).shape[1], teacher(example[:2]).shape[1]
    student.train()
    if ks != kt:
        raise KdgenError(f"the student predicts {ks} classes and the teacher {kt}; set the student's num_classes to {kt}")
    return kt


class ClassifierDistiller(DistillationMethod):
    """Student classifier trained on the weighted sum of registered terms against a frozen teacher.

    `shift`: random translation (pixels) of each training batch, the same images shown to both networks.
    `transfer`: a pool of unlabelled images (kdgen.transfer); `transfer_batch` of them (None: as many as the batch has),
    drawn at random, join every training batch, labelled IGNORE so the hard-label terms skip them.
    """

    def __init__(self, *, student: nn.Module, teacher: nn.Module, terms: dict[str, ClassifierTerm],
                 weights: dict[str, float], example: torch.Tensor, shift: int = 0,
                 transfer: torch.Tensor | None = None, transfer_batch: int | None = None):
        super().__init__()
        if not terms:
            raise KdgenError("no methods given for a classifier teacher; name one of hinton, dkd, fitnet, attention (see `kdgen methods`)")
        self.student, self.teacher = student, Frozen(teacher)
        _check_same_classes(student, self.teacher, example)
        self.terms = nn.ModuleDict(terms)
        self.weights, self.shift = dict(weights), shift
        if transfer is not None and tuple(transfer.shape[1:]) != tuple(example.shape[1:]):
            raise KdgenError(f"the transfer images are {tuple(transfer.shape[1:])} and the training images {tuple(example.shape[1:])}; "
                             "use a data.transfer generator that makes images of the training shape")
        if transfer is not None:
            refuse_true_class_terms(terms)
        self.transfer, self.transfer_batch = transfer, transfer_batch  # the pool is a plain attribute: never checkpointed
        self.register_buffer("transfer_seen", torch.zeros((), dtype=torch.long))  # pool images trained on (checkpointed)
        self.s_layers = sorted({n for t in terms.values() for n in t.student_layers})
        self.t_layers = sorted({n for t in terms.values() for n in t.teacher_layers})

    def trainable(self, phase: str) -> Iterable[nn.Parameter]:
        return [p for p in [*self.student.parameters(), *self.terms.parameters()] if p.requires_grad]

    def forward(self, batch: dict, phase: str) -> StepOutput:
        # 1. the batch (plus transfer images, optionally shifted), the same images for teacher and student
        x, labels = batch["image"], batch.get("label")
        n = len(x)
        if self.transfer is not None and self.training:
            extra = self.transfer[torch.randint(len(self.transfer), (self.transfer_batch or n,))].to(x.device, x.dtype)
            x = torch.cat([x, extra])
            self.transfer_seen += len(extra)
            if labels is not None:
                labels = torch.cat([labels.long(), labels.new_full((len(extra),), IGNORE, dtype=torch.long)])
        x = random_shift(x, self.shift) if self.shift and self.training else x
        # 2. teacher targets (frozen, no grad) and student prediction, with taps where terms need features
        with FeatureTaps(self.teacher.module, self.t_layers, role="teacher") as t_taps:
            t_logits = self.teacher(x)
        with FeatureTaps(self.student, self.s_layers, role="student") as s_taps:
            s_logits = self.student(x)
        b = ClsBatch(s_logits, t_logits.detach(), None if labels is None else labels.long(),
                     dict(s_taps.outputs), {k: v.detach() for k, v in t_taps.outputs.items()})
        # 3. the weighted sum of the terms
        parts = {name: term.loss(b) for name, term in self.terms.items()}
        loss = sum(self.weights[name] * part for name, part in parts.items())
        logs = {f"loss/{name}": float(part.detach()) for name, part in parts.items()}
        logs["train/agreement"] = float((s_logits[:n].argmax(1) == t_logits[:n].argmax(1)).float().mean())  # the dataset's images
        return StepOutput(loss, logs)
