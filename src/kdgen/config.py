"""Typed run configuration: YAML recipe + `key=value` overrides -> validated `RunConfig`.

YAML holds values only. Every section is a dataclass; unknown keys and bad values raise a
`KdgenError` that names the key and what is allowed. The resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import KdgenError
from .registry import nearest


def _check(**limits):
    """Field metadata: numeric limits checked on load (gt, ge, le)."""
    return {"limits": limits}


@dataclass
class DataConfig:
    name: str = "mnist5k"  # mnist5k | digits | emoji | mnist | fashion-mnist | cifar10 | folder:PATH
    # THE shape knob of every family: None = the teacher's when distilling, the data's when training a teacher or
    # feature net (a folder's: its most common shorter side, and 1 channel only when every image is greyscale)
    image_size: int | None = field(default=None, metadata=_check(gt=0))
    channels: int | None = field(default=None, metadata=_check(gt=0))
    root: str = "~/.cache/kdgen/datasets"  # where downloadable and installed datasets (emoji) live
    on_corrupt: Literal["error", "skip"] = "error"  # folder datasets: stop, or skip and count
    # folders: the seeded held-out share (per class sub-folder) that FID is measured against; 0: none (FID then uses
    # the training images, with a caveat). Named datasets have fixed splits.
    test_fraction: float = field(default=0.1, metadata=_check(ge=0, lt=1))
    split_seed: int = field(default=0, metadata=_check(ge=0))
    batch_size: int = field(default=64, metadata=_check(gt=0))
    workers: int = field(default=0, metadata=_check(ge=0))
    shift: int = field(default=0, metadata=_check(ge=0))  # classifiers: random translation of training images by up to N pixels
    transfer: str | None = None  # classifier distillation: a generator (folder or builtin:NAME) whose samples, unlabelled, join every batch
    transfer_images: int | None = field(default=None, metadata=_check(gt=0))  # size of that pool, drawn once before training; None: 20000
    transfer_batch: int | None = field(default=None, metadata=_check(gt=0))  # pool images per batch; None: data.batch_size
    # image-to-image: the paired task made from the images (kdgen.data.paired): sr4 | denoise | colorize | none
    task: Literal["sr4", "denoise", "colorize", "none"] | None = None
    noise_sigma: float = field(default=0.2, metadata=_check(gt=0, le=2))  # data.task=denoise: the noise's std in the [-1, 1] range
    # image-to-image: train on a seeded N of the training split's images (a user with few pairs); None: all of them.
    # The held-out pairs that measure the run stay whole.
    train_images: int | None = field(default=None, metadata=_check(gt=0))
    # generator distillation: (z, teacher image[, features]) pairs drawn once and read instead of running the teacher
    # (TinyGAN-style); null: the teacher runs live on fresh noise; auto: ~/.cache/kdgen/teacher-cache; or a folder
    teacher_cache: str | None = None
    teacher_cache_size: int = field(default=4096, metadata=_check(gt=0))  # pairs in that cache


@dataclass
class ModelConfig:
    """What `train-teacher` / `train-features` build from scratch."""

    family: str = "dcgan-generator"
    args: dict[str, Any] = field(default_factory=dict)
    # train-features: classifier (needs labels) | simclr (self-supervised) | auto (classifier when the data has labels)
    objective: Literal["auto", "classifier", "simclr"] = "auto"
    # simclr: temperature (0.5), crop (smallest crop area, 0.5), flip (false: it changes digits and text), jitter (0.4)
    simclr: dict[str, Any] = field(default_factory=dict)


DEFAULT_TEACHER = "builtin:gan-mnist5k"


@dataclass
class TeacherConfig:
    path: str | None = None  # a kdgen model folder, a diffusers folder or hub id, or builtin:NAME; None (and no class): builtin:gan-mnist5k
    class_: str | None = field(default=None, metadata={"key": "class"})  # package.module:ClassOrFactory | torchvision:NAME | timm:NAME
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of that class
    weights: str | None = None  # FILE.safetensors | FILE.pt/.pth (weights_only) | hub (torchvision/timm pretrained; needs internet)
    face: Literal["generator", "classifier"] | None = None  # what the class is, when kdgen cannot tell
    z_shape: list[int] | None = None  # face generator: the noise of one image, e.g. [64]
    steps: int | None = field(default=None, metadata=_check(ge=1))  # diffusion: the teacher's DDIM steps when measured; None: its own


@dataclass
class StudentConfig:
    width: float = field(default=0.25, metadata=_check(gt=0, le=1))
    init: Literal["random", "prune"] = "prune"
    # auto: kdgen's families shrink by their own width args (the DCGAN, the UNet config); anything else is torch-pruned.
    # pruned: torch-pruning from the teacher for every model (a diffusers UNet too)
    structure: Literal["auto", "pruned"] = "auto"
    layers_per_block: int | None = field(default=None, metadata=_check(ge=1))  # diffusion UNets: resnets per stage; None: the teacher's
    attention: bool = True  # diffusion UNets: false removes the attention blocks
    # the student's own family: classifiers (mlp, cnn, resnet, featnet; None: the teacher's), image-to-image (pix2pix-unet,
    # resnet-generator, subpixel-net; None: the teacher's, shrunk by width) - args in student.args, random initial weights
    family: str | None = None
    args: dict[str, Any] = field(default_factory=dict)  # the student's model args: over the teacher's (family), or of student.class
    class_: str | None = field(default=None, metadata={"key": "class"})  # a student of its own class; None: derived from the teacher
    weights: str | None = None  # starting weights of student.class (safetensors or .pt/.pth); None: random init


@dataclass
class TrainConfig:
    steps: int = field(default=1200, metadata=_check(gt=0))
    lr: float = field(default=1e-3, metadata=_check(gt=0))
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: lr x (1 + cos(pi step / steps)) / 2, for every optimizer
    d_lr: float | None = field(default=None, metadata=_check(gt=0))  # discriminator; None: lr
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    ema: float = field(default=0.999, metadata=_check(ge=0, le=1))  # 0 disables the EMA
    grad_clip: float = field(default=1.0, metadata=_check(ge=0))  # 0 disables clipping
    checkpoint_every: int = field(default=250, metadata=_check(gt=0))
    log_every: int = field(default=25, metadata=_check(gt=0))
    sample_every: int = field(default=250, metadata=_check(gt=0))
    seed: int = 0
    # speed and scale, all through accelerate and torch (nothing home-made):
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast of every forward (teacher too); fp16 needs a GPU (with loss scaling)
    grad_accum: int = field(default=1, metadata=_check(ge=1))  # batches per optimizer step: the global batch is batch_size x grad_accum x processes
    compile: bool = False  # torch.compile the student and the teacher in place (nn.Module.compile; state dict keys unchanged)
    channels_last: bool = False  # student and teacher in channels_last memory format (faster convolutions on recent GPUs and CPUs)
    # torch's CPU threads per process; auto: $OMP_NUM_THREADS when set, else this machine's cores / the processes on it
    threads: int | Literal["auto"] = field(default="auto", metadata=_check(ge=1))


@dataclass
class EvalConfig:
    num_samples: int = field(default=2000, metadata=_check(gt=1))
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = field(default=500, metadata=_check(gt=0))
    # feature net for FID/KID: auto (kdgen's net for the data: featnet-mnist5k for mnist5k/mnist, featnet-emoji for emoji;
    # other data must name one), a feature-net folder, builtin:NAME, inception[:FILE] or dinov2:FILE
    features: str = "auto"
    # a feature net trained on other data than the data measured is refused; true: measure anyway, with a caveat
    allow_feature_mismatch: bool = False
    reference: Literal["test", "train"] = "test"  # what FID compares with: the held-out split, or (with a caveat) the training images
    latency_repeats: int = field(default=20, metadata=_check(gt=0))
    k: int = field(default=5, metadata=_check(gt=0))  # neighbours for precision/recall/density/coverage
    # image-to-image runs: LPIPS too, its backbone's ImageNet weights from this torchvision AlexNet / VGG16 / SqueezeNet 1.1
    # state dict (.pth or .safetensors); null: no LPIPS (kdgen downloads nothing)
    lpips: str | None = None
    enabled: bool = True


def _demo_methods() -> dict[str, dict[str, Any]]:
    return {
        "output": {"weight": 1.0, "distance": "l1"},
        "feature": {"weight": 1.0},
        "adversarial": {"weight": 0.01},
    }


@dataclass
class RunConfig:
    """The defaults are the demo recipe (configs/gan/mnist5k-demo.yaml says the same)."""

    task: Literal["distill", "train-teacher", "train-features"] = "distill"
    out: str = "runs/demo"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=_demo_methods)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _keyed(self)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- parsing


def _key(f: dataclasses.Field) -> str:
    """The recipe's name of a field (`class` for `class_`)."""
    return f.metadata.get("key", f.name)


def _keyed(obj: Any) -> Any:
    """dataclasses.asdict with recipe key names."""
    if dataclasses.is_dataclass(obj):
        return {_key(f): _keyed(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _keyed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keyed(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    bad = KdgenError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}; fix the recipe or override")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans: the option of that name
            value = next((a for a in typing.get_args(tp) if str(a).lower() in (("yes", "on", "true") if value else ("no", "off", "false"))), value)
        if value not in typing.get_args(tp):
            raise KdgenError(
                f"config key '{key}' must be one of {', '.join(repr(a) for a in typing.get_args(tp))}, got {value!r}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except KdgenError:
                continue
        raise bad
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        key_type = (typing.get_args(tp) or (str,))[0]
        if key_type is str and (odd := [k for k in value if not isinstance(k, str)]):
            raise KdgenError(f"config key '{key}' has the entry {odd[0]!r}, which is not a name; name every entry with text")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _check_limits(value: Any, limits: dict[str, float], key: str) -> None:
    if value is None or not limits:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, str):  # a keyword such as "auto" beside the numbers
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise KdgenError(f"config key '{key}' is {v}; give a finite number")
        if "gt" in limits and not v > limits["gt"]:
            raise KdgenError(f"config key '{key}' must be > {limits['gt']}, got {v}")
        if "ge" in limits and not v >= limits["ge"]:
            raise KdgenError(f"config key '{key}' must be >= {limits['ge']}, got {v}")
        if "lt" in limits and not v < limits["lt"]:
            raise KdgenError(f"config key '{key}' must be < {limits['lt']}, got {v}")
        if "le" in limits and not v <= limits["le"]:
            raise KdgenError(f"config key '{key}' must be <= {limits['le']}, got {v}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, naming any unknown key or bad value."""
    where = prefix or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KdgenError(f"config section '{where}' must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            hint = nearest(str(key), list(fields))
            did = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise KdgenError(
                f"unknown config key '{full}'{did}; valid keys in {where} are: {', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, data[name], key)
            continue
        value = _coerce(data[name], tp, key)
        _check_limits(value, f.metadata.get("limits", {}), key)
        kwargs[f.name] = value
    return cls(**kwargs)


class _UnreadableYaml(Exception):
    """YAML that parses but cannot be a config value: a bad explicit tag, nesting too deep, a value that contains itself."""


MAX_DEPTH = 64  # no recipe nests deeper than a handful of levels


def _load_yaml(text: str) -> Any:
    """yaml.safe_load, with what PyYAML's constructors raise on bad tags (`!!int x`) or deep nesting turned into one
    exception, and a self-referencing alias (`&a {x: *a}`) refused before anything walks it."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise _UnreadableYaml("nests too deep to read") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _UnreadableYaml(f"holds a YAML value that cannot be read ({type(e).__name__}: {str(e)[:80]})") from None
    _check_nesting(value, set(), 0, set())
    return value


def _check_nesting(value: Any, above: set[int], depth: int, done: set[int]) -> None:
    """No value inside itself, none deeper than MAX_DEPTH; each shared (aliased) node is walked once, so a YAML bomb of
    nested aliases costs its size, not its expansion."""
    if not isinstance(value, (dict, list)) or id(value) in done:
        return
    if id(value) in above:
        raise _UnreadableYaml("holds a value that contains itself (a YAML alias inside its own anchor)")
    if depth > MAX_DEPTH:
        raise _UnreadableYaml(f"nests deeper than {MAX_DEPTH} levels")
    for v in (value.values() if isinstance(value, dict) else value):
        _check_nesting(v, above | {id(value)}, depth + 1, done)
    done.add(id(value))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise KdgenError(f"override '{item}' is not of the form key=value (e.g. train.steps=200)")
        key, text = item.split("=", 1)
        try:
            value = _load_yaml(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        except _UnreadableYaml as e:
            raise KdgenError(f"the override of '{key.strip()}' {e}; write the value plainly (e.g. train.steps=200)") from None
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if value is None and parts[0] == "methods" and len(parts) == 2:
            node.pop(parts[-1], None)  # methods.NAME=null removes a method
        else:
            node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise KdgenError(f"config file '{p}' does not exist; give the path of a YAML recipe (see configs/)")
    if p.is_dir():
        raise KdgenError(f"'{p}' is a folder, not a YAML recipe; give a file such as configs/gan/mnist5k-demo.yaml")
    try:
        raw = _load_yaml(p.read_text())
    except UnicodeDecodeError:
        raise KdgenError(f"config file '{p}' is not UTF-8 text; give a YAML recipe") from None
    except yaml.YAMLError as e:
        raise KdgenError(f"config file '{p}' is not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from None
    except _UnreadableYaml as e:
        raise KdgenError(f"config file '{p}' {e}; write its values plainly") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KdgenError(f"config file '{p}' must hold a mapping of sections (data, train, ...), not {type(raw).__name__}")
    return raw


def load_config(
    source: str | Path | dict[str, Any] | RunConfig | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A validated `RunConfig` from a YAML path, a dict, or the built-in defaults (None)."""
    if isinstance(source, RunConfig):
        raw = source.to_dict()
    elif source is None:
        raw = {}
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        raw = read_yaml(source)
    # the recipe over the defaults first, then the overrides over that (so `methods.output.weight=2`
    # changes one option of the recipe's methods instead of replacing the whole section)
    full = from_dict(RunConfig, raw).to_dict()
    cfg = from_dict(RunConfig, apply_overrides(full, list(overrides or [])))
    for name, opts in list(cfg.methods.items()):
        if opts is None:  # `name: null` in a recipe removes a method, as the override does
            del cfg.methods[name]
    _validate(cfg)
    return cfg


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The config.yaml a run folder holds. A folder run saved before folders had held-out splits (no data.test_fraction)
    trained on every image, so it is read with test_fraction 0: its FID reference stays the whole folder, as it was."""
    raw = read_yaml(path)
    data = raw.get("data") if isinstance(raw, dict) else None
    if isinstance(data, dict) and str(data.get("name", "")).startswith("folder:") and "test_fraction" not in data:
        logging.getLogger("kdgen").warning("%s predates held-out folder splits: it trained on the whole folder, which stays its "
                                           "reference (data.test_fraction=0)", path)
        raw = {**raw, "data": {**data, "test_fraction": 0.0}}
    return load_config(raw, overrides)


def _validate(cfg: RunConfig) -> None:
    if len(cfg.train.betas) != 2 or not all(0 <= b < 1 for b in cfg.train.betas):
        raise KdgenError(f"config key 'train.betas' must be two numbers in [0, 1), got {cfg.train.betas}")
    if not cfg.eval.seeds or len(set(cfg.eval.seeds)) != len(cfg.eval.seeds):
        raise KdgenError(f"config key 'eval.seeds' must list distinct seeds, at least one (e.g. [0, 1, 2]), got {cfg.eval.seeds}")
    t = cfg.teacher
    if t.path is not None and t.class_ is not None:
        raise KdgenError(f"teacher.path ('{t.path}') and teacher.class ('{t.class_}') both name a teacher; keep one "
                         "(set teacher.path=null to use the class)")
    if t.class_ is None and (t.args or t.weights is not None or t.face is not None or t.z_shape is not None):
        raise KdgenError("teacher.args, teacher.weights, teacher.face and teacher.z_shape describe teacher.class, and none is given; "
                         "add teacher.class (package.module:ClassName, torchvision:NAME or timm:NAME) or remove them")
    if t.path is None and t.class_ is None:
        t.path = DEFAULT_TEACHER
    if cfg.student.weights is not None and cfg.student.class_ is None:
        raise KdgenError("student.weights start a student of student.class, and none is given; add student.class or remove student.weights")
    if cfg.student.class_ is not None and cfg.student.family is not None:
        raise KdgenError("student.class and student.family both name the student's architecture; keep one")
    d = cfg.data
    if d.task is not None and cfg.task == "train-features":
        raise KdgenError("data.task makes (input, target) pairs for image-to-image models; a feature net trains on the images - remove it")
    if cfg.eval.lpips is not None and cfg.task == "train-features":
        raise KdgenError("eval.lpips measures image-to-image outputs; a feature net makes none - remove eval.lpips")
    if d.train_images is not None and d.task is None:
        raise KdgenError("data.train_images limits the training pairs of an image-to-image task, and data.task is not set; "
                         "set data.task (sr4, denoise, colorize, none) or remove data.train_images")
    if d.teacher_cache is not None and cfg.task != "distill":
        raise KdgenError(f"data.teacher_cache holds a teacher's outputs for `kdgen distill`; `{cfg.task}` has no teacher - remove it")
    if d.transfer is None and (d.transfer_images is not None or d.transfer_batch is not None):
        raise KdgenError("data.transfer_images and data.transfer_batch size a generated transfer set, and data.transfer names none; "
                         "set data.transfer (e.g. builtin:gan-mnist5k) or remove them")
    if d.transfer is not None and cfg.task != "distill":
        raise KdgenError(f"data.transfer adds generated images to `kdgen distill` with a classifier teacher; `{cfg.task}` "
                         "trains on the dataset alone - remove data.transfer")
