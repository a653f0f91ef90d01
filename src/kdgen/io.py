"""Model files: `model.safetensors` + `model.json`, atomic writes, and loading that never unpickles.

A kdgen model folder holds
    model.safetensors   the weights (float tensors, no code)
    model.json          {"family": ..., "args": {...constructor kwargs...}, "kdgen_version": ...}
and `load_model(folder)` rebuilds the module from those two files alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import KdgenError
from .registry import Registry

MODEL_FAMILIES: Registry[type[nn.Module]] = Registry("model family")

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide and not thread-safe
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and an atomic rename (for our own trainer state)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def ensure_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """mkdir -p, or a sentence when a file is in the way."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KdgenError(f"cannot use '{p}' as {what}: a file is in the way; give another path") from None
    return p


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_path(path: str | Path) -> Path:
    """`builtin:NAME` -> the shipped asset folder; anything else -> an expanded Path."""
    text = str(path)
    if text.startswith("builtin:"):
        name = text.split(":", 1)[1]
        root = Path(str(resources.files("kdgen") / "assets"))
        p = root / name
        if not p.exists():
            shipped = sorted(q.name for q in root.iterdir() if q.is_dir() and ((q / "model.json").exists() or (q / "kdgen.json").exists()))
            raise KdgenError(
                f"no built-in model '{name}'; shipped ones are: {', '.join(shipped) or 'none'}"
            )
        return p
    return Path(text).expanduser()


@contextlib.contextmanager
def swapped_folder(folder: Path, *, keep_others: bool = False):
    """Yield an empty sibling folder to fill; on success it replaces `folder` in one rename, so readers see
    the old model or the new one, never a mix. `keep_others`: move what else lives in the old folder
    (e.g. a GAN's discriminator/) into the new one first, unless the new one wrote the same name."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        yield tmp
        if folder.exists():
            if keep_others:
                for sub in folder.iterdir():
                    if not (tmp / sub.name).exists():
                        os.replace(sub, tmp / sub.name)
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, old / "m")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        os.chmod(folder, DIR_MODE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(module: nn.Module, folder: str | Path, *, family: str, args: dict[str, Any], extra: dict | None = None) -> Path:
    """Write `folder/model.safetensors` and `folder/model.json` atomically; returns the folder."""
    from safetensors.torch import save as st_save

    from . import __version__

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"family": family, "args": args, "kdgen_version": __version__, **(extra or {})}
    # the weights and the JSON change together: write a sibling folder, then swap it in
    with swapped_folder(folder, keep_others=True) as tmp:
        atomic_write_bytes(tmp / "model.safetensors", st_save(state))
        atomic_write_text(tmp / "model.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or a .pt/.pth state dict via torch.load(weights_only=True). Never unpickles code."""
    p = Path(path)
    if not p.is_file():
        raise KdgenError(f"weights file '{p}' does not exist; check the path")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise KdgenError(f"weights file '{p}' is corrupt or not safetensors ({e}); re-export it") from None
    if suffix in (".pt", ".pth"):
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" not in str(e) and "global" not in str(e):  # not a refused class or function: a broken file
                raise KdgenError(f"weights file '{p}' is corrupt or truncated; re-save it") from None
            raise KdgenError(
                f"'{p}' holds pickled objects, not a plain state dict; kdgen never unpickles code - "
                "save it with torch.save(model.state_dict(), path) or as safetensors"
            ) from None
        except Exception as e:  # torch.load on garbage raises RuntimeError, EOFError, IndexError, KeyError ...
            raise KdgenError(f"weights file '{p}' is corrupt or truncated ({type(e).__name__}); re-save it") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise KdgenError(f"'{p}' is not a state dict of tensors; save it with torch.save(model.state_dict(), path)")
        return obj
    raise KdgenError(
        f"'{p}' has unknown weight format '{suffix or 'no suffix'}'; kdgen loads {', '.join(WEIGHT_SUFFIXES)}"
    )


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
    from . import models  # noqa: F401  (registers the families)

    cls = MODEL_FAMILIES.get(family)
    try:
        return cls(**args)
    except (TypeError, ValueError) as e:
        raise KdgenError(f"cannot build a '{family}' from arguments {args} ({e}); fix model.args") from None


def load_model(path: str | Path | nn.Module) -> nn.Module:
    """Rebuild a model from a kdgen folder (model.json + weights), a diffusers folder or hub id, or builtin:NAME; eval mode.

    A module passed in (or a kdgen.Generator / kdgen.Classifier wrapper) comes back as it is, its face decided.
    Every loaded model carries its face (`kdgen.faces.face_of(model)`)."""
    from .faces import face_of, unwrap

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
    from .models.unet import is_diffusers_folder, load_diffusion

    if not folder.exists() and str(path).count("/") == 1 and not str(path).startswith((".", "/", "~")) and not Path(str(path)).parent.exists():
        return load_diffusion(str(path))  # a hub id (owner/name): needs internet
    if not folder.exists():
        raise KdgenError(f"model folder '{folder}' does not exist; check the path")
    if is_diffusers_folder(folder):
        return load_diffusion(folder)
    meta = read_model_json(folder)
    if meta["family"] == "class":  # a class kdgen does not define: rebuilt from its class path, args and structure
        from .models.custom import load_class_model

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
    from .faces import Face, face_of, set_face

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
