"""Datasets as dict batches: {"image": [C, H, W] in [-1, 1], "label": int (when there is one)}.

Names: mnist5k, digits (offline, shipped); mnist, fashion-mnist, cifar10 (torchvision, download);
folder:PATH (any folder of images).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import KdgenError
from ..registry import Registry
from . import builtin, hub, user
from .folder import ImageFolderDataset

ARRAY_DATASETS: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry("dataset")
ARRAY_DATASETS.register("mnist5k")(lambda split, root: builtin.mnist5k(split))
ARRAY_DATASETS.register("digits")(lambda split, root: builtin.digits(split))
for _name in hub.TORCHVISION:
    ARRAY_DATASETS.register(_name)(lambda split, root, _n=_name: hub.torchvision_arrays(_n, split, root))

NATIVE = {"mnist5k": (28, 1), "digits": (8, 1), "mnist": (28, 1), "fashion-mnist": (28, 1), "cifar10": (32, 3)}


def dataset_names() -> list[str]:
    return ARRAY_DATASETS.names() + ["folder:PATH"]


class TensorImageDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i]}
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


def fit_images(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) and convert channel count (1 <-> 3)."""
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1).contiguous()
        elif channels == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise KdgenError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    return images.clamp(-1, 1)


def has_test_split(name: str) -> bool:
    """False for data that is one set (a folder, a Dataset handed in): it is both training data and reference."""
    return not name.startswith(("folder:", user.PREFIX))


def native_shape(name: str) -> tuple[int, int] | None:
    """(image_size, channels) a named dataset comes in, or None for folders."""
    return NATIVE.get(name)


def load_dataset(
    name: str, *, split: str = "train", image_size: int | None = None, channels: int | None = None,
    root: str = "~/.cache/kdgen/datasets", on_corrupt: str = "error",
) -> torch.utils.data.Dataset:
    """A Dataset of dict items for `name` and `split` ('train' | 'test'), at the given size/channels."""
    if split not in ("train", "test"):
        raise KdgenError(f"split must be 'train' or 'test', got '{split}'")
    if name.startswith(user.PREFIX):  # a Dataset handed in from Python: one set, no held-out split
        ds = user.live_dataset(name)
        if image_size is not None and channels is not None:
            ds.check_shape(channels, image_size)
        return ds
    if name.startswith("folder:"):
        if image_size is None or channels is None:
            raise KdgenError("a folder dataset needs data.image_size and data.channels (or a teacher to take them from)")
        return ImageFolderDataset(name.split(":", 1)[1], image_size=image_size, channels=channels, on_corrupt=on_corrupt)
    if name not in ARRAY_DATASETS:
        ARRAY_DATASETS.get(name)  # raises, listing the names
    images, labels = ARRAY_DATASETS.get(name)(split, root)
    size, ch = NATIVE[name]
    images = fit_images(images, image_size or size, channels or ch)
    return TensorImageDataset(images, labels)


def stack_images(dataset: torch.utils.data.Dataset, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """All images of a dataset as one tensor, or `limit` of them drawn without replacement (seeded:
    datasets are often sorted by class, so the first `limit` would not be a fair sample)."""
    n = len(dataset)
    idx = torch.arange(n) if limit is None or limit >= n else torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
    if isinstance(dataset, TensorImageDataset):
        return dataset.images[idx]
    return torch.stack([dataset[int(i)]["image"] for i in idx])
