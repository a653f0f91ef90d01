"""torchvision datasets that download on a user's machine; offline they fail with one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import KdgenError

TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def torchvision_arrays(name: str, split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    folder = Path(root).expanduser()
    try:
        ds = cls(str(folder), train=(split == "train"), download=True)
    except Exception as e:  # urllib / socket / RuntimeError("Error downloading ...") all land here
        raise KdgenError(
            f"dataset '{name}' must be downloaded and the download into '{folder}' failed "
            f"({type(e).__name__}); run once with internet (or set data.root to a folder that has it), "
            "or use the offline dataset 'mnist5k'"
        ) from None
    data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    if data.ndim == 3:
        data = data[:, None]
    else:
        data = data.transpose(0, 3, 1, 2)
    images = torch.from_numpy(data.astype(np.float32)) / 127.5 - 1.0
    return images, torch.as_tensor(np.asarray(ds.targets))
