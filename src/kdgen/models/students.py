"""Students built from the teacher's own config: narrower (`width`), random or pruned init.

`prune` initialisation (as in GAN Compression's and BK-SDM's teacher-initialised students) keeps,
in every layer, the output channels whose teacher filters have the largest L1 norm, and slices the
next layer's input channels to match, so the student starts as a sub-network of the teacher.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..errors import KdgenError
from .loading import build_model


def student_args(teacher_meta: dict[str, Any], width: float) -> dict[str, Any]:
    """The teacher's constructor args with the width multiplied by `width`."""
    args = dict(teacher_meta.get("args", {}))
    if "width" not in args and "base_width" not in args:
        raise KdgenError(f"a '{teacher_meta['family']}' teacher has no width to shrink; student.width needs a width-scalable family")
    args["width"] = float(args.get("width", 1.0)) * width
    return args


def build_student(teacher: nn.Module, *, width: float, init: Literal["random", "prune"], seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """(student module, its constructor args) for a teacher loaded by kdgen.load_model."""
    meta = getattr(teacher, "kdgen_meta", None)
    if meta is None:
        raise KdgenError("the teacher has no kdgen model.json, so kdgen cannot derive a student from it; load it with kdgen.load_model")
    args = student_args(meta, width)
    torch.manual_seed(seed)
    student = build_model(meta["family"], args)
    if init == "prune":
        prune_init(student, teacher)
    return student, args


def _l1_keep(weight: torch.Tensor, out_dim: int, k: int) -> torch.Tensor:
    dims = [d for d in range(weight.dim()) if d != out_dim]
    score = weight.abs().sum(dim=dims)
    return torch.sort(torch.topk(score, k).indices).values


@torch.no_grad()
def prune_init(student: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's largest-L1 channels into a narrower student of the same chain-shaped family.

    Walks the layers in definition order (the data-flow order of the chain-shaped families kdgen
    builds): conv / transposed conv / linear layers choose their kept outputs, norms follow.
    """
    t_mods = dict(teacher.named_modules())
    keep: torch.Tensor | None = None
    for name, s in student.named_modules():
        t = t_mods.get(name)
        if t is None or type(t) is not type(s):
            raise KdgenError(f"cannot prune-initialise: student layer '{name}' has no twin in the teacher; use student.init=random")
        if isinstance(s, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = t.weight
            in_dim, out_dim = (0, 1) if isinstance(s, nn.ConvTranspose2d) else (1, 0)
            if keep is not None and w.shape[in_dim] != s.weight.shape[in_dim]:
                if len(keep) != s.weight.shape[in_dim]:
                    raise KdgenError(f"cannot prune-initialise layer '{name}' (input {s.weight.shape[in_dim]} vs kept {len(keep)}); use student.init=random")
                w = w.index_select(in_dim, keep)
            out_keep = (
                _l1_keep(w, out_dim, s.weight.shape[out_dim])
                if w.shape[out_dim] != s.weight.shape[out_dim]
                else torch.arange(w.shape[out_dim])
            )
            s.weight.copy_(w.index_select(out_dim, out_keep))
            if s.bias is not None and t.bias is not None:
                s.bias.copy_(t.bias[out_keep])
            keep = out_keep
        elif isinstance(s, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if keep is None or len(keep) != s.num_features:
                raise KdgenError(f"cannot prune-initialise norm '{name}'; use student.init=random")
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(s, attr).copy_(getattr(t, attr)[keep])
            s.num_batches_tracked.copy_(t.num_batches_tracked)
