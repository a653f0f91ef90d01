"""Cost of a Sampler: parameters, MACs per image (every network call counted), latency, file size."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..sampling import Sampler


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def macs_per_image(sampler: Sampler) -> int:
    """MACs of one image (FLOPs / 2, torch's exact conv counting) times the sampler's network calls."""
    module = sampler.module.eval()
    x = sampler.example_input(1).to(next(module.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    return int(counter.get_total_flops() // 2) * int(getattr(sampler, "steps", 1))


def median_ms(fn: Callable[[], Any], *, repeats: int, budget_s: float = 20.0, cuda: bool = False) -> float:
    """kdgen's one timer: the median wall time of fn() in ms after warm-up (3 calls, or 1 when a call takes over a
    second); it stops early once `budget_s` is spent, but always times at least 3 calls (`cuda`: synchronise around each)."""
    def timed() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = timed()
    for _ in range(0 if first > 1 else 2):
        timed()
    times, spent = [], 0.0
    while len(times) < repeats and (len(times) < 3 or spent < budget_s):
        dt = timed()
        times.append(dt * 1000)
        spent += dt
    return statistics.median(times)


@torch.no_grad()
def latency_ms(sampler: Sampler, *, batch: int, repeats: int = 20) -> float:
    """Median wall time of one batch (ms), after warm-up; the whole sampling path is timed (one network call x steps)."""
    module = sampler.module.eval()
    x = sampler.example_input(batch).to(next(module.parameters()).device)
    return median_ms(lambda: module(x), repeats=repeats, cuda=x.is_cuda) * int(getattr(sampler, "steps", 1))


def measure_cost(sampler: Sampler, *, weights: Path | None, repeats: int = 20) -> dict:
    return {
        "params": count_params(sampler.module),
        "macs": macs_per_image(sampler),
        "latency_ms": {"b1": latency_ms(sampler, batch=1, repeats=repeats), "b64": latency_ms(sampler, batch=64, repeats=repeats)},
        "file_bytes": weights.stat().st_size if weights is not None and weights.exists() else None,
        "device": str(next(sampler.module.parameters()).device),
        "threads": torch.get_num_threads(),
    }
