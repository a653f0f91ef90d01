from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import _check
from ..errors import KdgenError
from ..losses import feature_mse
from ..taps import FeatureTaps, check_layer_names
from ..utils import device_of, eval_mode
from .base import GenBatch, LossTerm, TermContext
from .registry import METHODS


def default_layers(model: nn.Module) -> list[str]:
    """Every stage `blocks.N` of a kdgen generator."""
    return [name for name, _ in model.named_modules() if name.startswith("blocks.") and name.count(".") == 1]


def probe_shapes(model: nn.Module, layers: list[str], z_dim: int) -> dict[str, torch.Size]:
    with eval_mode(model), FeatureTaps(model, layers) as taps:
        model(torch.zeros(2, z_dim, device=device_of(model)))
    return {k: v.shape[1:] for k, v in taps.outputs.items()}


@METHODS.register("feature")
class FeatureTerm(LossTerm):
    """MSE between intermediate activations through taps, with learnable 1x1-conv student->teacher adapters (GAN Compression)."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        layers: list[str] | None = None  # None: every generator stage blocks.N

    def __init__(self, options: "FeatureTerm.Options", ctx: TermContext):
        super().__init__()
        self.options = options
        layers = options.layers or default_layers(ctx.teacher)
        if not layers:
            raise KdgenError("methods.feature.layers is empty and the teacher has no 'blocks.N' stages; name the layers to match")
        check_layer_names(ctx.teacher, layers, role="teacher")
        check_layer_names(ctx.student, layers, role="student")
        self.student_layers = self.teacher_layers = list(layers)
        t_shapes = probe_shapes(ctx.teacher, layers, ctx.z_dim)
        s_shapes = probe_shapes(ctx.student, layers, ctx.z_dim)
        self.adapters = nn.ModuleDict()
        for name in layers:
            ts, ss = t_shapes[name], s_shapes[name]
            if ts[1:] != ss[1:]:
                raise KdgenError(
                    f"layer '{name}' has spatial shape {tuple(ss[1:])} in the student but {tuple(ts[1:])} in the teacher; "
                    "pick layers whose resolutions match"
                )
            conv = nn.Conv2d if len(ts) == 3 else nn.Conv1d
            self.adapters[name.replace(".", "_")] = conv(ss[0], ts[0], 1)

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        losses = [
            feature_mse(self.adapters[n.replace(".", "_")](b.student_feats[n]), b.teacher_feats[n]) for n in self.student_layers
        ]
        return torch.stack(losses).mean()
