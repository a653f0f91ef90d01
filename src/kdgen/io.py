"""File primitives: atomic writes, folders swapped in whole, checksums, `builtin:NAME` paths, and weights that
load without unpickling. A leaf: it imports no model code (models/loading.py builds models from these files).
"""

from __future__ import annotations

import contextlib
import errno
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


TMP_SUFFIX = ".tmp"  # a write in progress: `.NAME.RANDOM.tmp` beside NAME (a killed write leaves it; clean_temp_files removes it)


def atomic_write_bytes(path: Path, data: bytes, *, checksum: bool = False) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see old or new, never half.
    `checksum`: also write NAME.sha256 beside it (sha256sum's format), which `verify_checksum` checks on every load."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:  # named by the file the user asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if checksum:  # the old sha256 goes first: a crash before the new one is written leaves a file that loads unchecked,
            checksum_path(path).unlink(missing_ok=True)  # never a good file next to a stale sha256
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if checksum and path.is_file() and not checksum_path(path).is_file():  # the old file stays: so does its sha256
            with contextlib.suppress(OSError):
                write_checksum(path)
        if isinstance(e, OSError) and e.errno is not None:
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    if checksum:
        write_checksum(path, hashlib.sha256(data).hexdigest())


def clean_temp_files(root: Path, *, keep_prefix: str = ".kdgen.lock") -> list[Path]:
    """Remove what killed writes left under `root`: `.NAME.*.tmp` files and swapped-in folders. Call it only while
    holding the run folder's lock, so no live write of kdgen's is among them. Returns what it removed."""
    removed = []
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if name.startswith(".") and name.endswith(TMP_SUFFIX) and not name.startswith(keep_prefix):
                path = Path(parent) / name
                shutil.rmtree(path, ignore_errors=True) if name in dirs else path.unlink(missing_ok=True)
                removed.append(path)
        dirs[:] = [d for d in dirs if not (d.startswith(".") and d.endswith(TMP_SUFFIX))]
    return removed


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + CHECKSUM_SUFFIX)


def write_checksum(path: Path, digest: str | None = None) -> None:
    """NAME.sha256 beside `path`: `HEX  NAME`, so `sha256sum -c NAME.sha256` checks it too."""
    path = Path(path)
    atomic_write_text(checksum_path(path), f"{digest or file_sha256(path)}  {path.name}\n")


def verify_checksum(path: Path) -> None:
    """A file kdgen wrote is checked against the sha256 recorded beside it; files without one (a user's) pass unchecked.
    A mismatch (flipped bytes, a partial copy) is a sentence, before anything reads the damaged tensors."""
    path = Path(path)
    side = checksum_path(path)
    if not side.is_file():
        return
    try:
        recorded = side.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise KdgenError(f"the checksum file '{side}' is unreadable; restore it, or delete it to load '{path.name}' unchecked") from None
    if file_sha256(path) != recorded:
        raise KdgenError(f"'{path}' does not match the sha256 recorded in '{side.name}': the file is damaged (flipped bytes or a "
                         "partial copy); restore it from a backup or retrain it")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and an atomic rename (for our own trainer state), with its sha256 beside it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), checksum=True)


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
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TMP_SUFFIX))
    try:
        yield tmp
        if folder.exists():
            if keep_others:
                for sub in folder.iterdir():
                    if not (tmp / sub.name).exists():
                        os.replace(sub, tmp / sub.name)
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old.", suffix=TMP_SUFFIX))
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
    verify_checksum(p)
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
