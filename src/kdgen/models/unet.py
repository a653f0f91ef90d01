"""Diffusion models as kdgen sees them: a diffusers `UNet2DModel` plus its noise schedule and sampling recipe.

A kdgen diffusion folder is a plain diffusers folder, flat, so that diffusers alone loads it:

    config.json                          UNet2DModel.from_pretrained(folder)
    diffusion_pytorch_model.safetensors
    scheduler_config.json                DDIMScheduler.from_pretrained(folder)  (LCMScheduler for consistency students)
    kdgen.json                           {"family": "diffusion", "steps": 4, "guidance_scale": 1.0, ...}

Teachers may also come as a pipeline folder (`model_index.json` + `unet/` + `scheduler/`, what
`DDPMPipeline.save_pretrained` writes) or a hub id (needs internet).

Class-conditional UNets (`num_class_embeds`): kdgen trains them with one extra "null" class
(index `num_classes`) for classifier-free guidance (Ho & Salimans 2022):
    out = out(x, null) + w * (out(x, y) - out(x, null)).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KdgenError
from ..io import verify_checksum

log = logging.getLogger("kdgen")

KDGEN_JSON = "kdgen.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"

# schedulers whose noise process is the discrete DDPM one (betas over num_train_timesteps): kdgen's
# samplers and methods re-use their betas and sample with DDIM (or LCM for consistency students)
DISCRETE_SCHEDULERS = {
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LCMScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "UniPCMultistepScheduler", "DEISMultistepScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# what a UNet saved without its scheduler gets: Ho et al. (2020), and diffusers' DDPMScheduler defaults
DEFAULT_DDPM_SCHEDULE = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
                         "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True}
SAMPLERS = ("DDIMScheduler", "LCMScheduler")


def check_scheduler_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    name = config.get("_class_name", "DDPMScheduler")
    if name not in DISCRETE_SCHEDULERS:
        raise KdgenError(
            f"{where} uses a {name}, whose noise process is not the discrete DDPM one (betas over timesteps) "
            f"that kdgen's samplers and methods need; use a model trained with one of: {', '.join(sorted(DISCRETE_SCHEDULERS))}"
        )
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise KdgenError(f"{where} predicts '{config.get('prediction_type')}'; kdgen handles {', '.join(PREDICTION_TYPES)}")
    if config.get("thresholding"):
        raise KdgenError(f"{where} uses dynamic thresholding, which kdgen's DDIM maths does not reproduce; set thresholding: false in scheduler_config.json")
    if config.get("use_karras_sigmas") or config.get("use_exponential_sigmas") or config.get("use_beta_sigmas"):
        raise KdgenError(f"{where} samples on Karras/exponential sigmas; kdgen distils with the plain DDPM timesteps - turn them off in scheduler_config.json")
    return config


def sampling_scheduler(config: dict[str, Any], kind: str = "DDIMScheduler", **overrides):
    """A fresh diffusers scheduler for sampling, on the model's betas. DDIM uses 'trailing' timesteps, so
    1..N steps all start from the last (pure-noise) timestep (Lin et al. 2024, "Common diffusion noise
    schedules and sample steps are flawed")."""
    from diffusers import DDIMScheduler, LCMScheduler

    base = {k: v for k, v in config.items() if not k.startswith("_")}
    if kind == "DDIMScheduler":
        base["timestep_spacing"] = "trailing"  # what kdgen's methods train on, whatever the teacher's config said
        return DDIMScheduler.from_config({**base, **overrides})
    if kind == "LCMScheduler":
        return LCMScheduler.from_config({**base, **overrides})
    raise KdgenError(f"unknown sampler '{kind}'; kdgen samples with {', '.join(SAMPLERS)}")


class DiffusionModel(nn.Module):
    """UNet + noise schedule + how to sample it (scheduler kind, steps, guidance). forward = one network call."""

    face_kind = "diffusion"

    def __init__(self, unet: nn.Module, scheduler_config: dict[str, Any], *, steps: int = 64, sampler: str = "DDIMScheduler",
                 guidance_scale: float = 1.0, num_classes: int | None = None, extra: dict[str, Any] | None = None):
        super().__init__()
        if unet.config.get("class_embed_type") is not None:
            raise KdgenError(
                f"this UNet is conditioned through class_embed_type='{unet.config.get('class_embed_type')}'; kdgen handles "
                "unconditional UNets and class-conditional ones with num_class_embeds (an embedding table) only"
            )
        self.unet = unet
        self.scheduler_config = check_scheduler_config(dict(scheduler_config), "this model")
        self.steps, self.sampler, self.guidance_scale = int(steps), sampler, float(guidance_scale)
        embeds = unet.config.get("num_class_embeds")
        if num_classes is None and embeds:
            num_classes = int(embeds) - 1 if (extra or {}).get("null_class") else int(embeds)
        self.num_classes = num_classes
        self.null_class = (extra or {}).get("null_class")
        self.extra = dict(extra or {})
        c = unet.config
        self.image_size = int(c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0])
        self.channels = int(c.in_channels)
        if int(c.out_channels) != self.channels:
            raise KdgenError(f"the UNet maps {c.in_channels} to {c.out_channels} channels; a diffusion teacher must output what it takes in")

    @property
    def kdgen_meta(self) -> dict[str, Any]:
        return self.meta()

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    def meta(self) -> dict[str, Any]:
        return {"family": "diffusion", "steps": self.steps, "sampler": self.sampler, "guidance_scale": self.guidance_scale,
                "num_classes": self.num_classes, "null_class": self.null_class, **self.extra,
                "args": {"image_size": self.image_size, "channels": self.channels}}

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, t, class_labels=class_labels).sample

    def guided(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, scale: float | None = None) -> torch.Tensor:
        """The prediction used for sampling: classifier-free guided when labelled, scale != 1 and a null class exists."""
        scale = self.guidance_scale if scale is None else scale
        if labels is None or scale == 1.0 or self.null_class is None:
            return self(x, t, labels)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        null = torch.full_like(labels, int(self.null_class))
        both = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        n = x.shape[0]
        cond, uncond = both[:n], both[n:]  # slices, not chunk(2): chunk makes torch.export specialise the batch size
        return uncond + scale * (cond - uncond)

    def evals_per_step(self, labelled: bool) -> int:
        return 2 if labelled and self.guidance_scale != 1.0 and self.null_class is not None else 1

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Balanced labels 0, 1, ..., K-1, 0, ... for a class-conditional model; None otherwise."""
        return torch.arange(n) % self.num_classes if self.num_classes else None

    def make_scheduler(self, **overrides):
        return sampling_scheduler(self.scheduler_config, self.sampler, **overrides)


# --------------------------------------------------------------------------- building


def build_unet(args: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    try:
        return UNet2DModel(**args)
    except (TypeError, ValueError, AttributeError) as e:
        raise KdgenError(f"cannot build a diffusers UNet2DModel from model.args.unet={args} ({e}); fix model.args.unet") from None


def student_unet_config(teacher_config: dict[str, Any], *, width: float, layers_per_block: int | None, attention: bool) -> dict[str, Any]:
    """The teacher's UNet config made smaller: channels x width, fewer resnets per stage, attention blocks removed."""
    cfg = {k: v for k, v in dict(teacher_config).items() if not k.startswith("_")}
    channels = [max(1, int(round(c * width))) for c in cfg["block_out_channels"]]
    groups = int(cfg.get("norm_num_groups") or 32)
    while groups > 1 and any(c % groups for c in channels):
        groups //= 2
    if any(c % groups for c in channels) or min(channels) < groups:
        raise KdgenError(f"student.width={width} gives channels {channels}, which GroupNorm cannot split; use a larger width")
    cfg["block_out_channels"], cfg["norm_num_groups"] = channels, groups
    if layers_per_block is not None:
        if layers_per_block < 1:
            raise KdgenError(f"student.layers_per_block must be >= 1, got {layers_per_block}")
        cfg["layers_per_block"] = layers_per_block
    if not attention:
        cfg["down_block_types"] = [b.replace("AttnDownBlock2D", "DownBlock2D") for b in cfg["down_block_types"]]
        cfg["up_block_types"] = [b.replace("AttnUpBlock2D", "UpBlock2D") for b in cfg["up_block_types"]]
        if cfg.get("mid_block_type", "UNetMidBlock2D") == "UNetMidBlock2D":
            cfg["add_attention"] = False
    head = cfg.get("attention_head_dim")
    if head and any(c % head for c in channels):
        cfg["attention_head_dim"] = max(1, min(channels))
    return cfg


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module) -> dict[str, int]:
    """Copy the teacher's weights into the student where names match: whole tensors where shapes are
    equal, the leading slice where the student's are smaller (the same leading channels everywhere, so
    residual and skip paths stay aligned; BK-SDM initialises its block-removed students this way).
    Returns counts of copied / sliced / fresh tensors."""
    t_state = teacher.state_dict()
    counts = {"copied": 0, "sliced": 0, "fresh": 0}
    for name, s in student.state_dict().items():
        t = t_state.get(name)
        if t is None or t.dim() != s.dim() or any(a > b for a, b in zip(s.shape, t.shape)):
            counts["fresh"] += 1
            continue
        if t.shape == s.shape:
            s.copy_(t)
            counts["copied"] += 1
        else:
            s.copy_(t[tuple(slice(0, n) for n in s.shape)])
            counts["sliced"] += 1
    return counts


def build_diffusion_student(teacher: "DiffusionModel", *, width: float, layers_per_block: int | None, attention: bool,
                            init: str, seed: int) -> tuple["DiffusionModel", dict[str, int]]:
    from diffusers import UNet2DModel

    cfg = student_unet_config(teacher.unet.config, width=width, layers_per_block=layers_per_block, attention=attention)
    torch.manual_seed(seed)
    unet = UNet2DModel(**cfg)
    counts = init_from_teacher(unet, teacher.unet) if init in ("prune", "teacher") else {"copied": 0, "sliced": 0, "fresh": len(unet.state_dict())}
    return wrap_like(unet, teacher), counts


def wrap_like(unet: nn.Module, teacher: "DiffusionModel") -> "DiffusionModel":
    """A student UNet as a DiffusionModel on the teacher's schedule, steps, guidance and classes (DDIM-sampled)."""
    return DiffusionModel(unet, teacher.scheduler_config, steps=teacher.steps, sampler="DDIMScheduler",
                          guidance_scale=teacher.guidance_scale, num_classes=teacher.num_classes,
                          extra={"null_class": teacher.null_class} if teacher.null_class is not None else None)


# --------------------------------------------------------------------------- folders


def is_diffusers_folder(folder: Path) -> bool:
    if (folder / "model_index.json").is_file():
        return True
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("_class_name") == "UNet2DModel"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KdgenError(f"'{path}' ({what}) is not valid JSON ({type(e).__name__}); restore it from the run that wrote it") from None
    if not isinstance(data, dict):
        raise KdgenError(f"'{path}' ({what}) must hold a JSON object")
    return data


def load_diffusion(path: str | Path) -> DiffusionModel:
    """A DiffusionModel from a kdgen/diffusers flat folder, a pipeline folder (unet/ + scheduler/) or a hub id."""
    from diffusers import UNet2DModel

    folder = Path(str(path)).expanduser()
    if not folder.exists():
        return _load_hub(str(path))
    if (folder / "model_index.json").is_file() and (folder / "unet").is_dir():
        unet_dir, sched_file = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    else:
        unet_dir, sched_file = folder, folder / "scheduler_config.json"
    if not is_diffusers_folder(folder) or not (unet_dir / "config.json").is_file():
        raise KdgenError(
            f"'{folder}' is not a diffusers model folder (no config.json of a UNet2DModel, nor model_index.json with unet/); "
            "give the folder UNet2DModel.save_pretrained or DDPMPipeline.save_pretrained wrote"
        )
    unet_cfg = _read_json(unet_dir / "config.json", "UNet config")
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise KdgenError(f"'{folder}' holds a {unet_cfg.get('_class_name')}; kdgen distils diffusers UNet2DModel image models")
    if sched_file.is_file():
        sched = check_scheduler_config(_read_json(sched_file, "scheduler config"), f"'{folder}'")
    else:  # a UNet saved alone: the DDPM paper's schedule, which is also diffusers' DDPMScheduler default
        log.warning("'%s' has a UNet but no scheduler config (%s); assuming the default DDPM schedule (1000 linear betas "
                    "1e-4..0.02, epsilon prediction) - save the scheduler beside it if it was trained otherwise", folder, sched_file.name)
        sched = dict(DEFAULT_DDPM_SCHEDULE)
    weights = [p for p in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin") if (unet_dir / p).is_file()]
    if not weights:
        raise KdgenError(f"'{unet_dir}' has a UNet config but no weights (diffusion_pytorch_model.safetensors); copy the weights beside it")
    if weights[0].endswith(".bin"):
        raise KdgenError(f"'{unet_dir}' holds pickled .bin weights; kdgen never unpickles - re-save it with save_pretrained(safe_serialization=True)")
    verify_checksum(unet_dir / weights[0])
    meta = _read_json(folder / KDGEN_JSON, "kdgen sampling recipe") if (folder / KDGEN_JSON).is_file() else {}
    try:
        if meta.get("structure"):  # a torch-pruned UNet: its config builds the unpruned one, the structure re-shapes it
            unet = _load_pruned_unet(unet_dir, meta["structure"])
        else:
            unet = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as e:
        raise KdgenError(f"diffusers could not load the UNet in '{unet_dir}' ({str(e).splitlines()[0][:200]}); the folder is damaged") from None
    known = {"family", "steps", "sampler", "guidance_scale", "num_classes", "args"}
    extra = {k: v for k, v in meta.items() if k not in known}
    model = DiffusionModel(unet, sched, steps=meta.get("steps", 64), sampler=meta.get("sampler", "DDIMScheduler"),
                           guidance_scale=meta.get("guidance_scale", 1.0), num_classes=meta.get("num_classes"), extra=extra)
    model.eval().requires_grad_(False)
    model.kdgen_path = folder  # type: ignore[attr-defined]
    return model


def _load_pruned_unet(unet_dir: Path, structure: dict) -> nn.Module:
    from diffusers import UNet2DModel

    from ..io import load_state_dict_file
    from .custom import apply_structure

    unet = UNet2DModel.from_config(UNet2DModel.load_config(str(unet_dir)))
    apply_structure(unet, structure)
    unet.load_state_dict(load_state_dict_file(unet_dir / UNET_WEIGHTS))
    return unet


def prune_unet(teacher: "DiffusionModel", *, width: float, seed: int = 0) -> "DiffusionModel":
    """The teacher's UNet with `width` of every dependency group's channels kept (torch-pruning, L1 importance, the
    teacher's weights; Diff-Pruning, Fang et al. 2023, prunes diffusers UNets the same way). Attention keeps its head
    count (each head loses channels alike); `conv_out` and the timestep embedding keep their outputs. diffusers'
    blocks keep channel counts as attributes (Downsample2D asserts them), so those are set to the pruned shapes."""
    import copy

    import torch_pruning as tp

    unet = copy.deepcopy(teacher.unet).cpu().eval().requires_grad_(True)  # DepGraph traces through autograd
    before = sum(p.numel() for p in unet.parameters())
    x = torch.randn(2, teacher.channels, teacher.image_size, teacher.image_size, generator=torch.Generator().manual_seed(seed))
    t = torch.tensor([10, teacher.num_train_timesteps // 2])
    example = {"sample": x, "timestep": t}
    if teacher.num_classes is not None:
        example["class_labels"] = torch.tensor([0, 1]) % teacher.num_classes
    with torch.no_grad():
        want = unet(**example).sample.shape
    attn = [m for m in unet.modules() if type(m).__name__ == "Attention"]
    heads = {lin: a.heads for a in attn for lin in (a.to_q, a.to_k, a.to_v)}
    keep = [unet.conv_out, unet.time_embedding] + ([unet.class_embedding] if getattr(unet, "class_embedding", None) is not None else [])
    try:
        pruner = tp.pruner.MetaPruner(unet, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=1.0 - width,
                                      ignored_layers=keep, num_heads=heads)
        pruner.step()
    except Exception as e:
        raise KdgenError(f"torch-pruning could not prune this UNet ({type(e).__name__}: {e}); use student.structure=auto") from None
    for m in unet.modules():  # the channel counts diffusers' blocks keep as attributes
        kind = type(m).__name__
        if kind in ("Downsample2D", "Upsample2D") and getattr(m, "conv", None) is not None:
            m.channels, m.out_channels = m.conv.in_channels, m.conv.out_channels
        elif kind == "ResnetBlock2D":
            m.in_channels, m.out_channels = m.conv1.in_channels, m.conv2.out_channels
        elif kind == "Attention":
            m.inner_dim = m.to_q.out_features
    with torch.no_grad():
        got = unet(**example).sample.shape
    if got != want:
        raise KdgenError("pruning changed the UNet's output shape; use student.structure=auto")
    if width < 1 and sum(p.numel() for p in unet.parameters()) >= before:
        raise KdgenError(f"torch-pruning removed no channel from this UNet at student.width={width}; use student.structure=auto")
    extra = {"pruned": "torch-pruning", **({"null_class": teacher.null_class} if teacher.null_class is not None else {})}
    student = DiffusionModel(unet, teacher.scheduler_config, steps=teacher.steps, sampler="DDIMScheduler",
                             guidance_scale=teacher.guidance_scale, num_classes=teacher.num_classes, extra=extra)
    return student.train().requires_grad_(True)


def _load_hub(repo: str) -> DiffusionModel:
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        raise KdgenError(f"'{repo}' does not exist; give a diffusers folder, a kdgen model folder or a hub id such as google/ddpm-cifar10-32")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:  # offline: LocalEntryNotFoundError / ConnectionError; wrong id: RepositoryNotFoundError
        raise KdgenError(
            f"cannot fetch '{repo}' from the Hugging Face hub ({type(e).__name__}); this needs internet and a valid id - "
            "offline, download it elsewhere and give the local folder"
        ) from None
    return load_diffusion(local)


def save_diffusion(model: DiffusionModel, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write a flat diffusers folder (UNet, scheduler config, kdgen.json), swapped in atomically."""
    from .. import __version__
    from ..io import atomic_write_text, swapped_folder, write_checksum

    meta = {**model.meta(), **(extra or {}), "kdgen_version": __version__}
    if model.extra.get("pruned"):  # the config builds the unpruned UNet: record every layer whose shapes differ from it
        from diffusers import UNet2DModel

        from .custom import structure_diff

        meta["structure"] = structure_diff(model.unet, UNet2DModel.from_config(model.unet.config))
    with swapped_folder(Path(folder)) as tmp:
        model.unet.save_pretrained(str(tmp), safe_serialization=True)
        write_checksum(tmp / "diffusion_pytorch_model.safetensors")
        model.make_scheduler().save_pretrained(str(tmp))
        atomic_write_text(tmp / KDGEN_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(folder)
