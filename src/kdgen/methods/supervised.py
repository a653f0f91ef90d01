"""Plain supervised training of a classifier (how `train-features` makes the evaluation feature net)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillationMethod, StepOutput


class SupervisedClassifier(DistillationMethod):
    """Cross-entropy on labelled images, with light random-shift augmentation."""

    def __init__(self, model: nn.Module, *, shift: int = 2):
        super().__init__()
        self.student, self.shift = model, shift

    def trainable(self, phase: str):
        return self.student.parameters()

    def forward(self, batch: dict, phase: str) -> StepOutput:
        x, y = batch["image"], batch["label"].long()
        if self.shift:
            x = random_shift(x, self.shift)
        logits = self.student(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        return StepOutput(loss, {"loss/ce": loss.item(), "train/acc": acc.item()})


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each image by up to `pad` pixels (replicate padding, then a random crop)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    oy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None]).view(n, 1, h, 1).expand(-1, x.shape[1], h, w)
    cols = (ox[:, None] + torch.arange(w, device=x.device)[None]).view(n, 1, 1, w).expand(-1, x.shape[1], h, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]
