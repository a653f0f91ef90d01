"""Paired image-to-image tasks made from any image dataset, offline: (degraded input, clean target) pairs.

    sr4        super-resolution x4: the image shrunk 4x (area average), then enlarged back (bicubic) - the network
               restores detail at the target's size (pre-upsampled SR, as SRCNN and VDSR take their inputs)
    denoise    additive Gaussian noise of standard deviation `noise_sigma` (in the [-1, 1] range of the images)
    colorize   the image's luma (ITU-R BT.601 weights) as a 1-channel input, the colour image as the target
    none       input = target (unpaired data: a user with only input images distils from the teacher's outputs)

The degradation of image i is drawn from (seed, i) when `fixed` (held-out pairs: the same for every run and model). Training
items carry the clean image only: the method degrades each batch inside its training step (`with_input`), from the
global torch stream that checkpoints restore, so a resumed run draws the noise an uninterrupted one would (a loader
fetching a batch ahead would otherwise draw it before the checkpoint and again after it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import KdgenError

TASKS = ("sr4", "denoise", "colorize", "none")


def task_channels(task: str, channels: int) -> tuple[int, int]:
    """(input channels, target channels) of `task` on images with `channels` channels."""
    if task == "colorize":
        if channels != 3:
            raise KdgenError(f"data.task=colorize needs colour images (3 channels); these have {channels} - pick sr4 or denoise")
        return 1, 3
    return channels, channels


def degrade(images: torch.Tensor, task: str, *, noise_sigma: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The task's input for clean images [n, C, H, W] in [-1, 1]."""
    if task == "sr4":
        n, c, h, w = images.shape
        if h % 4 or w % 4:
            raise KdgenError(f"data.task=sr4 shrinks images 4x; {h}x{w} is not divisible by 4 - use data.image_size=32 or 64")
        small = F.interpolate(images, size=(h // 4, w // 4), mode="area")
        return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    if task == "denoise":
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype) if generator is not None else torch.randn_like(images)
        return (images + noise_sigma * noise.to(images.device)).clamp(-1, 1)
    if task == "colorize":
        w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    if task == "none":
        return images
    raise KdgenError(f"unknown data.task '{task}'; use one of {', '.join(TASKS)}")


def with_input(batch: dict, degradation: tuple[str, float] | None) -> dict:
    """The batch with its task input: as the data gave it (held-out pairs), or degraded now from the clean images - once
    per batch, stored in the batch so every phase of the step sees the same input."""
    if "input" not in batch:
        if degradation is None:
            raise KdgenError("this batch has no 'input' images and no task to make them from; give pairs with an 'input' key")
        task, sigma = degradation
        batch["input"] = degrade(batch["image"], task, noise_sigma=sigma)
    return batch


class PairedTask(torch.utils.data.Dataset):
    """Items {"input": degraded, "image": clean[, "label"]} over a dataset whose items are {"image": ...} dicts."""

    def __init__(self, images: torch.utils.data.Dataset, task: str, *, noise_sigma: float = 0.2, seed: int = 0, fixed: bool = False):
        if task not in TASKS:
            raise KdgenError(f"unknown data.task '{task}'; use one of {', '.join(TASKS)}")
        self.images, self.task, self.noise_sigma, self.seed, self.fixed = images, task, float(noise_sigma), int(seed), fixed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.images[i])
        if self.fixed:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(i))
            item["input"] = degrade(item["image"][None], self.task, noise_sigma=self.noise_sigma, generator=gen)[0]
        return item

    @property
    def degradation(self) -> tuple[str, float]:
        return self.task, self.noise_sigma

    def record(self) -> dict:
        """What a run records of its degradation."""
        out = {"task": self.task, "pairs": len(self)}
        if self.task == "denoise":
            out["noise_sigma"] = self.noise_sigma
        if self.task == "sr4":
            out["degradation"] = "area 4x down, bicubic 4x up"
        if self.task == "colorize":
            out["degradation"] = "BT.601 luma"
        return out
