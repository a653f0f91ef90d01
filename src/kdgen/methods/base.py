"""The method interface the trainer sees, and the loss-term interface the generator methods share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from ..teacher import Frozen


@dataclass
class StepOutput:
    loss: torch.Tensor  # the only thing backpropagated
    logs: dict[str, float] = field(default_factory=dict)  # detached parts, e.g. {"loss/output": ...}


class DistillationMethod(nn.Module):
    """An nn.Module holding the student and every other trainable part.

    forward(batch, phase) -> StepOutput; the trainer loops over `phases` and steps one optimizer
    per phase over `trainable(phase)`.
    """

    phases: tuple[str, ...] = ("student",)
    student: nn.Module

    def trainable(self, phase: str) -> Iterable[nn.Parameter]:
        raise NotImplementedError

    def preview(self, n: int, module: nn.Module | None = None) -> torch.Tensor | None:
        """A few outputs of `module` (default: the student) for TensorBoard; None if the method makes no images."""
        return None

    def frozen_prefixes(self) -> list[str]:
        return [name + "." for name, m in self.named_modules() if isinstance(m, Frozen)]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """State dict without frozen inputs (teacher, fixed feature nets)."""
        skip = tuple(self.frozen_prefixes())
        return {k: v for k, v in self.state_dict().items() if not (skip and k.startswith(skip))}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        skip = tuple(self.frozen_prefixes())
        missing = [k for k in missing if not (skip and k.startswith(skip))]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match this run's method (missing {missing[:3]}, unexpected {unexpected[:3]})")


@dataclass
class GenBatch:
    """What one generator step knows: the loss terms read from it."""

    z: torch.Tensor
    real: torch.Tensor
    student_images: torch.Tensor | None = None
    teacher_images: torch.Tensor | None = None
    student_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    condition: torch.Tensor | None = None  # image-to-image: the input image a conditional discriminator sees beside the output


@dataclass
class TermContext:
    """What a loss term may look at when it is built."""

    student: nn.Module
    teacher: nn.Module | None  # None when training from scratch
    teacher_path: Any = None
    image_size: int = 28
    channels: int = 1
    z_shape: tuple[int, ...] = (100,)
    in_channels: int | None = None  # image-to-image: the input's channels (a conditional discriminator takes input + output)
    paired: bool = False  # image-to-image with a ground truth for each input (data.task other than none)


class LossTerm(nn.Module):
    """One registered loss of a generator method. `options.weight` scales it in the sum."""

    phases: tuple[str, ...] = ("student",)
    needs_teacher = True
    student_layers: list[str] = []
    teacher_layers: list[str] = []

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        raise NotImplementedError

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def trainable(self, phase: str) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad] if phase == "student" else []
