"""FeatureTaps: named forward hooks as a context manager.

    with FeatureTaps(model, ["blocks.1", "blocks.2"]) as taps:
        model(x)
    taps["blocks.1"]  # the activation of that layer in the last forward

Unknown names raise with the nearest real names; hooks are removed on exit.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import KdgenError
from .registry import nearest


def check_layer_names(model: nn.Module, names: list[str], *, role: str = "model") -> None:
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            hint = nearest(name, [n for n in modules if n])
            did = f"; nearest real names: {', '.join(hint)}" if hint else ""
            raise KdgenError(f"the {role} has no layer '{name}'{did}")


class FeatureTaps:
    def __init__(self, model: nn.Module, names: list[str], *, role: str = "model"):
        check_layer_names(model, names, role=role)
        self.model, self.names = model, list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "FeatureTaps":
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def store(_module, _inputs, output):
            self.outputs[name] = output

        return store

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]
