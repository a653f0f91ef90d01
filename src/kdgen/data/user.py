"""A torch Dataset the user hands to `kdgen.distill(data=...)`, read through kdgen's batch contract.

Items may be
    an image tensor [C, H, W]                       (unlabelled)
    a tuple or list (image, label, ...)             (torchvision's datasets with a transform)
    a dict {"image": [C, H, W], "label": int?}      (kdgen's own)
Images are float tensors in [-1, 1]. A dataset whose first items all lie in [0, 1] (what
torchvision's ToTensor gives) is mapped to [-1, 1] as 2x - 1, and kdgen says so once. The dataset
lives in this process only: its run records the name `python:ClassName`, and re-measuring the run in
a fresh process needs the dataset handed in again.
"""

from __future__ import annotations

import logging

import torch

from ..errors import KdgenError
from .folder import StackedImages

log = logging.getLogger("kdgen")
PREFIX = "python:"
_LIVE: dict[str, "UserDataset"] = {}  # python:NAME -> the dataset handed in, for this process's evaluation


class UserDataset(StackedImages, torch.utils.data.Dataset):
    def __init__(self, dataset: torch.utils.data.Dataset):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise KdgenError(f"data must be a torch Dataset (with __len__ and __getitem__) or a dataset name, got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise KdgenError(f"the {type(dataset).__name__} handed in as data is empty; give a dataset with images")
        self.dataset = dataset
        self.name = _name_for(dataset)
        probe = [self._parse(dataset[i], i) for i in range(min(64, len(dataset)))]
        self.labelled = probe[0][1] is not None
        if any((lab is not None) != self.labelled for _, lab in probe):
            raise KdgenError(f"some items of {type(dataset).__name__} have labels and some do not; label all of them or none")
        shapes = {tuple(img.shape) for img, _ in probe}
        if len(shapes) != 1:
            raise KdgenError(f"the images of {type(dataset).__name__} differ in shape ({sorted(shapes)[:2]}); resize them to one (C, H, W)")
        self.image_shape = shapes.pop()
        lo, hi = min(float(i.min()) for i, _ in probe), max(float(i.max()) for i, _ in probe)
        if lo < -1.01 or hi > 1.01:
            raise KdgenError(f"the images of {type(dataset).__name__} range over [{lo:.3g}, {hi:.3g}]; kdgen reads images in [-1, 1] "
                             "(or [0, 1]) - normalise them")
        self.unit = lo >= 0  # [0, 1] images: mapped to [-1, 1]
        if self.unit:
            log.info("the images of %s lie in [0, 1]; kdgen maps them to [-1, 1] as 2x - 1", type(dataset).__name__)
        self._labels: torch.Tensor | None = None
        _LIVE[self.name] = self

    @property
    def labels(self) -> torch.Tensor | None:
        """Every label as one tensor (what measuring a classifier reads); read once, on first use - training never needs it."""
        if self.labelled and self._labels is None:
            self._labels = torch.tensor([int(self._parse(self.dataset[i], i)[1]) for i in range(len(self))])
        return self._labels

    @staticmethod
    def _parse(item, i: int) -> tuple[torch.Tensor, int | None]:
        label = None
        if isinstance(item, dict):
            if "image" not in item:
                raise KdgenError(f"item {i} of the dataset is a dict without 'image'; give {{'image': tensor, 'label': int}}")
            image, label = item["image"], item.get("label")
        elif isinstance(item, (tuple, list)):
            if not item:
                raise KdgenError(f"item {i} of the dataset is empty; give (image, label) or an image tensor")
            image = item[0]
            label = item[1] if len(item) > 1 else None
        else:
            image = item
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise KdgenError(f"item {i} of the dataset has image {shape}; kdgen needs a float tensor [C, H, W] "
                             "(add transforms.ToTensor() to a torchvision dataset)")
        if label is not None:
            if isinstance(label, torch.Tensor):
                if label.numel() != 1:
                    raise KdgenError(f"item {i} of the dataset has a label of shape {tuple(label.shape)}; give one class index")
                label = int(label.item())
            elif not isinstance(label, int) or isinstance(label, bool):
                raise KdgenError(f"item {i} of the dataset has label {label!r}; give an integer class index")
        return image.float(), label

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, label = self._parse(self.dataset[i], i)
        if self.unit:
            image = image * 2 - 1
        item = {"image": image.clamp(-1, 1)}
        if label is not None:
            item["label"] = torch.tensor(label)
        return item

    def check_shape(self, channels: int, image_size: int) -> None:
        want = (channels, image_size, image_size)
        if self.image_shape != want:
            raise KdgenError(f"the data's images are {self.image_shape} but the model's are {want}; resize the dataset's images "
                             f"to {image_size}x{image_size} with {channels} channel(s)")


def _name_for(dataset) -> str:
    """python:ClassName, numbered when another dataset of that class was handed in earlier (the same one keeps its name)."""
    for name, live in _LIVE.items():
        if live.dataset is dataset:
            return name
    base, n = PREFIX + type(dataset).__name__, 1
    name = base
    while name in _LIVE:
        n += 1
        name = f"{base}-{n}"
    return name


def live_dataset(name: str) -> UserDataset:
    if name not in _LIVE:
        raise KdgenError(f"data '{name}' was a Dataset handed to kdgen in another Python process; hand it in again "
                         "(kdgen.evaluate(run, data=dataset)) or give a dataset name")
    return _LIVE[name]
