"""What the diffusion methods share: rounds, the frozen teacher's prediction, block-feature taps.

A diffusion method is a whole DistillationMethod (not a loss term): `plan()` says which rounds it
runs (progressive distillation runs one per halving; the others run one), and each round trains one
student against that round's teacher. The trainer sees `forward(batch, phase) -> StepOutput` as
for any other method.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import Schedule
from ..errors import KdgenError
from ..models.unet import DiffusionModel
from ..sampling import DiffusionSampler
from ..taps import FeatureTaps, check_layer_names
from ..teacher import Frozen
from ..utils import device_of, eval_mode
from .base import DistillationMethod, StepOutput

log = logging.getLogger("kdgen")

STEP_METHODS = ("progressive", "consistency", "onestep")
PREDICTION_CHOICE = Literal["auto", "epsilon", "v_prediction", "sample"]  # see student_prediction()


@dataclass
class Round:
    name: str  # run sub-folder of this round's student, e.g. "steps-16"
    teacher_steps: int  # the teacher's DDIM steps this round imitates
    student_steps: int  # the student's sampling steps once trained
    convert: bool = False  # a conversion round: same steps, the student learns the teacher's denoiser in its own parameterisation
    train_steps: int | None = None  # this round's optimizer steps (None: train.steps)


def check_power_of_two(value: int, key: str) -> None:
    if value < 1 or value & (value - 1):
        raise KdgenError(f"{key}={value} is not a power of two; progressive distillation halves the steps each round (e.g. 64, 32, ..., 1)")


def student_prediction(teacher: DiffusionModel, schedule: Schedule, asked: str = "auto", *, keep_teacher_output: bool = True,
                       warn: bool = True) -> str:
    """What the few-step student predicts.

    Near pure noise an epsilon net's x_0 = (x - s eps) / a carries its error times 1/a (156x at the end of DDPM's
    linear schedule); Salimans & Ho (2022) distil into v- or x-prediction for that reason. A student that changes
    parameterisation first gets a conversion round (DiffusionMethod.rounds). Measured on an epsilon mnist5k DDPM
    (benchmarks/RESULTS.md, diffusion_epsilon*; the teacher's own 4-step DDIM scores FID 23.7):
        progressive, 4 steps:  epsilon student 10.9, v student (converted) 23.5  -> keeps the teacher's output
        consistency, 4 steps:  v student (converted) 13.5, epsilon student 53.6 (1 step: 2057)  -> predicts v
    `auto` follows those figures through each method's `keep_teacher_output`; a one-step student predicts v."""
    a_last = float(schedule.alphas_cumprod[-1].sqrt())
    low_snr_eps = teacher.prediction_type == "epsilon" and a_last < 0.1
    if asked == "auto":
        return "v_prediction" if low_snr_eps and not keep_teacher_output else teacher.prediction_type
    if warn and asked == "epsilon" and low_snr_eps and not keep_teacher_output:
        log.warning("the student predicts epsilon, and the teacher's schedule ends at sqrt(alpha_cumprod) = %.1e, where its x_0 "
                    "errors are multiplied by %.0f; student_prediction: auto (v-prediction) is the stable choice", a_last, 1 / a_last)
    return asked


class DiffusionMethod(DistillationMethod):
    """One round: a trainable student (a DiffusionModel) against a frozen teacher."""

    sampler = "DDIMScheduler"  # how the student is sampled (and saved for diffusers)
    needs_data = True
    changes_steps = True  # progressive, consistency, onestep: the student learns the teacher's *guided* multi-step map
    keep_teacher_output = True  # an epsilon teacher's student keeps predicting epsilon (see student_prediction)

    def __init__(self, options: Any, *, student: DiffusionModel, teacher: DiffusionModel, round: Round):
        super().__init__()
        if (student.image_size, student.channels) != (teacher.image_size, teacher.channels):
            raise KdgenError(
                f"the student makes {student.channels}x{student.image_size}x{student.image_size} images but the teacher "
                f"{teacher.channels}x{teacher.image_size}x{teacher.image_size}; build the student from this teacher"
            )
        self.options, self.round = options, round
        self.student = student
        self.teacher = Frozen(teacher)
        self.schedule = Schedule(teacher.scheduler_config)  # reads the teacher's outputs
        if self.changes_steps:
            want = student_prediction(teacher, self.schedule, getattr(options, "student_prediction", "auto"),
                                      keep_teacher_output=self.keep_teacher_output)
            if want != student.prediction_type:  # the student's own parameterisation, on the teacher's betas
                log.info("the %s student predicts %s (the teacher predicts %s)", type(self).__name__.lower(), want, teacher.prediction_type)
                student.scheduler_config = {**student.scheduler_config, "prediction_type": want}
            # the targets already carry the teacher's classifier-free guidance: the student is sampled unguided
            student.guidance_scale = 1.0
        student.sampler, student.steps = self.sampler, round.student_steps
        self.student_schedule = Schedule(student.scheduler_config)  # reads the student's outputs
        # an epsilon teacher's x_0 at the low-SNR end is clipped, as its own sampler does (clip_sample)
        self.teacher_clip = self.schedule.clip if teacher.prediction_type == "epsilon" else False
        self._preview_noise = torch.randn(16, teacher.channels, teacher.image_size, teacher.image_size,
                                          generator=torch.Generator().manual_seed(1234))

    @classmethod
    def plan(cls, options: Any, teacher: DiffusionModel) -> list[Round]:
        raise NotImplementedError

    @classmethod
    def rounds(cls, options: Any, teacher: DiffusionModel, train_steps: int) -> list[Round]:
        """`plan()`, after a conversion round when the student will predict something other than the teacher does.

        A student that starts as an epsilon teacher but predicts v computes the wrong thing until trained; the conversion
        round (`convert_steps`, auto: half of train.steps) regresses it onto the teacher's clipped prediction, re-expressed
        in the student's parameterisation, at every timestep, so the method's own round starts from a working v model (as
        Meng et al. 2023 first distil a guided teacher into one network before halving its steps)."""
        rounds = cls.plan(options, teacher)
        steps = getattr(options, "convert_steps", 0)
        if not cls.changes_steps or not steps:
            return rounds
        want = student_prediction(teacher, Schedule(teacher.scheduler_config), getattr(options, "student_prediction", "auto"),
                                  keep_teacher_output=cls.keep_teacher_output, warn=False)
        if want == teacher.prediction_type:
            return rounds
        steps = max(1, train_steps // 2) if steps == "auto" else int(steps)
        first = rounds[0].teacher_steps
        return [Round(f"convert-{want}", teacher_steps=first, student_steps=first, convert=True, train_steps=steps), *rounds]

    def forward(self, batch: dict, phase: str):
        return self.convert_step(batch) if self.round.convert else self.distill_step(batch, phase)

    def distill_step(self, batch: dict, phase: str):
        raise NotImplementedError

    def convert_step(self, batch: dict):
        """MSE between the student's output and the teacher's denoiser in the student's parameterisation, uniform t."""
        x0, labels = batch["image"], self.labels(batch)
        t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        x_t = self.noised(x0, t)
        with torch.no_grad():
            t_x0, _ = self.schedule.to_x0_eps(self.teacher_out(x_t, t, labels), x_t, t)
            if self.teacher_clip:
                t_x0 = t_x0.clamp(-self.schedule.clip_range, self.schedule.clip_range)
            target = self.student_schedule.from_x0(t_x0, x_t, t)
        loss = F.mse_loss(self.student(x_t, t, labels), target)
        return step_output(loss, convert=loss)

    def trainable(self, phase: str):
        extra = [p for n, m in self.named_children() if n not in ("student", "teacher", "target") for p in m.parameters() if p.requires_grad]
        return list(self.student.parameters()) + extra

    def prepare_data(self, dataset: torch.utils.data.Dataset, folder: Path) -> torch.utils.data.Dataset:
        """The round's training data (the onestep method swaps in its cache of teacher trajectories)."""
        return dataset

    def labels(self, batch: dict) -> torch.Tensor | None:
        if self.teacher.module.num_classes is None:
            return None
        if "label" not in batch:
            raise KdgenError("the teacher is class-conditional but the data has no labels; use a labelled dataset")
        return batch["label"].long()

    @torch.no_grad()
    def teacher_out(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.teacher.module.guided(x, t, labels)

    def noised(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.add_noise(x0, torch.randn_like(x0), t)

    def preview(self, n: int = 16, module: nn.Module | None = None) -> torch.Tensor:
        m = module or self.student
        with eval_mode(m):
            return DiffusionSampler(m, steps=self.round.student_steps).sample(n, seed=1234, latents=self._preview_noise[:n])


# --------------------------------------------------------------------------- block features (structural and friends)


def default_blocks(unet: nn.Module) -> list[str]:
    """The UNet's stage outputs: every down block, the mid block, every up block but the last."""
    names = [n for n, _ in unet.named_modules()]
    down = [n for n in names if n.startswith("down_blocks.") and n.count(".") == 1]
    up = [n for n in names if n.startswith("up_blocks.") and n.count(".") == 1][:-1]
    return down + (["mid_block"] if "mid_block" in names else []) + up


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # down blocks return (hidden, skips)


class BlockFeatures(nn.Module):
    """Named UNet block outputs of student and teacher, matched through 1x1-conv adapters (student -> teacher channels)."""

    def __init__(self, student: DiffusionModel, teacher: DiffusionModel, layers: list[str] | None):
        super().__init__()
        layers = list(layers) if layers else default_blocks(teacher.unet)
        check_layer_names(teacher.unet, layers, role="teacher UNet")
        check_layer_names(student.unet, layers, role="student UNet")
        self.layers = layers
        s_shapes, t_shapes = self._probe(student), self._probe(teacher)
        self.adapters = nn.ModuleDict()
        for name in layers:
            ss, ts = s_shapes[name], t_shapes[name]
            if ss[1:] != ts[1:]:
                raise KdgenError(f"block '{name}' is {tuple(ss[1:])} in the student but {tuple(ts[1:])} in the teacher; pick blocks of matching resolution")
            self.adapters[name.replace(".", "_")] = nn.Conv2d(ss[0], ts[0], 1) if ss[0] != ts[0] else nn.Identity()

    def _probe(self, model: DiffusionModel) -> dict[str, torch.Size]:
        x = torch.zeros(1, model.channels, model.image_size, model.image_size, device=device_of(model))
        labels = torch.zeros(1, dtype=torch.long, device=x.device) if model.num_classes else None
        with eval_mode(model), torch.no_grad(), FeatureTaps(model.unet, self.layers) as taps:
            model(x, torch.zeros(1, dtype=torch.long, device=x.device), labels)
        return {k: _first(v).shape[1:] for k, v in taps.outputs.items()}

    def tap(self, model: nn.Module) -> FeatureTaps:
        return FeatureTaps(model, self.layers, role="UNet")

    def loss(self, student_feats: dict[str, Any], teacher_feats: dict[str, Any]) -> torch.Tensor:
        parts = [F.mse_loss(self.adapters[n.replace(".", "_")](_first(student_feats[n])), _first(teacher_feats[n]).detach())
                 for n in self.layers]
        return torch.stack(parts).mean()


def ema_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).eval().requires_grad_(False)


def distance(pred: torch.Tensor, target: torch.Tensor, kind: str, *, huber_c: float = 0.0) -> torch.Tensor:
    """Per-batch mean distance: l2 (MSE), l1, or pseudo-Huber sqrt(d^2 + c^2) - c (Song & Dhariwal 2023)."""
    if kind == "l2":
        return F.mse_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "huber":
        d = (pred - target).flatten(1).square().sum(1)
        return (torch.sqrt(d + huber_c**2) - huber_c).mean()
    raise KdgenError(f"unknown distance '{kind}'; use l2, l1 or huber")


def step_output(loss: torch.Tensor, **parts: torch.Tensor) -> StepOutput:
    logs = {f"loss/{k}": float(v.detach()) for k, v in parts.items()}
    logs["loss/student"] = float(loss.detach())
    return StepOutput(loss, logs)
