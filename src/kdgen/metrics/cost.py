"""Cost of a Sampler: parameters, MACs per image (every network call counted), latency, file size."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

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


@torch.no_grad()
def latency_ms(sampler: Sampler, *, batch: int, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one batch (ms), after warm-up; the whole sampling path is timed."""
    module = sampler.module.eval()
    x = sampler.example_input(batch).to(next(module.parameters()).device)
    times = []
    for i in range(warmup + repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        module(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times) * int(getattr(sampler, "steps", 1))


def measure_cost(sampler: Sampler, *, weights: Path | None, repeats: int = 20) -> dict:
    return {
        "params": count_params(sampler.module),
        "macs": macs_per_image(sampler),
        "latency_ms": {"b1": latency_ms(sampler, batch=1, repeats=repeats), "b64": latency_ms(sampler, batch=64, repeats=repeats)},
        "file_bytes": weights.stat().st_size if weights is not None and weights.exists() else None,
        "device": str(next(sampler.module.parameters()).device),
        "threads": torch.get_num_threads(),
    }
