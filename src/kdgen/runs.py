"""The run folder's shared steps: the resolved config, the trainer, metrics.json. Used by every command that trains."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .config import RunConfig, load_config
from .errors import KdgenError
from .io import atomic_write_text, ensure_dir
from .train import Trainer


@dataclass
class Result:
    """What a command returns: the run folder, its metrics, the trained model."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    train_seconds: float = 0.0

    @property
    def table(self) -> str:
        from .report import format_table

        return format_table(self.metrics)


def task_config(config: Any, overrides: list[str] | None, task: str) -> RunConfig:
    """The recipe for `task`, validated; a distill recipe's methods too (unknown names and options fail here, before any work)."""
    cfg = load_config(config, overrides)
    if cfg.task != task:
        raise KdgenError(f"this recipe is for task '{cfg.task}', not '{task}'; run `kdgen {cfg.task}` with it (or set task={task})")
    if task == "distill":
        from .methods import check_method_mix, parse_methods

        parse_methods(cfg.methods)
        check_method_mix(cfg.methods)
    return cfg


def make_trainer(method, dataset, cfg: RunConfig, out: Path, *, steps: int | None = None) -> Trainer:
    t = cfg.train
    return Trainer(
        method, dataset, out_dir=out, steps=t.steps if steps is None else steps, lr=t.lr, d_lr=t.d_lr, betas=tuple(t.betas), batch_size=cfg.data.batch_size,
        ema=t.ema, grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
        sample_every=t.sample_every, seed=t.seed, workers=cfg.data.workers, lr_schedule=t.lr_schedule,
    )


def prepare_out(cfg: RunConfig, resume: bool) -> Path:
    """Create the run folder and save the resolved config; called only once everything is built,
    so a recipe that fails to build never overwrites an existing run's config.yaml."""
    out = ensure_dir(cfg.out, what="the run folder (out)")
    check_resume(cfg, resume)
    cfg.save(out / "config.yaml")
    return out


def check_resume(cfg: RunConfig, resume: bool) -> None:
    """A resume must use the recipe that started the run (train.* and eval.* may change)."""
    saved = Path(cfg.out) / "config.yaml"
    if resume and saved.exists():
        prev = load_config(saved)
        free = {"train": None, "eval": None}  # a resume may train longer or measure differently
        if {**prev.to_dict(), **free} != {**cfg.to_dict(), **free}:
            raise KdgenError(f"--resume with a config that differs from '{saved}' beyond train.* and eval.*; resume with the same recipe")


def train(method, dataset, cfg: RunConfig, resume: bool):
    out = prepare_out(cfg, resume)
    return out, make_trainer(method, dataset, cfg, out).fit(resume=resume)


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def train_record(trained) -> dict:
    return {"seconds": round(trained.seconds, 1), "steps": trained.step, "resumed_from": trained.resumed_from,
            "processes": trained.processes}
