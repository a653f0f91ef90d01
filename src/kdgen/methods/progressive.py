"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models").

Each round halves the sampling steps: the student, initialised from the round's teacher, learns to
take in ONE DDIM step what the teacher takes in TWO. For z_t at a student timestep t (stride T/N):

    z' = DDIM_teacher(z_t, t -> t - T/2N),  z'' = DDIM_teacher(z', t - T/2N -> t - T/N)
    x~ = (z'' - (s''/s_t) z_t) / (a'' - (s''/s_t) a_t)          (the x_0 one student step must predict)
    L  = w(t) ||x^_student(z_t) - x~||^2,  w = max(SNR(t), 1)    ("truncated SNR" weighting, their eq. 10)

Rounds chain (64 -> 32 -> ... -> to_steps); each round's student is the next round's teacher and
is saved in RUN/rounds/steps-N/ as a diffusers folder, so every stop point can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..config import _check
from ..errors import KdgenError
from .diffusion_base import PREDICTION_CHOICE, DiffusionMethod, Round, check_power_of_two, step_output
from .registry import METHODS


@METHODS.register("progressive")
class Progressive(DiffusionMethod):
    """Progressive distillation: each round halves the DDIM steps (2 teacher steps -> 1 student step)."""

    @dataclass
    class Options:
        from_steps: int = field(default=64, metadata=_check(ge=2))  # the teacher's DDIM steps the first round matches
        to_steps: int = field(default=4, metadata=_check(ge=1))  # the last round's student steps
        # auto: truncated-snr (max(SNR, 1), Salimans & Ho) for v/x students; snr (the epsilon-space error) for an epsilon
        # student, whose x-space error near pure noise is its epsilon error times sigma/alpha
        weighting: Literal["auto", "truncated-snr", "snr", "snr+1", "none"] = "auto"
        student_prediction: PREDICTION_CHOICE = "auto"  # auto: the teacher's own (measured best for progressive)
        # a student predicting other than the teacher first learns the teacher's denoiser in its own terms for this many
        # steps (auto: train.steps // 2; 0: never), a round of its own in RUN/rounds/convert-PREDICTION
        convert_steps: int | Literal["auto"] = field(default="auto", metadata=_check(ge=0))

    @classmethod
    def plan(cls, options: "Progressive.Options", teacher) -> list[Round]:
        check_power_of_two(options.from_steps, "methods.progressive.from_steps")
        check_power_of_two(options.to_steps, "methods.progressive.to_steps")
        if options.to_steps >= options.from_steps:
            raise KdgenError(
                f"methods.progressive.to_steps={options.to_steps} is not below from_steps={options.from_steps}; "
                "each round halves the steps, so to_steps must be from_steps / 2, / 4, ..."
            )
        if options.from_steps > teacher.num_train_timesteps:
            raise KdgenError(f"methods.progressive.from_steps={options.from_steps} exceeds the teacher's {teacher.num_train_timesteps} timesteps")
        if teacher.num_train_timesteps % options.from_steps:
            raise KdgenError(
                f"the teacher's {teacher.num_train_timesteps} timesteps do not split into {options.from_steps} equal DDIM steps, so "
                "two teacher steps would not land on one student step; use a from_steps that divides it (or a teacher with 1024 timesteps)"
            )
        rounds, n = [], options.from_steps
        while n > options.to_steps:
            rounds.append(Round(f"steps-{n // 2}", teacher_steps=n, student_steps=n // 2))
            n //= 2
        return rounds

    def distill_step(self, batch: dict, phase: str) -> torch.Tensor:
        x0, labels = batch["image"], self.labels(batch)
        sch, n_steps = self.schedule, self.round.student_steps
        grid = torch.tensor(sch.ddim_timesteps(n_steps), device=x0.device)
        t = grid[torch.randint(0, n_steps, (x0.shape[0],), device=x0.device)]
        half, full = sch.T // (2 * n_steps), sch.T // n_steps
        t_mid, t_end = t - half, t - full
        z_t = self.noised(x0, t)
        # 1. two teacher DDIM steps
        z_mid = sch.ddim_step(self.teacher_out(z_t, t, labels), z_t, t, t_mid)
        z_end = sch.ddim_step(self.teacher_out(z_mid, t_mid, labels), z_mid, t_mid, t_end)
        # 2. the x_0 that takes z_t to z_end in one DDIM step
        a_t, s_t = sch.alpha_sigma(t, x0)
        a_e, s_e = sch.alpha_sigma(t_end, x0)
        ratio = s_e / s_t
        x_target = (z_end - ratio * z_t) / (a_e - ratio * a_t)
        # 3. the student's x_0 and the weighted loss
        x_hat, _ = self.student_schedule.to_x0_eps(self.student(z_t, t, labels), z_t, t)
        snr = (a_t / s_t).square()
        kind = self.options.weighting
        if kind == "auto":
            kind = "snr" if self.student_schedule.prediction_type == "epsilon" else "truncated-snr"
        w = {"truncated-snr": snr.clamp(min=1.0), "snr": snr, "snr+1": snr + 1, "none": torch.ones_like(snr)}[kind]
        w = w.clamp(max=1e4)  # near t = 0 the SNR explodes; the paper's weighting caps it in practice too
        err = (x_hat - x_target).square().flatten(1).mean(1, keepdim=True).view_as(w)
        loss = (w * err).mean()
        return step_output(loss, progressive=loss)
