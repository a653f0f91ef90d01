"""Frozen wrappers: the teacher (and any fixed feature net) is visibly frozen.

`requires_grad_(False)`, held in eval() even when the owning method is put in train(), and run
under torch.no_grad(). Trainer checkpoints skip Frozen sub-modules: they are inputs, not state.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import KdgenError
from .io import resolve_path
from .models.loading import load_model


class Frozen(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def load_teacher(path: str | Path) -> nn.Module:
    """A kdgen generator, image-to-image or classifier folder (or builtin:NAME) as a module with `kdgen_meta`, eval mode, frozen."""
    folder = resolve_path(path)
    if not folder.exists() and str(path).count("/") == 1 and not Path(str(path)).parent.exists():
        return load_model(path).requires_grad_(False)  # a diffusers hub id
    if not folder.exists():
        raise KdgenError(
            f"teacher '{folder}' does not exist; set teacher.path to a kdgen model folder (e.g. the "
            "'teacher' folder written by kdgen train-teacher), a diffusers folder, or builtin:gan-mnist5k"
        )
    from .faces import face_of

    model = load_model(folder)
    try:
        kind = face_of(model).kind
    except KdgenError:
        kind = None
    if kind not in ("generator", "diffusion", "classifier", "image-to-image"):
        what = getattr(model, "kdgen_meta", {}).get("family", type(model).__name__)
        raise KdgenError(
            f"teacher '{folder}' is a '{what}', not an image generator, image-to-image network or classifier; distill takes "
            "such a folder (e.g. builtin:gan-mnist5k, or the 'teacher' folder kdgen train-teacher writes)"
        )
    return model.requires_grad_(False)


def teacher_discriminator_path(path: str | Path) -> Path | None:
    """The discriminator shipped beside a GAN teacher (`<teacher>/discriminator/`), if any."""
    d = resolve_path(path) / "discriminator"
    return d if (d / "model.json").exists() else None
