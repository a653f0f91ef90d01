"""`folder:PATH` - any folder of png/jpg/webp images, resized and center-cropped on the fly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import KdgenError

log = logging.getLogger("kdgen")
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under `root` (recursively), as {"image": [C, S, S] in [-1, 1]}. No labels."""

    def __init__(self, root: str | Path, *, image_size: int, channels: int, on_corrupt: str = "error"):
        self.root = Path(root).expanduser()
        if self.root.is_file():
            raise KdgenError(f"'{self.root}' is a file, not a folder of images; give data.name=folder:PATH with a folder")
        if not self.root.is_dir():
            raise KdgenError(f"image folder '{self.root}' does not exist; give data.name=folder:PATH with an existing folder")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        self.files: list[Path] = []
        self.skipped: list[Path] = []
        for p in files:
            try:
                with Image.open(p) as im:  # decode fully: verify() alone passes truncated files
                    im.load()
                self.files.append(p)
            except Exception:
                if on_corrupt != "skip":
                    raise KdgenError(
                        f"image '{p}' is corrupt or not an image; remove it or set data.on_corrupt=skip"
                    ) from None
                self.skipped.append(p)
        if self.skipped:
            log.warning("skipped %d corrupt image(s) in %s, e.g. %s", len(self.skipped), self.root, self.skipped[0])
        if not self.files:
            raise KdgenError(f"image folder '{self.root}' holds no readable png/jpg/webp images")
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        try:
            return {"image": self._read(self.files[i])}
        except OSError:  # changed on disk since it was checked
            raise KdgenError(f"image '{self.files[i]}' can no longer be read; restore or remove it") from None

    def _read(self, path: Path) -> torch.Tensor:
        with Image.open(path) as im:
            im = im.convert("L" if self.channels == 1 else "RGB")
            w, h = im.size
            scale = self.image_size / min(w, h)
            im = im.resize((max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            im = im.crop((left, top, left + self.image_size, top + self.image_size))
            arr = np.asarray(im, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(arr.copy()) / 127.5 - 1.0
