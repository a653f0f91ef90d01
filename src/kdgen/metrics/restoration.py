"""PSNR and SSIM of an image-to-image model on held-out pairs (torchmetrics), against the ground truth and a reference model.

Images are compared in [0, 1] (kdgen's [-1, 1] mapped by (x + 1) / 2), so PSNR = 10 log10(1 / MSE) with data range 1, and
SSIM uses torchmetrics' defaults (Gaussian window 11, sigma 1.5; Wang et al. 2004). Both are means over the images.

LPIPS (Zhang et al. 2018) is measured when the user gives the ImageNet weights of its backbone (eval.lpips: FILE, the
torchvision AlexNet, VGG16 or SqueezeNet 1.1 state dict, e.g. ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth):
the calibrated linear heads ship inside torchmetrics, the backbone does not, and kdgen downloads nothing at run time.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

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


# torchvision backbone -> (the torchmetrics LPIPS net name, a key its state dict has), tried in this order (a VGG16 also
# has AlexNet's key)
_LPIPS_NETS = {"vgg16": ("vgg", "features.28.weight"), "squeezenet1_1": ("squeeze", "features.12.expand3x3.weight"),
               "alexnet": ("alex", "features.10.weight")}


@functools.lru_cache(maxsize=1)  # a run checks the file before training and measures after: one load, the same file
def _lpips_net(path: str, stamp: tuple | None) -> tuple[nn.Module, str]:
    """The torchmetrics LPIPS net with its backbone's weights from `path`, and which backbone (`stamp`: the file's mtime
    and size, so a changed file is read again)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    from ..errors import KdgenError
    from ..io import load_state_dict_file

    state = load_state_dict_file(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = next((b for b, (_, key) in _LPIPS_NETS.items() if key in state), None)
    if backbone is None:
        raise KdgenError(f"eval.lpips '{path}' is not a torchvision AlexNet, VGG16 or SqueezeNet 1.1 state dict (no "
                         f"{', '.join(k for _, k in _LPIPS_NETS.values())}); give the file torchvision saves for one of them")
    net = _LPIPS(pretrained=True, net=_LPIPS_NETS[backbone][0], pnet_rand=True).eval()  # linear heads: torchmetrics' own file
    # the backbone's `features.N.*` -> where the LPIPS net keeps layer N (sliceK.N.* or slices.K.N.*)
    mine = {"features." + re.sub(r"^(slice\d+|slices\.\d+)\.", "", n): n for n, _ in net.net.named_parameters()}
    missing = [k for k in mine if k not in state]
    if missing:
        raise KdgenError(f"eval.lpips '{path}' lacks {missing[0]} of a {backbone}; give the complete torchvision state dict")
    wanted = net.net.state_dict()
    for k, n in mine.items():
        if state[k].shape != wanted[n].shape:
            raise KdgenError(f"eval.lpips '{path}': {k} has shape {tuple(state[k].shape)}, a {backbone} has "
                             f"{tuple(wanted[n].shape)}; give the torchvision {backbone} weights")
    net.net.load_state_dict({n: state[k] for k, n in mine.items()})
    for p in net.parameters():
        p.requires_grad_(False)
    return net, backbone


class Lpips:
    """LPIPS between image batches in [-1, 1] (lower: more alike), its backbone read from a torchvision weights file."""

    MIN_SIZE = 64

    def __init__(self, path: str, *, batch_size: int = 64):
        self.path, self.batch_size = str(Path(path).expanduser()), batch_size
        st = Path(self.path).stat() if Path(self.path).is_file() else None
        self.net, self.backbone = _lpips_net(self.path, (st.st_mtime_ns, st.st_size) if st else None)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        """Mean LPIPS over the pairs; grey images are repeated to RGB (the backbones take 3 channels), and images under
        MIN_SIZE px enlarged to it (bilinear): AlexNet's pooling leaves nothing of a 28 px image."""
        total = 0.0
        for i in range(0, len(pred), self.batch_size):
            p, t = (self._shaped(b[i:i + self.batch_size]) for b in (pred, target))
            total += float(self.net(p, t, normalize=False).sum())
        return round(total / len(pred), 4)

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < self.MIN_SIZE:
            x = torch.nn.functional.interpolate(x, size=(self.MIN_SIZE, self.MIN_SIZE), mode="bilinear", align_corners=False)
        return x

    def record(self, image_size: int) -> dict:
        from ..io import file_sha256

        return {"backbone": self.backbone, "file": self.path, "sha256": file_sha256(Path(self.path)),
                "compared_at": f"{max(image_size, self.MIN_SIZE)} px" + (f" (bilinear up from {image_size})" if image_size < self.MIN_SIZE else "")}
