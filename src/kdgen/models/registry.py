"""The registry of kdgen's model families (a leaf: the families register into it on import)."""

from __future__ import annotations

from torch import nn

from ..registry import Registry

MODEL_FAMILIES: Registry[type[nn.Module]] = Registry("model family")
