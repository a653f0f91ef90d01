"""A teacher-output cache for generator distillation (TinyGAN-style pairs).

TinyGAN (Chang & Lu, 2020) distils BigGAN from a fixed set of (noise, teacher image) pairs generated once, so the
teacher never runs during training. kdgen writes such pairs (with the teacher's tapped features when a feature term
needs them) once, in safetensors shards of PART pairs, each with its sha256 beside it:

    CACHE/KEY/manifest.json            what the pairs are: teacher fingerprint, z shape, count, seed, layers
    CACHE/KEY/part-0000.safetensors    z [PART, *z_shape], image [PART, C, H, W], feat.LAYER ...

KEY is the sha256 of everything that decides the pairs (the teacher's weights among them), so runs of the same teacher
share one cache, a changed teacher gets a new one, and a killed write resumes at the first missing shard. Under several
processes, rank r draws the shards r, r + world, ... and every rank waits until all are there.

`data.teacher_cache`: null (the teacher runs live), `auto` (~/.cache/kdgen/teacher-cache) or a folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from .errors import KdgenError
from .io import atomic_write_bytes, atomic_write_text, checksum_path, ensure_dir, verify_checksum

PART = 256  # pairs per shard
VERSION = 2  # of the cache's layout and of how pairs are drawn; part of the key (2: features in fp16)
DEFAULT_ROOT = "~/.cache/kdgen/teacher-cache"
log = logging.getLogger("kdgen")


def fingerprint(module: nn.Module) -> str:
    """sha256 of a module's class and every tensor of its state dict: the same weights give the same cache."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_folder(setting: str, spec: dict) -> Path:
    root = Path(DEFAULT_ROOT if setting == "auto" else setting).expanduser()
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    return ensure_dir(root / key, what="the teacher cache folder (data.teacher_cache)")


def _latents(part: int, seed: int, z_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(PART, *z_shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + part))


@torch.no_grad()
def generator_cache(teacher: nn.Module, *, setting: str, count: int, z_shape: tuple[int, ...], layers: list[str],
                    seed: int, wait_seconds: float = 3600.0) -> "TeacherPairs":
    """The cache of `count` (z, teacher image[, features]) pairs for `teacher`: written where missing, then read whole."""
    from .taps import FeatureTaps

    spec = {"version": VERSION, "teacher": fingerprint(teacher), "z_shape": list(z_shape), "count": int(count),
            "seed": int(seed), "layers": sorted(layers), "part": PART}
    folder = cache_folder(setting, spec)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")

    def shard(i: int) -> dict[str, torch.Tensor]:
        z = _latents(i, seed, z_shape)
        with FeatureTaps(teacher, sorted(layers), role="teacher") as taps:
            image = teacher(z.to(device))
        out = {"z": z, "image": image.float().cpu()}
        for name, t in taps.outputs.items():
            out[f"feat.{name}"] = (t[0] if isinstance(t, (tuple, list)) else t).half().cpu()  # fp16: half the bytes of a feature target
        return out

    was = next(teacher.parameters()).device
    teacher.to(device)
    try:
        names, made, seconds = draw_shards(folder, spec, math.ceil(count / PART), shard, wait_seconds=wait_seconds)
    finally:
        teacher.to(was)
    return TeacherPairs(folder, names, count, made=made, seconds=seconds)


def draw_shards(folder: Path, spec: dict, parts: int, make, *, prefix: str = "part", wait_seconds: float = 3600.0) -> tuple[list[Path], int, float]:
    """Write the shards `make(i)` of a cache that are missing or damaged (this process's share: i = rank, rank + world,
    ...), each with its sha256, then wait until every process has written its share. Returns (the shard files, how many
    this process drew, seconds)."""
    from safetensors.torch import save

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    names = [folder / f"{prefix}-{i:04d}.safetensors" for i in range(parts)]
    made, t0 = 0, time.perf_counter()
    for i in range(rank, parts, world):
        if not _intact(names[i]):
            atomic_write_bytes(names[i], save({k: v.contiguous() for k, v in make(i).items()}), checksum=True)
            made += 1
    if rank == 0:
        atomic_write_text(folder / "manifest.json", json.dumps(spec, indent=2) + "\n")
    _wait_for(names, wait_seconds)
    seconds = time.perf_counter() - t0
    if made:
        log.info("teacher cache: drew %d of %d shards into %s in %.1f s", made, parts, folder, seconds)
    return names, made, seconds


def _intact(f: Path) -> bool:
    """A shard counts when it and its sha256 are both there and agree; a shard without one (its write was killed between
    the two) or a damaged one is drawn again - its sha256 removed first, so no other process takes it as done."""
    if not f.is_file() or not checksum_path(f).is_file():
        return False
    try:
        verify_checksum(f)
    except KdgenError as e:
        log.warning("%s; drawing that shard again", e)
        checksum_path(f).unlink(missing_ok=True)
        f.unlink(missing_ok=True)
        return False
    return True


def _wait_for(names: list[Path], wait_seconds: float) -> None:
    """Every shard written (by this process or the others); a rank that never writes its share is a sentence, not a hang."""
    deadline = time.monotonic() + wait_seconds
    while True:
        missing = [f for f in names if not (f.is_file() and checksum_path(f).is_file())]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise KdgenError(f"the teacher cache in '{missing[0].parent}' still lacks {len(missing)} shard(s) (e.g. {missing[0].name}) "
                             f"after {wait_seconds:.0f} s; another process must have stopped - rerun to finish it")
        time.sleep(0.5)


def read_shards(names: list[Path], count: int) -> dict[str, torch.Tensor]:
    """The shards' tensors, checked against their sha256 and joined along the first dimension, cut to `count`."""
    from safetensors.torch import load_file

    shards = []
    for f in names:
        verify_checksum(f)
        shards.append(load_file(str(f)))
    return {k: torch.cat([s[k] for s in shards])[:count] for k in shards[0]}


class TeacherPairs(torch.utils.data.Dataset):
    """The cached pairs, read whole into memory; item i: {"z", "teacher_image", "teacher_feat.LAYER" ...}."""

    def __init__(self, folder: Path, names: list[Path], count: int, *, made: int = 0, seconds: float = 0.0):
        self.tensors = read_shards(names, count)
        self.folder, self.count, self.made, self.seconds = folder, count, made, seconds

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {("teacher_" + k if k != "z" else k): v[i].float() for k, v in self.tensors.items()}

    @property
    def bytes_per_pair(self) -> int:
        return sum(v[0].numel() * v.element_size() for v in self.tensors.values())

    def record(self) -> dict:
        return {"folder": str(self.folder), "pairs": self.count, "bytes_per_pair": self.bytes_per_pair,
                "shards_drawn_now": self.made, "seconds": round(self.seconds, 1)}


class WithPairs(torch.utils.data.Dataset):
    """The training images, each with one cached pair: item i is image i (mod the images) and pair i (mod the pairs),
    for an epoch as long as the longer of the two."""

    def __init__(self, images: torch.utils.data.Dataset, pairs: TeacherPairs):
        self.images, self.pairs = images, pairs

    def __len__(self) -> int:
        return max(len(self.images), len(self.pairs))

    def __getitem__(self, i: int) -> dict:
        item = self.images[i % len(self.images)]
        return {**(item if isinstance(item, dict) else {"image": item}), **self.pairs[i % len(self.pairs)]}
