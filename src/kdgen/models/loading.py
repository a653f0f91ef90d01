"""kdgen model folders: `model.safetensors` + `model.json`, written atomically and rebuilt without unpickling.

A kdgen model folder holds
    model.safetensors   the weights (float tensors, no code)
    model.json          {"family": ..., "args": {...constructor kwargs...}, "face": {...}, "kdgen_version": ...}
and `load_model(folder)` rebuilds the module from those two files alone: a registered family by name, any
other class by its class path, args and recorded structure (models/custom.py), a diffusers folder as a
DiffusionModel (models/unet.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import KdgenError
from ..io import atomic_write_bytes, atomic_write_text, load_state_dict_file, resolve_path, swapped_folder
from .registry import MODEL_FAMILIES


def save_model(module: nn.Module, folder: str | Path, *, family: str, args: dict[str, Any], extra: dict | None = None) -> Path:
    """Write `folder/model.safetensors` and `folder/model.json` atomically; returns the folder."""
    from safetensors.torch import save as st_save

    from .. import __version__

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"family": family, "args": args, "kdgen_version": __version__, **(extra or {})}
    # the weights and the JSON change together: write a sibling folder, then swap it in
    with swapped_folder(folder, keep_others=True) as tmp:
        atomic_write_bytes(tmp / "model.safetensors", st_save(state), checksum=True)
        atomic_write_text(tmp / "model.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def read_model_json(folder: Path) -> dict[str, Any]:
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise KdgenError(
            f"'{folder}' is not a kdgen model folder (no model.json); give a folder written by kdgen "
            "(e.g. runs/NAME/student) or builtin:gan-mnist5k"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KdgenError(f"'{meta_path}' is not valid JSON ({type(e).__name__}); restore it from the run that wrote it") from None
    if (not isinstance(meta, dict) or not isinstance(meta.get("family"), str) or not isinstance(meta.get("args", {}), dict)
            or not isinstance(meta.get("weights", "model.safetensors"), str)):
        raise KdgenError(f"'{meta_path}' lacks a string 'family', an 'args' mapping or a string 'weights'; it was not written by kdgen")
    return meta


def build_model(family: str, args: dict[str, Any]) -> nn.Module:
    from .. import models  # noqa: F401  (registers the families)

    cls = MODEL_FAMILIES.get(family)
    try:
        return cls(**args)
    except (TypeError, ValueError) as e:
        raise KdgenError(f"cannot build a '{family}' from arguments {args} ({e}); fix model.args") from None


def load_model(path: str | Path | nn.Module) -> nn.Module:
    """Rebuild a model from a kdgen folder (model.json + weights), a diffusers folder or hub id, or builtin:NAME; eval mode.

    A module passed in (or a kdgen.Generator / kdgen.Classifier wrapper) comes back as it is, its face decided.
    Every loaded model carries its face (`kdgen.faces.face_of(model)`)."""
    from ..faces import face_of, unwrap

    if isinstance(path, nn.Module):
        module = unwrap(path)
        face_of(module)
        return module
    folder = resolve_path(path)
    if folder.is_file():
        raise KdgenError(
            f"'{folder}' is a file; kdgen.load_model takes a model folder with model.json and "
            "model.safetensors (a bare state dict has no architecture)"
        )
    from .unet import is_diffusers_folder, load_diffusion

    if not folder.exists() and str(path).count("/") == 1 and not str(path).startswith((".", "/", "~")) and not Path(str(path)).parent.exists():
        return load_diffusion(str(path))  # a hub id (owner/name): needs internet
    if not folder.exists():
        raise KdgenError(f"model folder '{folder}' does not exist; check the path")
    if is_diffusers_folder(folder):
        return load_diffusion(folder)
    meta = read_model_json(folder)
    if meta["family"] == "class":  # a class kdgen does not define: rebuilt from its class path, args and structure
        from .custom import load_class_model

        module = load_class_model(folder, meta)
        return _loaded(module, meta, folder)
    weights = folder / meta.get("weights", "model.safetensors")
    module = build_model(meta["family"], meta.get("args", {}))
    state = load_state_dict_file(weights)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise KdgenError(
            f"weights in '{weights}' do not fit a {meta['family']} with args {meta.get('args')} "
            f"({str(e).splitlines()[-1].strip()})"
        ) from None
    if missing or unexpected:
        raise KdgenError(
            f"weights in '{weights}' do not fit a {meta['family']} with args {meta.get('args')} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors, e.g. {(missing or unexpected)[0]})"
        )
    return _loaded(module, meta, folder)


def _loaded(module: nn.Module, meta: dict[str, Any], folder: Path) -> nn.Module:
    from ..faces import Face, face_of, set_face

    module.eval()
    module.kdgen_meta = meta  # type: ignore[attr-defined]
    module.kdgen_path = folder  # type: ignore[attr-defined]
    if isinstance(meta.get("face"), dict):
        set_face(module, Face.from_dict(meta["face"]))
    elif meta.get("image_size") and getattr(type(module), "face_kind", None) == "classifier" and not hasattr(module, "image_size"):
        object.__setattr__(module, "image_size", int(meta["image_size"]))  # what train-features recorded for its featnet
    try:
        face_of(module)
    except KdgenError:  # a part such as a GAN's discriminator has no face of its own
        pass
    return module
