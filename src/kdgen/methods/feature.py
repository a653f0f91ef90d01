"""Feature distillation of generators: MSE between paired intermediate activations (GAN Compression, Li et al. 2020).

Layers are paired by name in each model (`student_layers[i]` with `teacher_layers[i]`, or `layers` for
the same names in both). Each pair gets a learnable 1x1 conv adapter from the student's channels to
the teacher's, sized from shapes probed with one forward pass. Without names, kdgen pairs the
layers by resolution: at every spatial size both generators pass through, the last layer that works
at that size (its outermost module, not the image-making layer).
"""

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


def stage_layers(model: nn.Module) -> list[str]:
    """Every stage `blocks.N` of a kdgen generator (the layers the demo's feature term has always used)."""
    return [name for name, _ in model.named_modules() if name.startswith("blocks.") and name.count(".") == 1]


@torch.no_grad()
def layers_by_resolution(model: nn.Module, z_shape: tuple[int, ...]) -> dict[tuple[int, int], tuple[str, tuple[int, ...]]]:
    """{(H, W): (layer name, output shape)}: at each spatial size, the outermost of the last layers to finish there.
    The model's own output and any layer with the output's channel count at the output's size are left out."""
    finished: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: finished.append((n, o)))
             for n, m in model.named_modules() if n]
    try:
        with eval_mode(model):
            out = model(torch.zeros(2, *z_shape, device=device_of(model)))
    finally:
        for h in hooks:
            h.remove()
    picked: dict[tuple[int, int], tuple[str, tuple[int, ...]]] = {}
    for name, o in finished:
        if not isinstance(o, torch.Tensor) or o.dim() != 4 or o is out:
            continue
        if o.shape[2:] == out.shape[2:] and o.shape[1] == out.shape[1]:
            continue  # the image layer (or its activation): the output term's business
        res = (int(o.shape[2]), int(o.shape[3]))
        prev = picked.get(res)
        same_tensor = prev is not None and prev[2] is o
        if same_tensor and name.count(".") >= prev[0].count("."):
            continue  # a deeper module whose output is the same tensor: keep the outer name
        picked[res] = (name, tuple(o.shape[1:]), o)
    return {res: (name, shape) for res, (name, shape, _) in picked.items()}


def probe_shapes(model: nn.Module, layers: list[str], z_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    with eval_mode(model), FeatureTaps(model, layers) as taps:
        model(torch.zeros(2, *z_shape, device=device_of(model)))
    return {k: v.shape[1:] for k, v in taps.outputs.items()}


def default_pairs(teacher: nn.Module, student: nn.Module, z_shape: tuple[int, ...]) -> list[tuple[str, str]]:
    """(student layer, teacher layer) pairs: kdgen's stages by name when both have them, else by resolution."""
    s_stages, t_stages = stage_layers(student), stage_layers(teacher)
    if s_stages and s_stages == t_stages:
        return [(n, n) for n in s_stages]
    t_res, s_res = layers_by_resolution(teacher, z_shape), layers_by_resolution(student, z_shape)
    shared = sorted(set(t_res) & set(s_res))
    if not shared:
        names = ", ".join(f"{n} {tuple(sh)}" for n, sh in t_res.values()) or "none with 4-D outputs"
        raise KdgenError(f"kdgen found no resolution that teacher and student both pass through; name the layers to pair in "
                         f"methods.feature.teacher_layers / student_layers (teacher candidates: {names})")
    return [(s_res[r][0], t_res[r][0]) for r in shared]


@METHODS.register("feature")
class FeatureTerm(LossTerm):
    """MSE between paired intermediate activations, through learnable 1x1-conv student->teacher adapters (GAN Compression)."""

    @dataclass
    class Options:
        weight: float = field(default=1.0, metadata=_check(ge=0))
        layers: list[str] | None = None  # the same layer names in both models
        student_layers: list[str] | None = None  # or names in each model, paired in order
        teacher_layers: list[str] | None = None
        # none given: kdgen's stages blocks.N, or one pair per resolution both generators pass through

    def __init__(self, options: "FeatureTerm.Options", ctx: TermContext):
        super().__init__()
        self.options = options
        o = options
        if o.layers is not None and (o.student_layers is not None or o.teacher_layers is not None):
            raise KdgenError("methods.feature.layers names the same layers in both models; give it, or student_layers and "
                             "teacher_layers, not both")
        if (o.student_layers is None) != (o.teacher_layers is None):
            raise KdgenError("methods.feature.student_layers and teacher_layers pair layers in order; give both")
        if o.layers is not None:
            pairs = [(n, n) for n in o.layers]
        elif o.student_layers is not None:
            if len(o.student_layers) != len(o.teacher_layers):
                raise KdgenError(f"methods.feature pairs layers in order, but student_layers has {len(o.student_layers)} and "
                                 f"teacher_layers {len(o.teacher_layers)}; give as many of each")
            pairs = list(zip(o.student_layers, o.teacher_layers))
        else:
            pairs = default_pairs(ctx.teacher, ctx.student, ctx.z_shape)
        if not pairs:
            raise KdgenError("methods.feature has no layers to pair; name them in student_layers / teacher_layers")
        self.pairs = pairs
        self.student_layers = [s for s, _ in pairs]
        self.teacher_layers = [t for _, t in pairs]
        check_layer_names(ctx.teacher, self.teacher_layers, role="teacher")
        check_layer_names(ctx.student, self.student_layers, role="student")
        t_shapes = probe_shapes(ctx.teacher, self.teacher_layers, ctx.z_shape)
        s_shapes = probe_shapes(ctx.student, self.student_layers, ctx.z_shape)
        self.adapters = nn.ModuleList()
        for s_name, t_name in pairs:
            ts, ss = t_shapes[t_name], s_shapes[s_name]
            if ts[1:] != ss[1:] or len(ts) != len(ss):
                raise KdgenError(f"student layer '{s_name}' has shape {tuple(ss)} but teacher layer '{t_name}' has {tuple(ts)}; "
                                 "pair layers whose resolutions match")
            conv = nn.Conv2d if len(ts) == 3 else nn.Conv1d
            self.adapters.append(conv(ss[0], ts[0], 1))

    def student_loss(self, b: GenBatch) -> torch.Tensor:
        losses = [feature_mse(adapter(b.student_feats[s]), b.teacher_feats[t]) for adapter, (s, t) in zip(self.adapters, self.pairs)]
        return torch.stack(losses).mean()
