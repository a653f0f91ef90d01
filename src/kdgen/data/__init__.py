"""Datasets as dict batches: {"image": [C, H, W] in [-1, 1], "label": int (when there is one)}.

Names: mnist5k, digits (offline, shipped); emoji (RGB, built from an npm package by `kdgen data install emoji`);
mnist, fashion-mnist, cifar10 (torchvision, download); folder:PATH (any folder of images, class sub-folders as labels).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import KdgenError
from ..registry import Registry
from . import builtin, emoji, hub, user
from .folder import ImageFolderDataset, folder_shape, split_record

ARRAY_DATASETS: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry("dataset")
ARRAY_DATASETS.register("mnist5k")(lambda split, root: builtin.mnist5k(split))
ARRAY_DATASETS.register("digits")(lambda split, root: builtin.digits(split))
ARRAY_DATASETS.register("emoji")(emoji.arrays)
for _name in hub.TORCHVISION:
    ARRAY_DATASETS.register(_name)(lambda split, root, _n=_name: hub.torchvision_arrays(_n, split, root))

# (image_size, channels) a named dataset is read at by default (emoji is stored at 64 px and read at 32)
NATIVE = {"mnist5k": (28, 1), "digits": (8, 1), "emoji": (32, 3), "mnist": (28, 1), "fashion-mnist": (28, 1), "cifar10": (32, 3)}


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


def has_test_split(name: str, test_fraction: float = 0.1) -> bool:
    """False for data that is one set (a Dataset handed in, a folder with data.test_fraction=0): it is both training
    data and reference."""
    if name.startswith("folder:"):
        return test_fraction > 0
    return not name.startswith(user.PREFIX)


def native_shape(name: str, root: str = "", on_corrupt: str = "error") -> tuple[int, int] | None:
    """(image_size, channels) a dataset comes in (a folder's: its most common shorter side, greyscale or not); None
    for a Dataset handed in."""
    if name.startswith("folder:"):
        return folder_shape(name.split(":", 1)[1], on_corrupt)
    return NATIVE.get(name)


def data_split(data, split: str, *, image_size: int, channels: int) -> torch.utils.data.Dataset:
    """`split` of the dataset a run's data section (a DataConfig) names, at the model's shape."""
    return load_dataset(data.name, split=split, image_size=image_size, channels=channels, root=data.root, on_corrupt=data.on_corrupt,
                        test_fraction=data.test_fraction, split_seed=data.split_seed)


def split_info(data) -> dict | None:
    """The recorded held-out split of a folder (None for data whose split is fixed, or that has none)."""
    if data.name.startswith("folder:") and data.test_fraction > 0:
        return split_record(data.name.split(":", 1)[1], test_fraction=data.test_fraction, seed=data.split_seed, on_corrupt=data.on_corrupt)
    return None


def load_dataset(
    name: str, *, split: str = "train", image_size: int | None = None, channels: int | None = None,
    root: str = "~/.cache/kdgen/datasets", on_corrupt: str = "error", test_fraction: float = 0.1, split_seed: int = 0,
) -> torch.utils.data.Dataset:
    """A Dataset of dict items for `name` and `split` ('train' | 'test'), at the given size/channels.

    A folder's test split is its seeded held-out share (`test_fraction`, `split_seed`); with test_fraction=0 both
    splits are the whole folder."""
    if split not in ("train", "test"):
        raise KdgenError(f"split must be 'train' or 'test', got '{split}'")
    if name.startswith(user.PREFIX):  # a Dataset handed in from Python: one set, no held-out split
        ds = user.live_dataset(name)
        if image_size is not None and channels is not None:
            ds.check_shape(channels, image_size)
        return ds
    if name.startswith("folder:"):
        folder = name.split(":", 1)[1]
        if image_size is None or channels is None:
            size, ch = folder_shape(folder, on_corrupt)
            image_size, channels = image_size or size, channels or ch
        return ImageFolderDataset(folder, image_size=image_size, channels=channels, on_corrupt=on_corrupt,
                                  split=split if test_fraction > 0 else "all", test_fraction=test_fraction, split_seed=split_seed)
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
