"""PSNR and SSIM of an image-to-image model on held-out pairs (torchmetrics), against the ground truth and a reference model.

Images are compared in [0, 1] (kdgen's [-1, 1] mapped by (x + 1) / 2), so PSNR = 10 log10(1 / MSE) with data range 1, and
SSIM uses torchmetrics' defaults (Gaussian window 11, sigma 1.5; Wang et al. 2004). Both are means over the images.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils import device_of, eval_mode


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


@torch.no_grad()
def outputs(model: nn.Module, pairs: torch.utils.data.Dataset, *, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, model outputs, ground truth) over every pair, on the CPU."""
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size, shuffle=False)
    xs, outs, ys = [], [], []
    with eval_mode(model):
        device = device_of(model)
        for b in loader:
            xs.append(b["input"]), ys.append(b["image"])
            outs.append(model(b["input"].to(device)).float().cpu())
    return torch.cat(xs), torch.cat(outs), torch.cat(ys)


def shown_as(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inputs with the targets' channel count (a 1-channel colorization input repeated as grey RGB), to compare or show."""
    return x if x.shape[1] == like.shape[1] else x.expand(-1, like.shape[1], -1, -1)


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of `pred` against `target`, both [n, C, H, W] in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p, t = _unit(pred), _unit(target)
    psnr = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3)).mean()
    ssim = structural_similarity_index_measure(p, t, data_range=1.0)
    return {"psnr": round(float(psnr), 3), "ssim": round(float(ssim), 4)}
