"""`folder:PATH` - a folder of png/jpg/webp images, read the ImageFolder way, with a seeded held-out split.

- Class sub-folders (every image inside a first-level sub-folder, as torchvision's ImageFolder lays them out) give
  labels: the sorted sub-folder names are classes 0, 1, ... A flat folder (images at the top) is unlabelled, and
  read recursively.
- The held-out split: a file is held out when a seeded hash of its relative path (sha256 of "SEED:PATH") falls below
  `test_fraction`, at least one per class; adding images never moves the others between splits. It is the default
  reference for FID; its size, seed and the sha256 of its file list are recorded in every measurement
  (`split_record`).
- Reading: EXIF orientation is applied; alpha (RGBA, LA, palette transparency) is composited over white; 16-bit
  greyscale is scaled to 8 bits (not clipped); any mode becomes L or RGB; then resize the shorter side and
  centre-crop.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import KdgenError

log = logging.getLogger("kdgen")
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


@dataclass
class FolderScan:
    """What one pass over the folder found: readable files, their labels (or None), classes, skipped files, shapes."""

    root: Path
    files: list[Path]
    labels: list[int] | None
    classes: list[str]
    skipped: list[Path]
    modes: Counter
    short_sides: Counter

    @property
    def channels(self) -> int:
        return 1 if set(self.modes) <= GREY_MODES else 3

    @property
    def image_size(self) -> int:
        return self.short_sides.most_common(1)[0][0]


_SCANS: dict[tuple, FolderScan] = {}


def scan(root: str | Path, on_corrupt: str = "error") -> FolderScan:
    """Every image under `root` decoded once (cached while no file changes): corrupt ones raise, or are skipped."""
    root = Path(root).expanduser()
    if root.is_file():
        raise KdgenError(f"'{root}' is a file, not a folder of images; give data.name=folder:PATH with a folder")
    if not root.is_dir():
        raise KdgenError(f"image folder '{root}' does not exist; give data.name=folder:PATH with an existing folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))  # .ipynb_checkpoints, .thumbnails ...
    key = (str(root.resolve()), on_corrupt, tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths))
    if key in _SCANS:
        return _SCANS[key]
    labelled = bool(paths) and all(len(p.relative_to(root).parts) >= 2 for p in paths)
    top = [p for p in paths if len(p.relative_to(root).parts) == 1]
    if top and len(top) < len(paths) and len({p.relative_to(root).parts[0] for p in paths if p not in top}) >= 2:
        log.warning("%s has class sub-folders but also %d image(s) at its top (e.g. %s), so it is read as unlabelled; move them "
                    "into a class folder for labels", root, len(top), top[0].name)
    classes = sorted({p.relative_to(root).parts[0] for p in paths}) if labelled else []
    files, labels, skipped, modes, sides = [], [], [], Counter(), Counter()
    for p in paths:
        try:
            with Image.open(p) as im:  # decode fully: verify() alone passes truncated files
                im.load()
                modes[im.mode] += 1
                sides[min(im.size)] += 1
        except Exception:
            if on_corrupt != "skip":
                raise KdgenError(f"image '{p}' is corrupt or not an image; remove it or set data.on_corrupt=skip") from None
            skipped.append(p)
            continue
        files.append(p)
        if labelled:
            labels.append(classes.index(p.relative_to(root).parts[0]))
    if skipped:
        log.warning("skipped %d corrupt image(s) in %s, e.g. %s", len(skipped), root, skipped[0])
    if not files:
        raise KdgenError(f"image folder '{root}' holds no readable png/jpg/webp images")
    if labelled and len(classes) < 2:
        log.info("%s has one class sub-folder ('%s'); reading it as unlabelled images", root, classes[0])
        labelled, classes = False, []
    _SCANS[key] = FolderScan(root, files, labels if labelled else None, classes, skipped, modes, sides)
    return _SCANS[key]


def folder_shape(root: str | Path, on_corrupt: str = "error") -> tuple[int, int]:
    """(image_size, channels) the folder's images come in: the most common shorter side; 1 channel when every file is greyscale."""
    s = scan(root, on_corrupt)
    return s.image_size, s.channels


def split_indices(s: FolderScan, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into s.files. Each file's place comes from a seeded hash of its relative path alone: it is
    held out when the hash falls below `test_fraction`. So adding or removing images never moves the others between the
    splits (a model trained earlier has not seen a later test split). Per class at least one image is held out (the
    lowest hash) and at least one trains (the highest)."""
    n = len(s.files)
    if test_fraction <= 0:
        return np.arange(n), np.arange(0)
    u = np.array([_unit_hash(seed, p.relative_to(s.root).as_posix()) for p in s.files])
    groups = np.asarray(s.labels) if s.labels is not None else np.zeros(n, dtype=np.int64)
    test = u < test_fraction
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2:
            raise KdgenError(f"class '{s.classes[g] if s.classes else 'all'}' of {s.root} has {len(members)} image(s), too few to hold "
                             "one out; add images or set data.test_fraction=0 (FID then uses the training images, with a caveat)")
        if not test[members].any():
            test[members[np.argmin(u[members])]] = True
        if test[members].all():
            test[members[np.argmax(u[members])]] = False
    return np.flatnonzero(~test), np.flatnonzero(test)


def _unit_hash(seed: int, name: str) -> float:
    """A number in [0, 1) fixed by (seed, name): sha256, first 8 bytes."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2.0**64


def split_record(root: str | Path, *, test_fraction: float, seed: int, on_corrupt: str = "error") -> dict:
    """The held-out split as it is recorded in metrics: sizes, seed, fraction and the sha256 of the test file list."""
    s = scan(root, on_corrupt)
    train, test = split_indices(s, test_fraction, seed)
    listing = "\n".join(s.files[i].relative_to(s.root).as_posix() for i in test)
    return {"seed": seed, "test_fraction": test_fraction, "train_count": len(train), "test_count": len(test),
            "test_files_sha256": hashlib.sha256(listing.encode()).hexdigest(), "labelled": s.labels is not None,
            "classes": s.classes}


class StackedImages:
    """Mixin for a Dataset of dict items: `images`, every image as one tensor (what measuring a classifier reads), read once."""

    _images: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = torch.stack([self[i]["image"] for i in range(len(self))])
        return self._images


class ImageFolderDataset(StackedImages, torch.utils.data.Dataset):
    """One split of a folder as {"image": [C, S, S] in [-1, 1], "label": class index (labelled folders)}.

    split: "train" | "test" (the seeded held-out share) | "all".
    """

    def __init__(self, root: str | Path, *, image_size: int, channels: int, on_corrupt: str = "error", split: str = "all",
                 test_fraction: float = 0.1, split_seed: int = 0):
        s = scan(root, on_corrupt)
        self.root, self.classes, self.skipped = s.root, s.classes, s.skipped
        train, test = split_indices(s, test_fraction, split_seed)
        pick = {"train": train, "test": test, "all": np.arange(len(s.files))}[split]
        self.files = [s.files[i] for i in pick]
        self.labels = torch.tensor([s.labels[i] for i in pick], dtype=torch.long) if s.labels is not None else None
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        try:
            item = {"image": read_image(self.files[i], self.image_size, self.channels)}
        except OSError:  # changed on disk since it was checked
            raise KdgenError(f"image '{self.files[i]}' can no longer be read; restore or remove it") from None
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item



def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode as L or RGB: EXIF orientation applied, alpha over white, 16-bit greyscale scaled (not clipped) to 8 bits."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit modes are 0..65535 whatever a given image's range; "I" (32-bit) is 16-bit data when it exceeds 8 bits
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and arr.max() > 255) else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("L" if channels == 1 else "RGB")


def read_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    with Image.open(path) as im:
        im = to_mode(im, channels)
    w, h = im.size
    scale = image_size / min(w, h)
    im = im.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - image_size) // 2, (h - image_size) // 2
    im = im.crop((left, top, left + image_size, top + image_size))
    arr = np.asarray(im, dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(arr.copy()) / 127.5 - 1.0
