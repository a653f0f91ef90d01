"""One-step distillation from cached teacher trajectories (Luhman & Luhman 2021, "Knowledge Distillation
in Iterative Generative Models for Improved Sampling Speed").

The teacher's deterministic DDIM map noise -> image is sampled once into RUN/cache/ (parts written
atomically; an interrupted run picks up at the first missing part; under torchrun every process writes
the same seeded parts, so whichever rename lands last is identical), then the student regresses it in
one network call: x^ = x_0(student(z, T-1)), L = ||x^ - DDIM_teacher(z)||. The student is saved as a
1-step DDIM model, so diffusers' DDIMScheduler with 1 step reproduces it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import _check
from ..data import TensorImageDataset
from ..errors import KdgenError
from ..sampling import DiffusionSampler
from .diffusion_base import PREDICTION_CHOICE, DiffusionMethod, Round, distance, step_output
from .registry import METHODS

PART = 256  # cached pairs per file


@METHODS.register("onestep")
class OneStep(DiffusionMethod):
    """One-step student regressing the teacher's DDIM noise->image map from a cache of trajectories."""

    keep_teacher_output = False  # the teacher's one-step map is not what the student learns: it predicts v from the start

    @dataclass
    class Options:
        teacher_steps: int = field(default=64, metadata=_check(ge=1))  # DDIM steps that make the cached targets
        cache_size: int = field(default=4096, metadata=_check(gt=0))  # noise -> image pairs
        distance: Literal["l2", "l1"] = "l2"
        student_prediction: PREDICTION_CHOICE = "auto"  # auto: v-prediction for an epsilon teacher near pure noise, else the teacher's

    @classmethod
    def plan(cls, options: "OneStep.Options", teacher) -> list[Round]:
        if options.teacher_steps > teacher.num_train_timesteps:
            raise KdgenError(f"methods.onestep.teacher_steps={options.teacher_steps} exceeds the teacher's {teacher.num_train_timesteps} timesteps")
        return [Round("steps-1", teacher_steps=options.teacher_steps, student_steps=1)]

    cache_root: str | None = None  # data.teacher_cache: a cache shared by runs of this teacher; None: RUN/rounds/steps-1/cache

    def prepare_data(self, dataset, folder: Path):
        """Write (or finish) the cache of teacher trajectories and train on it instead of the real images. Under several
        processes each draws its share of the parts (kdgen.cache.draw_shards); a damaged part is drawn again."""
        from ..cache import cache_folder, draw_shards, fingerprint, read_shards

        teacher = self.teacher.module
        steps, n = self.options.teacher_steps, self.options.cache_size
        spec = {"kind": "diffusion trajectories", "version": 1, "teacher": fingerprint(teacher), "teacher_steps": steps,
                "count": n, "part": PART, "seeds": "10000 + part",
                "sampling": json.loads(json.dumps(teacher.meta(), default=str))}  # guidance, schedule, prediction: they shape the targets
        cache = folder / "cache" if self.cache_root is None else cache_folder(self.cache_root, spec)
        if torch.cuda.is_available():  # the trainer has not moved anything yet: sample the cache on the GPU
            teacher.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        sampler = DiffusionSampler(teacher, steps=steps, batch_size=PART)

        def part(i: int) -> dict[str, torch.Tensor]:
            seed = 10_000 + i  # disjoint from evaluation seeds
            z = sampler.latents(PART, seed)
            y = teacher.default_labels(PART)
            x = sampler.sample(PART, seed, cond=y, latents=z)
            return {"noise": z, "image": x, **({"label": y} if y is not None else {})}

        names, self.cache_made, _ = draw_shards(cache, spec, math.ceil(n / PART), part, prefix=f"part-steps{steps}")
        self.cache_folder = cache
        t = read_shards(names, n)
        return _PairDataset(t["noise"], t["image"], t.get("label"))

    def distill_step(self, batch: dict, phase: str):
        z, target = batch["noise"], batch["image"]
        labels = batch["label"].long() if "label" in batch else None
        t = torch.full((z.shape[0],), self.schedule.T - 1, device=z.device, dtype=torch.long)
        x_hat, _ = self.student_schedule.to_x0_eps(self.student(z, t, labels), z, t)
        loss = distance(x_hat, target, self.options.distance)
        return step_output(loss, onestep=loss)


class _PairDataset(TensorImageDataset):
    def __init__(self, noise: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None):
        super().__init__(images, labels)
        self.noise = noise

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["noise"] = self.noise[i]
        return item
