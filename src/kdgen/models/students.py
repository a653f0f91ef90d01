"""Students built from the teacher's own config: narrower (`width`), random or pruned init.

`prune` initialisation (as in GAN Compression's and BK-SDM's teacher-initialised students) goes through
the same torch-pruning path as any user's model (models/prune.py: DepGraph groups, largest L1 kept), told
to keep exactly the channel counts of the family's own narrower config, so the student is that config,
reloadable from its args, starting as a sub-network of the teacher. (kdgen's first chain-walking pruner
scored the same demo FID within noise, benchmarks/RESULTS.md own_model_door, and was retired for it.)
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
        prune_init(student, teacher, seed=seed)
    return student, args


PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def prune_init(student: nn.Module, teacher: nn.Module, *, seed: int = 0) -> None:
    """Load the teacher, torch-pruned to the student's channel counts, into the narrower student of the same family."""
    from ..faces import face_of
    from .prune import prune_student

    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    keep = {}
    for name, s in s_mods.items():
        t = t_mods.get(name)
        if t is None or type(t) is not type(s):
            raise KdgenError(f"cannot prune-initialise: student layer '{name}' has no twin in the teacher; use student.init=random")
        if isinstance(s, PRUNABLE):  # every layer: the narrower ones to the student's count, the others kept whole
            keep[name] = s.out_channels if hasattr(s, "out_channels") else s.out_features
    narrower = any(s_mods[n].weight.shape != t_mods[n].weight.shape for n in keep)
    pruned = prune_student(teacher, face_of(teacher), width=1.0, seed=seed, keep=keep if narrower else None)
    want = {k: v.shape for k, v in student.state_dict().items()}
    got = {k: v.shape for k, v in pruned.state_dict().items()}
    if want != got:
        diff = next(k for k in want if want[k] != got.get(k))
        raise KdgenError(f"cannot prune-initialise: torch-pruning gives '{diff}' shape {tuple(got.get(diff, ()))}, the student "
                         f"{tuple(want[diff])}; use student.init=random")
    student.load_state_dict(pruned.state_dict())
