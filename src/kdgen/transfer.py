"""A generated transfer set for classifier distillation.

Hinton et al. (2015, sec. 2) train the student on a *transfer set* that may be unlabelled: only the teacher's
soft targets are needed there. kdgen can grow that set with a generator's samples (a GAN that was trained on the
same training images, such as builtin:gan-mnist5k): the pool is drawn once before training, and every
distillation batch then carries `data.transfer_batch` pool images beside the labelled ones. The hard-label part
of a loss skips them (their label is IGNORE, which `F.cross_entropy` ignores); soft and feature terms use them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import KdgenError
from .io import resolve_path

IGNORE = -100  # the label of a transfer image: F.cross_entropy's default ignore_index


def load_transfer_generator(path: str) -> nn.Module:
    """The kdgen generator named by data.transfer, or one sentence saying why it cannot serve."""
    from .models.unet import DiffusionModel
    from .teacher import load_teacher

    folder = resolve_path(path)
    if not Path(folder).exists():
        raise KdgenError(f"data.transfer '{path}' does not exist; set it to a kdgen generator folder (e.g. a GAN teacher's "
                         "'teacher' folder) or builtin:gan-mnist5k, or remove it")
    gen = load_teacher(path)
    if isinstance(gen, DiffusionModel) or not gen.kdgen_meta["family"].endswith("generator"):
        raise KdgenError(f"data.transfer '{path}' is a '{gen.kdgen_meta['family']}', not a GAN generator; "
                         "set it to a kdgen generator folder such as builtin:gan-mnist5k")
    return gen


@torch.no_grad()
def draw_transfer_pool(gen: nn.Module, count: int, *, image_size: int, channels: int, seed: int, batch: int = 500) -> torch.Tensor:
    """`count` samples of `gen` ([count, C, H, W] on the CPU, in [-1, 1]) from latents seeded by `seed`.
    A generator whose images do not have the teacher's (channels, image_size) is refused."""
    args = gen.kdgen_meta["args"]
    got = (args.get("channels", 1), args.get("image_size", 28))
    if got != (channels, image_size):
        raise KdgenError(f"data.transfer makes {got[0]}x{got[1]}x{got[1]} images but the teacher reads {channels}x{image_size}x{image_size}; "
                         "use a generator trained at the teacher's image size and channels")
    z_dim = args.get("z_dim", 100)
    device = next(gen.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in tqdm(range(0, count, batch), desc="transfer set", unit="batch", leave=False):
        z = torch.randn(min(batch, count - start), z_dim, generator=rng).to(device)
        out.append(gen(z).clamp(-1, 1).float().cpu())
    return torch.cat(out)
