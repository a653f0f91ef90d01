"""A model's face: what every stage after loading sees, whatever the model's class.

The face is decided once, when a model is loaded or handed in, and stored on the module as
`module.kdgen_face`. Evaluation, export, the report and the pipeline ask the face, never the family
name or the class:

    generator     noise z [n, *z_shape] (+ class) -> image [n, C, H, W] in [-1, 1]; one network call
    diffusion     a denoiser + its noise schedule and step count (kdgen.models.unet.DiffusionModel)
    classifier    image [n, C, H, W] -> logits [n, K]
    image-to-image   image [n, in_channels, H, W] -> image [n, C, H, W], both in [-1, 1]; one network call
    autoencoder   named here; distilled once its issue lands

kdgen's own families and diffusers UNets state their face; torchvision and timm classifiers have theirs
inferred. A module of the user's own gets one from a small wrapper,

    kdgen.Generator(net, z_shape=(64,))        kdgen.Classifier(net, input_shape=(3, 32, 32))

or from the recipe keys `teacher.face` and `teacher.z_shape`. Nothing decides a model's kind from a name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from .errors import KdgenError

Kind = Literal["generator", "diffusion", "classifier", "image-to-image", "autoencoder"]
KINDS: tuple[str, ...] = ("generator", "diffusion", "classifier", "image-to-image", "autoencoder")
FACE_HELP = ("wrap it: kdgen.Generator(module, z_shape=(64,)) or kdgen.Classifier(module), "
             "or set teacher.face (generator | classifier) and teacher.z_shape in the recipe")


@dataclass(frozen=True)
class Face:
    """What a model takes and makes. `image_shape` is (C, H, W) of the images a generator makes or a
    classifier takes (None for a classifier until its data says); `z_shape` the noise of one image."""

    kind: Kind
    image_shape: tuple[int, int, int] | None = None
    z_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    in_channels: int | None = None  # image-to-image: the channels of the input image (e.g. 1 for colorization)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KdgenError(f"face '{self.kind}' is not one kdgen knows; use one of {', '.join(KINDS)}")
        if self.kind == "generator" and not self.z_shape:
            raise KdgenError("a generator face needs z_shape, the noise of one image (e.g. z_shape=(64,)); give it")
        for name in ("image_shape", "z_shape"):
            v = getattr(self, name)
            if v is not None and (not all(isinstance(d, int) and d > 0 for d in v)):
                raise KdgenError(f"face {name} must be positive whole numbers, got {v}")
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise KdgenError(f"face image_shape must be (channels, height, width), got {self.image_shape}")
        if self.image_shape is not None and self.image_shape[1] != self.image_shape[2]:
            raise KdgenError(f"the model's images are {self.image_shape[1]}x{self.image_shape[2]}; kdgen's data, metrics and students "
                             "work on square images for now - crop or pad to a square")

    @property
    def channels(self) -> int:
        return self._shape()[0]

    @property
    def image_size(self) -> int:
        return self._shape()[1]

    def _shape(self) -> tuple[int, int, int]:
        if self.image_shape is None:
            raise KdgenError(f"this {self.kind}'s image shape is not known yet; give input_shape=(C, H, W) or data with images")
        return self.image_shape

    @property
    def makes_images(self) -> bool:
        """Whether it makes images from noise (measured by FID of its samples); an image-to-image model maps images."""
        return self.kind in ("generator", "diffusion")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """image-to-image: the (C, H, W) of the image it takes."""
        c, h, w = self._shape()
        return (self.in_channels or c, h, w)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Face":
        if not isinstance(data, dict) or "kind" not in data:
            raise KdgenError(f"a recorded face must be a mapping with a 'kind', got {data!r}; re-save the model with kdgen")
        unknown = set(data) - {"kind", "image_shape", "z_shape", "num_classes", "in_channels"}
        if unknown:
            raise KdgenError(f"a recorded face has unknown key '{sorted(unknown)[0]}'; it was not written by this kdgen")
        return cls(kind=data["kind"], image_shape=_tuple(data.get("image_shape")), z_shape=_tuple(data.get("z_shape")),
                   num_classes=data.get("num_classes"), in_channels=data.get("in_channels"))

    def with_image_shape(self, shape: tuple[int, int, int]) -> "Face":
        return replace(self, image_shape=tuple(int(s) for s in shape))


def _tuple(v) -> tuple[int, ...] | None:
    return None if v is None else tuple(int(d) for d in (v if isinstance(v, (list, tuple)) else [v]))


# --------------------------------------------------------------------------- the wrappers a user writes


class _Wrapped(nn.Module):
    """A user's module and the face they state for it. Forward is the module's own; kdgen unwraps it."""

    face: Face

    def __init__(self, module: nn.Module, args: dict[str, Any] | None, class_path: str | None = None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise KdgenError(f"{type(self).__name__} wraps a torch nn.Module, got {type(module).__name__}")
        self.module = module
        self.args = None if args is None else dict(args)  # the class's constructor kwargs, so a fresh process can rebuild it
        self.class_path = class_path  # e.g. torchvision:resnet18 for a stock model built in Python; None: its own class

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class Generator(_Wrapped):
    """A user's generator: `module(z)` with z of shape [n, *z_shape] gives images [n, C, H, W] in [-1, 1].

    `image_shape` is probed with one forward pass when not given; `args` are the class's constructor
    keyword arguments (needed to rebuild it in a fresh process; kdgen reads back what it can from
    same-named attributes and refuses, before training, a module it cannot rebuild output for output);
    `class_path` names a stock builder (torchvision:NAME, timm:NAME) for a model built in Python."""

    def __init__(self, module: nn.Module, *, z_shape: tuple[int, ...] | int, image_shape: tuple[int, int, int] | None = None,
                 num_classes: int | None = None, args: dict[str, Any] | None = None, class_path: str | None = None):
        super().__init__(module, args, class_path)
        z = _tuple(z_shape)
        self.face = Face("generator", image_shape=_tuple(image_shape) or probe_generator(module, z), z_shape=z, num_classes=num_classes)


class ImageToImage(_Wrapped):
    """A user's image-to-image network: `module(x)` with images x [n, *input_shape] gives images [n, C, H, W], both in
    [-1, 1] (super-resolution at the input's size, denoising, colorization, translation). The output shape is probed."""

    def __init__(self, module: nn.Module, *, input_shape: tuple[int, int, int], args: dict[str, Any] | None = None,
                 class_path: str | None = None):
        super().__init__(module, args, class_path)
        shape = _tuple(input_shape)
        if shape is None or len(shape) != 3:
            raise KdgenError(f"ImageToImage needs input_shape=(C, H, W) of the image the module takes, got {input_shape}")
        out = _probe(module, torch.zeros(2, *shape), "images")
        if out.dim() != 4:
            raise KdgenError(f"{type(module).__name__} maps images {shape} to shape {tuple(out.shape[1:])}; an image-to-image "
                             "model must return images [n, C, H, W]")
        if tuple(out.shape[2:]) != tuple(shape[1:]):
            raise KdgenError(f"{type(module).__name__} maps {shape[1]}x{shape[2]} images to {out.shape[2]}x{out.shape[3]}; kdgen's "
                             "image-to-image face keeps the size (super-resolution takes the enlarged image, as data.task=sr4 "
                             "makes it) - wrap a module that does, e.g. one that upsamples its input first")
        self.face = Face("image-to-image", image_shape=tuple(int(s) for s in out.shape[1:]), in_channels=shape[0])


class Classifier(_Wrapped):
    """A user's classifier: `module(x)` with images x [n, C, H, W] gives logits [n, K].

    `input_shape` (C, H, W) may be left to the data; `num_classes` is probed when the shape is known."""

    def __init__(self, module: nn.Module, *, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                 args: dict[str, Any] | None = None, class_path: str | None = None):
        super().__init__(module, args, class_path)
        shape = _tuple(input_shape)
        if num_classes is None and shape is not None:
            num_classes = probe_classifier(module, shape)
        self.face = Face("classifier", image_shape=shape, num_classes=num_classes)


# --------------------------------------------------------------------------- probing and inference


STATED = "check the face you stated (z_shape / input_shape)"


@torch.no_grad()
def _probe(module: nn.Module, x: torch.Tensor, what: str, fix: str = STATED) -> torch.Tensor:
    was = module.training
    module.eval()
    try:
        p = next(module.parameters(), None)
        out = module(x.to(p.device) if p is not None else x)
    except Exception as e:  # the user's forward: any failure is a shape/contract problem to name
        raise KdgenError(f"{type(module).__name__} failed on {what} of shape {tuple(x.shape)} ({type(e).__name__}: {e}); {fix}") from None
    finally:
        module.train(was)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "sample") and not isinstance(out, torch.Tensor):  # diffusers-style output objects
        out = out.sample
    if not isinstance(out, torch.Tensor):
        raise KdgenError(f"{type(module).__name__} returned {type(out).__name__} for {what}; kdgen needs a tensor")
    return out


def probe_generator(module: nn.Module, z_shape: tuple[int, ...]) -> tuple[int, int, int]:
    out = _probe(module, torch.zeros(2, *z_shape), "noise")
    if out.dim() != 4:
        raise KdgenError(f"{type(module).__name__} maps noise {tuple(z_shape)} to shape {tuple(out.shape[1:])}; "
                         "a generator must return images [n, C, H, W]")
    return tuple(int(s) for s in out.shape[1:])  # type: ignore[return-value]


def probe_classifier(module: nn.Module, image_shape: tuple[int, ...], fix: str = STATED) -> int:
    out = _probe(module, torch.zeros(2, *image_shape), "images", fix)
    if out.dim() != 2:
        raise KdgenError(f"{type(module).__name__} maps images {tuple(image_shape)} to shape {tuple(out.shape[1:])}; "
                         "a classifier must return logits [n, K]")
    return int(out.shape[1])


def _stock_classifier(module: nn.Module) -> bool:
    m = type(module).__module__
    return m.startswith(("torchvision.models", "timm.models"))


def infer_face(module: nn.Module) -> Face:
    """The face a module states or that kdgen can tell for sure; else a sentence asking for it."""
    face = getattr(module, "kdgen_face", None)
    if isinstance(face, Face):
        return face
    if isinstance(module, _Wrapped):
        return module.face
    own = getattr(type(module), "face_kind", None)  # kdgen's families say what they are
    if own == "generator":
        shape = (int(module.channels), int(module.image_size), int(module.image_size))
        return Face("generator", image_shape=shape, z_shape=(int(module.z_dim),))
    if own == "classifier":
        return Face("classifier", image_shape=_classifier_shape(module), num_classes=_num_classes(module))
    if own == "image-to-image":
        size = int(module.image_size)
        return Face("image-to-image", image_shape=(int(module.out_channels), size, size), in_channels=int(module.in_channels))
    if own == "diffusion":
        return Face("diffusion", image_shape=(module.channels, module.image_size, module.image_size), num_classes=module.num_classes)
    if _stock_classifier(module):
        shape = None
        cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)  # timm
        if isinstance(cfg, dict) and cfg.get("input_size"):
            shape = tuple(int(s) for s in cfg["input_size"])
        return Face("classifier", image_shape=shape, num_classes=_num_classes(module))
    raise KdgenError(f"kdgen cannot tell what kind of model {type(module).__name__} is (generator or classifier); {FACE_HELP}")


def _classifier_shape(module: nn.Module) -> tuple[int, int, int] | None:
    size, ch = getattr(module, "image_size", None), getattr(module, "channels", None)
    return (int(ch), int(size), int(size)) if size and ch else None


def _num_classes(module: nn.Module) -> int | None:
    k = getattr(module, "num_classes", None)
    if isinstance(k, int):
        return k
    last = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else None


def face_of(model: nn.Module) -> Face:
    """The face stored on a loaded model (inferred and stored on first ask)."""
    face = getattr(model, "kdgen_face", None)
    if isinstance(face, Face):
        return face
    face = infer_face(model)
    set_face(model, face)
    return face


def set_face(model: nn.Module, face: Face) -> nn.Module:
    object.__setattr__(model, "kdgen_face", face)  # a plain attribute, not a submodule or buffer
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a kdgen.Generator / kdgen.Classifier wrapper, carrying its face (and args)."""
    if isinstance(model, _Wrapped):
        inner = model.module
        set_face(inner, model.face)
        if model.args is not None:
            object.__setattr__(inner, "kdgen_args", model.args)
        if model.class_path is not None:
            object.__setattr__(inner, "kdgen_class", model.class_path)
        return inner
    return model


def face_from_keys(module: nn.Module, *, face: str | None, z_shape: list[int] | None, image_shape: list[int] | None = None) -> Face:
    """The face a recipe states (teacher.face / teacher.z_shape), or the one kdgen infers when it states none."""
    if face is None:
        if z_shape is not None:
            raise KdgenError("teacher.z_shape is given without teacher.face; add teacher.face=generator")
        return infer_face(module)
    if face == "generator":
        if not z_shape:
            raise KdgenError("teacher.face=generator needs teacher.z_shape, the noise of one image (e.g. [64]); add it")
        return Generator(module, z_shape=tuple(z_shape), image_shape=_tuple(image_shape)).face
    if face == "classifier":
        if z_shape is not None:
            raise KdgenError("teacher.z_shape applies to generators; remove it for a classifier")
        return Classifier(module, input_shape=_tuple(image_shape)).face
    raise KdgenError(f"teacher.face '{face}' cannot be stated for a module yet; use generator or classifier "
                     "(diffusion models are recognised from their diffusers UNet)")
