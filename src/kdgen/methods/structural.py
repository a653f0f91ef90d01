"""Structural distillation of a diffusion UNet (BK-SDM, Kim et al. 2023: blocks removed, the student
initialised from the teacher's weights, trained on the teacher's output plus block features).

The student is the teacher's UNet made smaller by `student.width` (channels), `student.layers_per_block`
(resnets per stage) and `student.attention: false` (attention blocks removed), initialised from the
teacher's weights where names and shapes allow. At a random timestep on noised real images:

    L = w_out ||student(x_t, t) - teacher(x_t, t)||^2 + w_feat mean_b ||A_b(h_b^student) - h_b^teacher||^2

with 1x1-conv adapters A_b where channel counts differ. It keeps the teacher's sampler and steps;
compose it with a step method (progressive, consistency, onestep) to also cut the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import _check
from ..errors import KdgenError
from .diffusion_base import BlockFeatures, DiffusionMethod, Round, step_output
from .registry import METHODS


@METHODS.register("structural")
class Structural(DiffusionMethod):
    """Smaller UNet (narrower / fewer blocks / no attention) trained on teacher outputs + block features."""

    @dataclass
    class Options:
        steps: int | None = field(default=None, metadata=_check(ge=1))  # the student's sampling steps; None: the teacher's
        output_weight: float = field(default=1.0, metadata=_check(ge=0))
        feature_weight: float = field(default=1.0, metadata=_check(ge=0))
        layers: list[str] | None = None  # UNet blocks to match; None: every down block, the mid block, the up blocks

    changes_steps = False
    label_dropout = 0.1  # a guided teacher's null class keeps being taught, so the student can still be guided

    @classmethod
    def plan(cls, options: "Structural.Options", teacher) -> list[Round]:
        steps = options.steps or teacher.steps
        if steps > teacher.num_train_timesteps:
            raise KdgenError(f"methods.structural.steps={steps} exceeds the teacher's {teacher.num_train_timesteps} timesteps")
        return [Round(f"structural-steps-{steps}", teacher_steps=steps, student_steps=steps)]

    def __init__(self, options, *, student, teacher, round):
        super().__init__(options, student=student, teacher=teacher, round=round)
        self.features = BlockFeatures(student, teacher, options.layers) if options.feature_weight > 0 else None

    def distill_step(self, batch: dict, phase: str):
        x0, labels = batch["image"], self.labels(batch)
        null = self.teacher.module.null_class
        if labels is not None and null is not None:
            drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, int(null)), labels)
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        x_t = self.noised(x0, t)
        layers = self.features.layers if self.features else []
        with torch.no_grad(), self._taps(self.teacher.module.unet, layers) as t_taps:
            target = self.teacher.module(x_t, t, labels)  # unguided: the features and output of one call
        with self._taps(self.student.unet, layers) as s_taps:
            out = self.student(x_t, t, labels)
        out_loss = F.mse_loss(out, target)
        loss = self.options.output_weight * out_loss
        parts = {"output": out_loss}
        if self.features:
            feat_loss = self.features.loss(s_taps.outputs, t_taps.outputs)
            loss = loss + self.options.feature_weight * feat_loss
            parts["feature"] = feat_loss
        return step_output(loss, **parts)

    @staticmethod
    def _taps(unet, layers):
        from ..taps import FeatureTaps

        return FeatureTaps(unet, layers, role="UNet")
