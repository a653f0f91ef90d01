"""Small helpers shared across kdgen."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval() under no_grad for the block, then restore its train/eval mode."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
