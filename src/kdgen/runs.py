"""The run folder's shared steps: the resolved config, the trainer, metrics.json. Used by every command that trains."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .config import RunConfig, load_config, load_run_config
from .errors import KdgenError
from .io import atomic_write_text, clean_temp_files, ensure_dir
from .train import Trainer

log = logging.getLogger("kdgen")


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
    _follow_moved_run(cfg, config, overrides)
    if cfg.task != task:
        raise KdgenError(f"this recipe is for task '{cfg.task}', not '{task}'; run `kdgen {cfg.task}` with it (or set task={task})")
    if task == "distill":
        from .methods import check_method_mix, parse_methods

        parse_methods(cfg.methods)
        check_method_mix(cfg.methods)
    return cfg


def _follow_moved_run(cfg: RunConfig, config: Any, overrides: list[str] | None) -> None:
    """A run folder's own config.yaml names the folder it was written in; read from a folder that holds a run (moved or
    copied since), the run is that folder - unless out= is given."""
    if not isinstance(config, (str, Path)) or any(str(o).split("=", 1)[0].strip() == "out" for o in overrides or []):
        return
    folder = Path(config).expanduser().resolve().parent
    if Path(config).name != "config.yaml" or not any((folder / n).exists() for n in ("state", "metrics.json")):
        return
    if Path(cfg.out).expanduser().resolve() != folder:
        log.warning("%s was written in %s; using the folder it is in now", Path(config), cfg.out)
        cfg.out = str(folder)


def make_trainer(method, dataset, cfg: RunConfig, out: Path, *, steps: int | None = None) -> Trainer:
    t = cfg.train
    return Trainer(
        method, dataset, out_dir=out, steps=t.steps if steps is None else steps, lr=t.lr, d_lr=t.d_lr, betas=tuple(t.betas), batch_size=cfg.data.batch_size,
        ema=t.ema, grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
        sample_every=t.sample_every, seed=t.seed, workers=cfg.data.workers, lr_schedule=t.lr_schedule,
        mixed_precision=t.mixed_precision, grad_accum=t.grad_accum, compile=t.compile, channels_last=t.channels_last, threads=t.threads,
    )


def prepare_out(cfg: RunConfig, resume: bool) -> Path:
    """Create and lock the run folder and save the resolved config; called only once everything is built,
    so a recipe that fails to build never touches an existing run. With overwrite, the old run's outputs go now."""
    out = ensure_dir(cfg.out, what="the run folder (out)")
    check_resume(cfg, resume)  # takes the lock first
    if not _is_main():  # under torchrun only rank 0 writes the folder
        return out
    if not resume and _OVERWRITE.get():
        for name in _outputs(cfg) + ["report.html", "samples", "tb", "plots", "export"]:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    cfg.save(out / "config.yaml")
    return out


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


_OVERWRITE: ContextVar[bool] = ContextVar("kdgen_overwrite", default=False)


def _outputs(cfg: RunConfig) -> list[str]:
    """What a finished or started run of this task leaves in its folder (RUN/teacher is an input record when distilling)."""
    made = {"distill": ["student", "rounds"], "train-teacher": ["teacher"], "train-features": ["featnet"]}[cfg.task]
    return [*made, "state", "metrics.json"]


def check_existing(cfg: RunConfig, resume: bool) -> None:
    """Lock the run folder for this command (before anything is written into it); a folder that holds a run is continued
    (--resume) or replaced (--overwrite), never overwritten by accident."""
    out = Path(cfg.out)
    if out.is_dir():
        lock_run(out)
        if _is_main() and (gone := clean_temp_files(out)):
            log.info("removed %d temporary file(s) a killed write left in %s", len(gone), out)
    if resume or _OVERWRITE.get() or not (out / "config.yaml").is_file():
        return
    found = [name for name in _outputs(cfg) if (out / name).exists()]
    if found:
        what = "a finished run" if (out / "metrics.json").is_file() else "a started run"
        raise KdgenError(f"run folder '{out}' already holds {what} ({', '.join(found)}); pass --resume to continue it, --overwrite to "
                         "replace it, or give another out=")


LOCK = ".kdgen.lock"
_HELD: set[Path] = set()


def lock_run(out: Path) -> None:
    """Take RUN/.kdgen.lock for this process (the main process only, under torchrun); a second writer is refused with
    a sentence naming the process that holds it. A lock whose process is gone (killed) is taken over. Released at exit."""
    if not _is_main():
        return
    path = (Path(out) / LOCK).resolve()
    if path in _HELD:
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = path.with_name(f"{LOCK}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(me))  # written whole, then published by a hard link: no reader ever sees a half-written lock
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
            except FileExistsError:
                holder = _lock_holder(path)
                if holder is not None:
                    raise KdgenError(f"run folder '{out}' is in use by process {holder['pid']} on {holder['host']} (since "
                                     f"{holder['since']}); wait for it to finish, or give another out=") from None
                path.unlink(missing_ok=True)  # its process is gone: a stale lock
                continue
            _HELD.add(path)
            atexit.register(_release, path)
            return
    finally:
        tmp.unlink(missing_ok=True)
    raise KdgenError(f"could not take the lock '{path}' (another process keeps re-creating it); check what else writes to '{out}'")


def _lock_holder(path: Path) -> dict | None:
    """Who holds the lock, or None if nobody alive does (the file is unreadable, or its process has ended)."""
    try:
        holder = json.loads(path.read_text())
        pid, host = int(holder["pid"]), holder["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return holder  # another machine's process: kdgen cannot tell, so it must be taken as alive
    if pid == os.getpid():
        return None  # this process does not hold it (that is checked first): a lock left from before a restart
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return holder
    return holder


def _release(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
    _HELD.discard(path)


def holding_run_lock(fn):
    """Decorator of a command that trains: every run-folder lock it takes is released when it returns or fails, and its
    `overwrite` argument reaches the run-folder checks."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        before = set(_HELD)
        token = _OVERWRITE.set(bool(kwargs.get("overwrite", False)))
        try:
            return fn(*args, **kwargs)
        finally:
            _OVERWRITE.reset(token)
            for path in set(_HELD) - before:
                _release(path)

    return wrapped


def check_resume(cfg: RunConfig, resume: bool) -> None:
    """A resume must use the recipe that started the run (train.* and eval.* may change); a refusal names the keys."""
    check_existing(cfg, resume)
    saved = Path(cfg.out) / "config.yaml"
    if resume and saved.exists():
        prev = load_run_config(saved)
        free = {"train": None, "eval": None, "out": None}  # a resume may train longer or measure differently; a run may move
        a, b = {**prev.to_dict(), **free}, {**cfg.to_dict(), **free}
        if a != b:
            keys = _differing(a, b)
            shown = ", ".join(f"{k} ({_short(x)} -> {_short(y)})" for k, x, y in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise KdgenError(f"--resume with a config that differs from '{saved}' beyond train.* and eval.*: {shown}; resume with the "
                             "same recipe")


def _differing(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differing(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def train(method, dataset, cfg: RunConfig, resume: bool):
    out = prepare_out(cfg, resume)
    return out, make_trainer(method, dataset, cfg, out).fit(resume=resume)


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def train_record(trained) -> dict:
    """metrics.json's train block: seconds summed over every segment (each resume adds one), with the segments listed."""
    return {"seconds": round(trained.total_seconds, 1), "steps": trained.step, "resumed_from": trained.resumed_from,
            "processes": trained.processes, "segments": [{**s, "seconds": round(s["seconds"], 1)} for s in trained.segments],
            **trained.settings}
