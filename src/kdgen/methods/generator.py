"""GeneratorDistiller: a student generator trained by a weighted sum of registered loss terms.

With a teacher it distils (output / feature / perceptual / adversarial, any mix); without one and
with only the adversarial term it is plain GAN training (how `train-teacher` and the from-scratch
baseline run, through the same trainer).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import KdgenError
from ..sampling import GeneratorSampler
from ..taps import FeatureTaps
from ..teacher import Frozen
from ..utils import device_of, eval_mode
from .base import DistillationMethod, GenBatch, LossTerm, StepOutput


class GeneratorDistiller(DistillationMethod):
    """`preview_inputs` makes it an image-to-image distiller: the models take batch["input"] (the task's degraded image)
    instead of noise, the adversarial term's discriminator sees (input, image) pairs, and its real images are the ground
    truth - or, with `real_from_teacher` (unpaired data: inputs alone), the teacher's outputs (GAN Compression)."""

    def __init__(self, *, student: nn.Module, teacher: nn.Module | None, terms: dict[str, LossTerm], z_shape: tuple[int, ...] = (),
                 preview_inputs: torch.Tensor | None = None, real_from_teacher: bool = False,
                 degradation: tuple[str, float] | None = None):
        super().__init__()
        if not terms:
            raise KdgenError("no methods given; name at least one in 'methods' (see `kdgen methods`)")
        if teacher is None and any(t.needs_teacher for t in terms.values()):
            needy = [n for n, t in terms.items() if t.needs_teacher]
            raise KdgenError(f"methods {needy} need a teacher; give teacher.path or use only 'adversarial'")
        self.student = student
        self.teacher = Frozen(teacher) if teacher is not None else None
        self.terms = nn.ModuleDict(terms)
        self.z_shape = tuple(z_shape)
        self.phases = tuple(p for p in ("discriminator", "student") if any(p in t.phases for t in terms.values()))
        self._student_layers = sorted({n for t in terms.values() for n in t.student_layers})
        self._teacher_layers = sorted({n for t in terms.values() for n in t.teacher_layers})
        self._uses_teacher = any(t.needs_teacher for t in terms.values())
        self.teacher_layers = self._teacher_layers  # what a teacher cache must hold
        self.conditional, self.real_from_teacher, self.degradation = preview_inputs is not None, real_from_teacher, degradation
        self._preview_z = preview_inputs if self.conditional else torch.randn(16, *self.z_shape, generator=torch.Generator().manual_seed(1234))

    def trainable(self, phase: str) -> Iterable[nn.Parameter]:
        params = [p for t in self.terms.values() for p in t.trainable(phase)]
        if phase == "student":
            params = list(self.student.parameters()) + params
        return params

    def forward(self, batch: dict, phase: str) -> StepOutput:
        real = batch["image"]
        cached = "teacher_image" in batch  # pairs from a teacher cache (kdgen.cache): the teacher does not run
        if self.conditional:
            from ..data.paired import with_input

            z = with_input(batch, self.degradation)["input"]  # the image the task degraded: what teacher and student both map
            if self.real_from_teacher and phase == "discriminator":
                with torch.no_grad():
                    real = self.teacher(z)
        else:
            z = batch["z"] if cached and phase == "student" else torch.randn(real.shape[0], *self.z_shape, device=real.device)
        if phase == "discriminator":
            return self._discriminator_step(real, z)
        b = GenBatch(z=z, real=real, condition=z if self.conditional else None)
        # 1. teacher targets (frozen, no grad), with its taps - or the cached ones
        if cached:
            b.teacher_images = batch["teacher_image"]
            b.teacher_feats = {n: batch[f"teacher_feat.{n}"] for n in self._teacher_layers}
        elif self.teacher is not None and self._uses_teacher:
            with FeatureTaps(self.teacher.module, self._teacher_layers, role="teacher") as taps:
                b.teacher_images = self.teacher(z)
            b.teacher_feats = taps.outputs
        # 2. student prediction, with its taps
        with FeatureTaps(self.student, self._student_layers, role="student") as taps:
            b.student_images = self.student(z)
        b.student_feats = taps.outputs
        # 3. weighted sum of the terms
        loss = torch.zeros((), device=real.device)
        logs = {}
        for name, term in self.terms.items():
            part = term.student_loss(b)
            loss = loss + term.options.weight * part
            logs[f"loss/{name}"] = part.item()
        logs["loss/student"] = loss.item()
        return StepOutput(loss, logs)

    def _discriminator_step(self, real: torch.Tensor, z: torch.Tensor) -> StepOutput:
        with torch.no_grad():
            fake = self.student(z)
        loss = torch.zeros((), device=real.device)
        logs: dict[str, float] = {}
        for term in self.terms.values():
            if "discriminator" in term.phases:
                part, extra = term.discriminator_loss(real, fake, condition=z if self.conditional else None)
                loss = loss + part
                logs.update(extra)
        logs["loss/discriminator"] = loss.item()
        return StepOutput(loss, logs)

    def student_sampler(self, module: nn.Module | None = None) -> GeneratorSampler:
        return GeneratorSampler(module or self.student, z_shape=self.z_shape)

    def preview(self, n: int = 16, module: nn.Module | None = None) -> torch.Tensor:
        m = module or self.student
        with eval_mode(m):
            return m(self._preview_z[:n].to(device_of(m)))


