"""Consistency distillation (Song et al. 2023, "Consistency Models"), in the discrete form of latent
consistency models (Luo et al. 2023) that diffusers' LCMScheduler samples.

The consistency function f(x, t) = c_skip(t) x + c_out(t) x_0(net(x, t)) maps any point of a teacher
ODE trajectory to its start. On the teacher's DDIM grid (k = T / solver_steps):

    t_{n+k} ~ grid, x_{t_{n+k}} = a x_0 + s eps            (noised real image)
    x^_{t_n} = DDIM_teacher(x_{t_{n+k}}, t_{n+k} -> t_n)    (the teacher as ODE solver, one step)
    L = d( f_theta(x_{t_{n+k}}, t_{n+k}), f_target(x^_{t_n}, t_n) )

f_target is an EMA of the student (decay `ema`), c_skip/c_out are LCMScheduler's boundary scalings
(c_skip(0) = 1, c_out(0) = 0), d is L2 or pseudo-Huber. Sampling: 1 step (x = f(z, T-1)) or several
(re-noise to the next grid time and apply f again), exactly LCMScheduler.step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import _check
from ..errors import KdgenError
from ..teacher import Frozen
from .diffusion_base import PREDICTION_CHOICE, DiffusionMethod, Round, distance, ema_copy, step_output
from .registry import METHODS

SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0  # LCMScheduler's defaults


def boundary_scalings(t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LCMScheduler.get_scalings_for_boundary_condition_discrete, per sample."""
    s = t.to(like.dtype).clamp(min=0) * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (s.square() + SIGMA_DATA**2)
    c_out = s / (s.square() + SIGMA_DATA**2).sqrt()
    shape = (-1,) + (1,) * (like.dim() - 1)
    return c_skip.view(shape), c_out.view(shape)


@METHODS.register("consistency")
class Consistency(DiffusionMethod):
    """Consistency distillation with an EMA target and the teacher's DDIM as ODE solver; 1- and multi-step (LCM) sampling."""

    sampler = "LCMScheduler"
    keep_teacher_output = False  # measured: a v student beats an epsilon one from an epsilon teacher (see student_prediction)

    @dataclass
    class Options:
        solver_steps: int = field(default=64, metadata=_check(ge=2))  # the teacher DDIM grid (k = T / solver_steps)
        steps: int = field(default=1, metadata=_check(ge=1))  # the student's default sampling steps (any 1..solver_steps works)
        ema: float = field(default=0.95, metadata=_check(ge=0, le=1))  # target network decay (LCM uses 0.95)
        distance: Literal["l2", "huber", "feature"] = "huber"
        huber_c: float = field(default=0.00054, metadata=_check(ge=0))  # c = huber_c * sqrt(pixels) (Song & Dhariwal 2023)
        features: str = "builtin:featnet-mnist5k"  # distance: feature - MSE between this net's features (an LPIPS stand-in)
        student_prediction: PREDICTION_CHOICE = "auto"  # auto: v-prediction for an epsilon teacher near pure noise, else the teacher's
        # a student predicting other than the teacher first learns the teacher's denoiser in its own terms for this many
        # steps (auto: train.steps // 2; 0: never), a round of its own in RUN/rounds/convert-PREDICTION
        convert_steps: int | Literal["auto"] = field(default="auto", metadata=_check(ge=0))

    @classmethod
    def plan(cls, options: "Consistency.Options", teacher) -> list[Round]:
        T = teacher.num_train_timesteps
        if options.solver_steps > T or T % options.solver_steps:
            raise KdgenError(f"methods.consistency.solver_steps={options.solver_steps} must divide the teacher's {T} timesteps")
        if options.steps > options.solver_steps:
            raise KdgenError(
                f"methods.consistency.steps={options.steps} exceeds solver_steps={options.solver_steps}; a consistency student "
                "samples on the solver's grid, so it cannot take more steps than that"
            )
        return [Round(f"steps-{options.steps}", teacher_steps=options.solver_steps, student_steps=options.steps)]

    def __init__(self, options, *, student, teacher, round):
        super().__init__(options, student=student, teacher=teacher, round=round)
        # how diffusers' LCMScheduler must sample this student: on our solver grid, no x_0 clipping
        student.scheduler_config = {**student.scheduler_config, "original_inference_steps": options.solver_steps,
                                    "clip_sample": False, "timestep_scaling": TIMESTEP_SCALING}
        self.target = ema_copy(student)
        self.featnet = None
        if options.distance == "feature":
            from ..metrics.quality import load_feature_net

            self.featnet = Frozen(load_feature_net(options.features, channels=student.channels, key="methods.consistency.features"))

    def train(self, mode: bool = True) -> "Consistency":
        super().train(mode)
        self.target.eval()  # the EMA target gives deterministic targets (no dropout), as the teacher does
        return self

    def consistency_fn(self, net, x: torch.Tensor, t: torch.Tensor, labels) -> torch.Tensor:
        x0, _ = self.student_schedule.to_x0_eps(net(x, t, labels), x, t)  # the student and its EMA target
        c_skip, c_out = boundary_scalings(t, x)
        return c_skip * x + c_out * x0

    @torch.no_grad()
    def _update_target(self) -> None:
        mu = self.options.ema
        for e, p in zip(self.target.parameters(), self.student.parameters()):
            e.lerp_(p.detach(), 1 - mu)

    def distill_step(self, batch: dict, phase: str):
        if self.training:
            self._update_target()  # the student after the previous optimizer step
        x0, labels = batch["image"], self.labels(batch)
        sch, k = self.schedule, self.schedule.T // self.options.solver_steps
        n = torch.randint(0, self.options.solver_steps, (x0.shape[0],), device=x0.device)
        t_start = (n + 1) * k - 1  # LCM's grid k-1, 2k-1, ..., T-1
        t_next = (t_start - k).clamp(min=0)
        x_start = self.noised(x0, t_start)
        with torch.no_grad():
            x_next = sch.ddim_step(self.teacher_out(x_start, t_start, labels), x_start, t_start, t_next, clip=self.teacher_clip)
            target = self.consistency_fn(self.target, x_next, t_next, labels)
        pred = self.consistency_fn(self.student, x_start, t_start, labels)
        if self.featnet is not None:  # gradients flow through the frozen net into pred
            net = self.featnet.module
            loss = F.mse_loss(net.features(pred), net.features(target))
        else:
            c = self.options.huber_c * (x0[0].numel() ** 0.5) if self.options.distance == "huber" else 0.0
            loss = distance(pred, target, self.options.distance, huber_c=c)
        return step_output(loss, consistency=loss)
