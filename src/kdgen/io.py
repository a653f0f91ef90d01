"""File primitives: atomic writes, folders swapped in whole, checksums, `builtin:NAME` paths, and weights that
load without unpickling. A leaf: it imports no model code (models/loading.py builds models from these files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import KdgenError

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
