"""The method-agnostic Trainer, on accelerate: the same loop on one CPU, one GPU, or many (torchrun / accelerate launch).

It knows nothing about GANs, diffusion or classifiers: it loops `for phase in method.phases`,
calls `method(batch, phase)`, backpropagates `StepOutput.loss` and steps that phase's optimizer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import KdgenError
from .io import atomic_torch_save, verify_checksum
from .methods.base import DistillationMethod

STATE_FILE = "state/last.pt"
log = logging.getLogger("kdgen")
# fault injection for the resume tests: the process SIGKILLs itself right after finishing this step
KILL_AT_STEP = "KDGEN_FAULT_KILL_AT_STEP"


def rng_state() -> dict:
    """Every random stream a step may draw from (torch CPU and CUDA, numpy, python), as tensors weights_only can read."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_keys": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": pos, "numpy_gauss": [has_gauss, gauss],
            "python": torch.tensor(py_state, dtype=torch.int64), "python_version": version,
            "python_gauss": py_gauss}


def set_rng_state(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # a checkpoint from a machine with more GPUs: the ones this one has
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]), int(has_gauss), float(gauss)))
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))


class EMA:
    """Exponential moving average of a module's parameters (buffers copied): p_ema <- d_t p_ema + (1 - d_t) p.

    d_t = min(decay, (1 + t) / (10 + t)) warms up, so early steps do not leave the initial weights
    in the average (with a flat 0.999, 22% of the starting point would remain after 1,500 steps).
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), module.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.module.buffers(), module.buffers()):
            e.copy_(b)


@dataclass
class TrainResult:
    step: int
    seconds: float
    student: nn.Module  # the EMA student when EMA is on
    logs: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    is_main: bool = True  # only the main process saves models and evaluates
    processes: int = 1
    segments: list[dict] = field(default_factory=list)  # every run of the command that trained it: from/to step, seconds, processes
    settings: dict = field(default_factory=dict)  # mixed precision, grad_accum, compile, channels_last, threads

    @property
    def total_seconds(self) -> float:
        """Training time summed over every segment (a killed segment counts up to its last checkpoint)."""
        return sum(s["seconds"] for s in self.segments) if self.segments else self.seconds


class Trainer:
    def __init__(
        self, method: DistillationMethod, dataset: torch.utils.data.Dataset, *, out_dir: str | Path,
        steps: int, lr: float, d_lr: float | None = None, betas: tuple[float, float] = (0.5, 0.999),
        batch_size: int = 64, ema: float = 0.999, grad_clip: float = 1.0, checkpoint_every: int = 250,
        log_every: int = 25, sample_every: int = 250, seed: int = 0, workers: int = 0, lr_schedule: str = "constant",
        mixed_precision: str = "no", grad_accum: int = 1, compile: bool = False, channels_last: bool = False,
        threads: int | str = "auto",
    ):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

        self.out = Path(out_dir)
        self.steps, self.grad_clip, self.ema_decay, self.seed = steps, grad_clip, ema, seed
        self.checkpoint_every, self.log_every, self.sample_every = checkpoint_every, log_every, sample_every
        self.grad_accum = int(grad_accum)
        self.threads = set_threads(threads)
        if mixed_precision == "fp16" and not torch.cuda.is_available():
            raise KdgenError("train.mixed_precision=fp16 needs a GPU (its loss scaling is CUDA's); use bf16 on a CPU, or no")
        _allow_another_precision(mixed_precision)
        self.acc = Accelerator(
            cpu=not torch.cuda.is_available(),  # without it, torchrun's CPU processes each run alone (no gloo group)
            mixed_precision=mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            # epoch e shuffles with train.seed + e, the same order on every process (unset, each rank would seed its own)
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
        )
        self.settings = {"mixed_precision": mixed_precision, "grad_accum": self.grad_accum, "compile": bool(compile),
                         "channels_last": bool(channels_last), "threads": self.threads}
        speed_up(method, compile=compile, channels_last=channels_last)
        self._seed_rank(0)
        world = self.acc.num_processes
        if len(dataset) < batch_size * world:
            raise KdgenError(
                f"the dataset has {len(dataset)} images, fewer than data.batch_size={batch_size} x {world} process(es); "
                "lower the batch size"
            )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
            generator=torch.Generator().manual_seed(seed),
        )
        self.phases = method.phases
        optimizers = [
            torch.optim.Adam(list(method.trainable(p)), lr=(d_lr or lr) if p == "discriminator" else lr, betas=tuple(betas))
            for p in self.phases
        ]
        self.method, self.loader, *self.optimizers = self.acc.prepare(method, loader, *optimizers)
        self.lr_schedule = lr_schedule
        self.base_lrs = [[g["lr"] for g in o.param_groups] for o in self.optimizers]
        self.ema = EMA(self._unwrapped.student, ema) if ema > 0 else None
        self._earlier: list[dict] = []  # the segments before this one, from the checkpoint
        self._position = (0, 0)  # the data position: (epoch, images of it drawn by all processes); the loop keeps it current
        self._segment = (0, time.perf_counter())  # (first step, start time) of this one

    @property
    def _unwrapped(self) -> DistillationMethod:
        return self.acc.unwrap_model(self.method)

    # ------------------------------------------------------------------ checkpoints
    def save_state(self, step: int) -> None:
        """RUN/state/last.pt: weights, optimisers, EMA, the step and every RNG stream, so a resume continues bit for bit.
        Under several processes each rank writes its own streams to state/rng-rankN.pt."""
        rank = self.acc.process_index
        if rank:
            atomic_torch_save({"step": step, "rng": rng_state()}, self.out / f"state/rng-rank{rank}.pt")
            return
        state = {
            "step": step,
            "rng": rng_state(),
            "method": self._unwrapped.checkpoint_state(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "segments": self._segments(step),
            # the data position as (epoch, images into it): a resume at another batch shape (world size, grad_accum) continues there
            "data_position": list(self._position),
            "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
        }
        atomic_torch_save(state, self.out / STATE_FILE)

    def load_state(self) -> int:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise KdgenError(f"--resume found no checkpoint at '{path}'; start without --resume")
        verify_checksum(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # garbage raises UnpicklingError, IndexError, KeyError, EOFError ...
            raise KdgenError(f"checkpoint '{path}' is corrupt or unreadable ({type(e).__name__}); start without --resume") from None
        try:
            self._unwrapped.load_checkpoint_state(state["method"])
            for o, s in zip(self.optimizers, state["optimizers"], strict=True):
                o.load_state_dict(s)
            if self.ema and state.get("ema") is not None:
                self.ema.module.load_state_dict(state["ema"])
                self.ema.updates = int(state.get("ema_updates", state["step"]))
            step = int(state["step"])
            self._earlier = [dict(s) for s in state.get("segments", [])]
            if self.acc.scaler is not None and state.get("scaler"):
                self.acc.scaler.load_state_dict(state["scaler"])
            if "data_position" in state:
                self._position = (int(state["data_position"][0]), int(state["data_position"][1]))
            else:  # an older checkpoint: step x batches of this shape
                epoch, batches = divmod(step * self.grad_accum, len(self.loader))
                self._position = (epoch, batches * self._global_batch())
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise KdgenError(f"checkpoint '{path}' does not fit this run ({msg}); resume with the config that wrote it") from None
        self._restore_rng(state, step)
        return step

    def _segments(self, step: int) -> list[dict]:
        first, t0 = self._segment
        return [*self._earlier, {"from": first, "to": step, "seconds": round(time.perf_counter() - t0, 3),
                                 "processes": self.acc.num_processes}]

    def _restore_rng(self, state: dict, step: int) -> None:
        """This rank's RNG streams as they were at the checkpoint (exact resume); a checkpoint without them (an older kdgen,
        or a rank file of another step) reseeds from (seed, rank, step), which is reproducible but not the uninterrupted run."""
        rank = self.acc.process_index
        if rank:
            other = self.out / f"state/rng-rank{rank}.pt"
            try:
                state = {}
                if other.is_file():
                    verify_checksum(other)
                    state = torch.load(other, map_location="cpu", weights_only=True)
            except Exception:  # a torn or damaged rank file: that rank reseeds (warned below) rather than stop the run
                state = {}
        if state.get("rng") is not None and int(state.get("step", -1)) == step:
            set_rng_state(state["rng"])
        else:
            log.warning("the checkpoint at step %d holds no random state for process %d; reseeding (the run continues "
                        "reproducibly, but not bit for bit as an uninterrupted one)", step, rank)
            self._seed_rank(step)

    def _seed_rank(self, step: int) -> None:
        """Each process draws its own latents; a resume at step s reseeds from (seed, rank, s): reproducible."""
        torch.manual_seed(self.seed * 1_000_003 + step * 101 + self.acc.process_index)

    # ------------------------------------------------------------------ loop
    def lr_factor(self, step: int) -> float:
        """The learning rate at `step` (1-based) over its base: 1, or a cosine from 1 down to 0 at the last step.
        A function of the step alone, so a resumed run continues the same curve."""
        if self.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - 1) / max(1, self.steps)))
        return 1.0

    def _set_lr(self, step: int) -> None:
        f = self.lr_factor(step)
        for opt, bases in zip(self.optimizers, self.base_lrs):
            for g, base in zip(opt.param_groups, bases):
                g["lr"] = base * f

    def fit(self, *, resume: bool = False) -> TrainResult:
        from tqdm.auto import tqdm

        start = self.load_state() if resume else 0
        self._segment = (start, time.perf_counter())
        if start >= self.steps:
            return TrainResult(start, 0.0, self._student(), {}, resumed_from=start, is_main=self.acc.is_main_process,
                               processes=self.acc.num_processes, segments=self._earlier, settings=self.settings)
        writer = self._writer()
        bar = tqdm(total=self.steps, initial=start, disable=not self.acc.is_main_process, dynamic_ncols=True, desc="train")
        batches = self._batches(*self._position)
        logs: dict[str, float] = {}
        last_good = start
        t0 = time.perf_counter()
        self.method.train()
        for step in range(start + 1, self.steps + 1):
            micro = [next(batches) for _ in range(self.grad_accum)]
            # 1. one optimizer step per phase (e.g. discriminator, then student), over grad_accum batches
            logs = {}
            self._set_lr(step)
            for phase, opt in zip(self.phases, self.optimizers):
                opt.zero_grad(set_to_none=True)
                for i, batch in enumerate(micro):
                    last = i == len(micro) - 1
                    with contextlib.nullcontext() if last else self.acc.no_sync(self.method):  # all-reduce once, at the last
                        out = self.method(batch, phase)
                        # 2. a non-finite loss (on any process) stops the run; the last good checkpoint stays
                        if not self._all_finite(out.loss):
                            bar.close()
                            kept = (f"the last good checkpoint (step {last_good}) is kept in {self.out / 'state'}" if last_good else
                                    f"no checkpoint was written yet (the first comes at step {min(self.checkpoint_every, self.steps)})")
                            raise KdgenError(f"the {phase} loss became {out.loss.item()} at step {step} ({_fmt(out.logs)}); {kept}; "
                                             "lower train.lr or a method weight")
                        self.acc.backward(out.loss if len(micro) == 1 else out.loss / len(micro))
                    for k, v in out.logs.items():
                        logs[k] = logs.get(k, 0.0) + v / len(micro)
                if self.grad_clip > 0:
                    self.acc.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.grad_clip)
                opt.step()
            # 3. EMA, logs, samples, checkpoints
            if self.ema:
                self.ema.update(self._unwrapped.student)
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in logs.items() if k.startswith("loss/")}, refresh=False)
            if writer and step % self.log_every == 0:
                for k, v in logs.items():
                    writer.add_scalar(k, v, step)
            if writer and step % self.sample_every == 0:
                self._write_samples(writer, step)
            if step % self.checkpoint_every == 0 or step == self.steps:
                self.save_state(step)
                last_good = step
            if os.environ.get(KILL_AT_STEP) == str(step):
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        if writer:
            writer.close()
        self.acc.wait_for_everyone()
        if self.acc.num_processes > 1:
            self.settings["ranks_max_abs_diff"] = self._rank_divergence()
        return TrainResult(self.steps, time.perf_counter() - t0, self._student(), logs, resumed_from=start,
                           is_main=self.acc.is_main_process, processes=self.acc.num_processes, segments=self._segments(self.steps), settings=self.settings)

    def _rank_divergence(self) -> float:
        """The largest difference between any two processes' student parameters (0.0: the ranks agree, as DDP promises);
        gathered one tensor at a time, so it needs processes x the largest tensor of memory, not the whole model."""
        worst = 0.0
        for p in self._unwrapped.student.parameters():
            every = self.acc.gather(p.detach().reshape(1, -1))
            worst = max(worst, float((every - every[:1]).abs().max().item()))
        return worst

    def _all_finite(self, loss: torch.Tensor) -> bool:
        ok = torch.isfinite(loss.detach()).float().reshape(1)
        if self.acc.num_processes > 1:  # every rank must stop together, or the others hang in all-reduce
            ok = self.acc.reduce(ok, reduction="sum") / self.acc.num_processes
        return bool(ok.item() == 1.0)

    def _student(self) -> nn.Module:
        return (self.ema.module if self.ema else self._unwrapped.student).eval()

    def _global_batch(self) -> int:
        return self.loader.total_batch_size if hasattr(self.loader, "total_batch_size") else self.loader.batch_size

    def _batches(self, epoch: int, images: int):
        """Batches from `images` into `epoch` on, in the same order as an uninterrupted run (epoch e is shuffled by seed + e),
        keeping self._position current. A position the batch shape does not divide starts at the batch holding it."""
        gb = self._global_batch()
        skip, rest = divmod(images, gb)
        if rest:
            log.warning("the checkpoint stopped %d images into a batch of this shape (%d); continuing from that batch's start",
                        rest, gb)
        if skip >= len(self.loader):  # past the last full batch of this shape: the next epoch
            epoch, skip = epoch + 1, 0
        while True:
            self.loader.set_epoch(epoch)
            loader = self.acc.skip_first_batches(self.loader, skip) if skip else self.loader
            for i, batch in enumerate(loader, start=skip + 1):
                self._position = (epoch, i * gb)
                yield batch
            epoch, skip = epoch + 1, 0
            self._position = (epoch, 0)

    def _writer(self):
        if not self.acc.is_main_process:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tb"))

    def _write_samples(self, writer, step: int) -> None:
        from torchvision.utils import make_grid

        images = self._unwrapped.preview(16, module=self._student())
        if images is not None:
            writer.add_image("samples/student", make_grid(images.float().cpu() * 0.5 + 0.5, nrow=4), step)


def _allow_another_precision(mixed_precision: str) -> None:
    """accelerate keeps one AcceleratorState per process; a second run in the same process (the Python API, a benchmark)
    with another train.mixed_precision needs it cleared. The process group (PartialState) is kept."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def set_threads(threads: int | str) -> int:
    """torch's intra-op CPU threads for this process: a number, or auto ($OMP_NUM_THREADS when set, else the cores this
    process may use over the processes on this machine). Two threads on a core another job is using ran 10-15x slower
    than one (docs/FIELD-NOTES.md), so under torchrun each process gets its share, never every core."""
    if threads == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            threads = int(env)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    threads = int(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def speed_up(method: nn.Module, *, compile: bool, channels_last: bool) -> None:
    """channels_last for every network of the method, and torch.compile for its student and teacher (a diffusion
    model's UNet), in place: parameter names and state dicts stay as they are, so checkpoints and saved models do not change."""
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if compile:
        for name in ("student", "teacher"):
            net = getattr(method, name, None)
            net = getattr(net, "module", net)  # the teacher sits in a Frozen wrapper
            net = getattr(net, "unet", net)
            if isinstance(net, nn.Module):
                net.compile()


def _fmt(logs: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if not math.isfinite(v)) or "all parts finite"
