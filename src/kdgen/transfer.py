"""A generated transfer set for classifier distillation.

Hinton et al. (2015, sec. 2) train the student on a *transfer set* that may be unlabelled: only the teacher's
soft targets are needed there. kdgen can grow that set with a generator's samples (a GAN that was trained on the
same training images, such as builtin:gan-mnist5k): the pool is drawn once before training, and every
distillation batch then carries `data.transfer_batch` pool images beside the labelled ones. The hard-label part
of a loss skips them (their label is IGNORE, which `F.cross_entropy` ignores); soft and feature terms use them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import KdgenError
from .faces import face_of
from .io import resolve_path

IGNORE = -100  # the label of a transfer image: F.cross_entropy's default ignore_index


def load_transfer_generator(path: str) -> nn.Module:
    """The kdgen generator named by data.transfer (eval mode, frozen), or one sentence saying why it cannot serve."""
    from .models.loading import load_model
    from .models.unet import is_diffusers_folder

    folder = resolve_path(path)
    if not Path(folder).exists():
        raise KdgenError(f"data.transfer '{path}' does not exist; set it to a kdgen generator folder (e.g. a GAN teacher's "
                         "'teacher' folder) or builtin:gan-mnist5k, or remove it")
    if is_diffusers_folder(folder):
        raise KdgenError(f"data.transfer '{path}' is a diffusion model, not a GAN generator; set it to a kdgen generator folder "
                         "such as builtin:gan-mnist5k")
    gen = load_model(folder)
    try:
        kind = face_of(gen).kind
    except KdgenError:  # a part with no face (a GAN's discriminator)
        kind = f"'{gen.kdgen_meta['family']}'"
    if kind != "generator":
        raise KdgenError(f"data.transfer '{path}' is a {kind}, not a GAN generator; set it to a kdgen generator folder "
                         "such as builtin:gan-mnist5k")
    return gen.eval().requires_grad_(False)


@torch.no_grad()
def draw_transfer_pool(gen: nn.Module, count: int, *, image_size: int, channels: int, seed: int, batch: int = 500) -> torch.Tensor:
    """`count` samples of `gen` ([count, C, H, W] on the CPU, in [-1, 1]) from latents seeded by `seed`; drawn on this
    process's GPU when there is one. A generator whose images do not have the teacher's (channels, image_size) is refused."""
    face = face_of(gen)
    size, ch, z_shape = face.image_size, face.channels, face.z_shape
    if (ch, size) != (channels, image_size):
        raise KdgenError(f"data.transfer makes {ch}x{size}x{size} images but the teacher reads {channels}x{image_size}x{image_size}; "
                         "use a generator trained at the teacher's image size and channels")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")
    gen = gen.to(device)
    rng = torch.Generator().manual_seed(seed)  # latents on the CPU: the same pool on every device
    out = []
    quiet = int(os.environ.get("RANK", "0")) != 0
    for start in tqdm(range(0, count, batch), desc="transfer set", unit="batch", leave=False, disable=quiet):
        z = torch.randn(min(batch, count - start), *z_shape, generator=rng).to(device)
        out.append(gen(z).clamp(-1, 1).float().cpu())
    return torch.cat(out)
