"""Models kdgen does not define: a user's class, a torchvision or timm architecture, rebuilt without unpickling.

A class path names the code; constructor arguments, the weights and (for a pruned student) the
changed layer shapes are data:

    "package.module:ClassOrFactory"   imported from the working directory or PYTHONPATH
    "torchvision:resnet18"            torchvision.models.get_model(name, weights=None, **args)
    "timm:resnet18"                   timm.create_model(name, pretrained=False, **args)  (pip install 'kdgen[timm]')

A folder of such a model holds model.safetensors and model.json with
    {"family": "class", "class": "...", "args": {...}, "face": {...}, "structure": {...} | null, "code": "..."}
where `structure` lists, for every layer whose shape pruning changed, its new parameter shapes and
channel attributes; `load_model` builds the class, re-applies the structure, then loads the weights.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import KdgenError
from ..faces import Face, face_of, set_face

log = logging.getLogger("kdgen")

HUB_WEIGHTS = "hub"  # teacher.weights: hub -> the architecture's pretrained weights from its hub (needs internet)
# layer attributes that say a layer's channel counts (torch.nn, diffusers, timm): re-applied with the shapes
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features", "num_channels",
               "num_groups", "normalized_shape", "num_embeddings", "embedding_dim", "heads", "inner_dim", "embed_dim", "kdim",
               "vdim", "num_heads", "head_dim", "hidden_size", "dim", "channels")


def import_object(path: str) -> type[nn.Module]:
    """The nn.Module subclass `package.module:ClassName`, imported from the working directory or PYTHONPATH.

    Only classes are accepted, never other callables: a class path can come from a file someone hands over
    (a run's model.json or config.yaml), and `subprocess:check_call` with JSON args must not run."""
    if ":" not in path or path.startswith(":") or path.endswith(":"):
        raise KdgenError(f"class path '{path}' must look like 'package.module:ClassName' (or torchvision:NAME / timm:NAME)")
    mod_name, _, attr = path.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)  # the user's code beside their recipe, for this import only
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise KdgenError(f"cannot import '{mod_name}' for class path '{path}' ({e}); run kdgen from the folder that holds "
                         "its code, or add that folder to PYTHONPATH") from None
    except Exception as e:  # the user's module failed while importing
        raise KdgenError(f"importing '{mod_name}' for class path '{path}' failed ({type(e).__name__}: {e}); fix that module") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            from ..registry import nearest

            hint = nearest(part, names)
            raise KdgenError(f"module '{mod_name}' has no '{attr}'" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                             + "; fix the class path")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise KdgenError(f"'{path}' is a {type(obj).__name__}, not an nn.Module class; kdgen builds only nn.Module classes from "
                         "a class path (so that a model file cannot make it call anything else) - name the class, wrap a factory "
                         "in one, or hand the module in from Python")
    return obj


def _torchvision(name: str) -> Callable[..., nn.Module]:
    import torchvision

    if name not in torchvision.models.list_models():
        from ..registry import nearest

        hint = nearest(name, torchvision.models.list_models())
        raise KdgenError(f"torchvision has no model '{name}'" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                         + "; see torchvision.models.list_models()")

    return _fetching("torchvision", name, lambda weights, **args: torchvision.models.get_model(name, weights=weights, **args))


def _timm(name: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError:
        raise KdgenError(f"timm:{name} needs timm, which is not installed; pip install 'kdgen[timm]'") from None
    if not timm.is_model(name):
        raise KdgenError(f"timm has no model '{name}'; see timm.list_models()")

    return _fetching("timm", name, lambda weights, **args: timm.create_model(name, pretrained=weights is not None, **args))


def _fetching(hub: str, name: str, make: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A stock builder whose failure to fetch pretrained weights (offline: an OSError such as URLError) is a sentence."""

    def build(*, weights: str | None = None, **args):
        try:
            return make(weights, **args)
        except (OSError, RuntimeError) as e:
            if weights is None:
                raise
            raise KdgenError(f"{hub} could not fetch the pretrained '{name}' weights ({type(e).__name__}); this needs "
                             "internet - give a local weights file instead") from None

    return build


def factory(class_path: str) -> Callable[..., nn.Module]:
    if class_path.startswith("torchvision:"):
        return _torchvision(class_path.split(":", 1)[1])
    if class_path.startswith("timm:"):
        return _timm(class_path.split(":", 1)[1])
    return import_object(class_path)


def build_class(class_path: str, args: dict[str, Any] | None = None, *, hub_weights: bool = False) -> nn.Module:
    """The module `class_path(**args)`; for torchvision/timm, hub weights when asked (needs internet)."""
    make, args = factory(class_path), dict(args or {})
    stock = class_path.startswith(("torchvision:", "timm:"))
    if hub_weights and not stock:
        raise KdgenError(f"weights: {HUB_WEIGHTS} fetches the pretrained weights of torchvision:NAME or timm:NAME; "
                         f"'{class_path}' is your own class - give its weights file")
    try:
        module = make(**args, **({"weights": "DEFAULT" if hub_weights else None} if stock else {}))
    except KdgenError:
        raise
    except Exception as e:
        raise KdgenError(f"building {class_path}(**{args}) failed ({type(e).__name__}: {e}); fix the args") from None
    if not isinstance(module, nn.Module):
        raise KdgenError(f"{class_path}(**{args}) returned {type(module).__name__}, not a torch nn.Module")
    object.__setattr__(module, "kdgen_class", class_path)
    object.__setattr__(module, "kdgen_args", args)
    return module


def load_weights(module: nn.Module, path: str | Path, *, what: str) -> None:
    """Weights of `module` from safetensors or a plain .pt/.pth state dict (weights_only); every tensor must fit."""
    from ..io import load_state_dict_file

    state = load_state_dict_file(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KdgenError(f"the weights in '{path}' do not fit {what}: missing {len(missing)}, unexpected {len(unexpected)} tensors "
                         f"(e.g. {(missing or unexpected)[0]}); save them from the same class and args")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise KdgenError(f"the weights in '{path}' do not fit {what}: '{k}' is {tuple(v.shape)} in the file and "
                             f"{tuple(own[k].shape)} in the model; check the args")
    module.load_state_dict(state)


# --------------------------------------------------------------------------- where a module comes from


def class_path_of(module: nn.Module) -> str:
    """The class path a fresh process imports to rebuild `module`."""
    given = getattr(module, "kdgen_class", None)
    if given:
        return given
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def guess_args(module: nn.Module) -> dict[str, Any] | None:
    """Constructor kwargs read back from same-named attributes (required ones must all be found); None if not."""
    given = getattr(module, "kdgen_args", None)
    if given is not None:
        return dict(given)
    try:
        params = list(inspect.signature(type(module).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    args: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(module, p.name, inspect.Parameter.empty)
        if _jsonable(value) and not isinstance(value, nn.Module):
            if p.default is inspect.Parameter.empty or value != p.default:
                args[p.name] = value
        elif p.default is inspect.Parameter.empty:
            return None
    return args


def _jsonable(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _jsonable(x) for k, x in v.items())
    return False


def structure_of(module: nn.Module) -> dict[str, dict[str, Any]]:
    """Every layer's own parameter/buffer shapes and channel attributes (what pruning changes)."""
    import warnings

    out: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():  # diffusers warns when a config value is read as an attribute
        warnings.simplefilter("ignore")
        return _structure_of(module, out)


def _structure_of(module: nn.Module, out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for name, m in module.named_modules():
        tensors = {k: list(v.shape) for k, v in [*m._parameters.items(), *m._buffers.items()] if v is not None}
        attrs = {a: (list(v) if isinstance(v, tuple) else v) for a in SHAPE_ATTRS
                 if isinstance(v := getattr(m, a, None), (int, tuple)) and not isinstance(v, bool)}
        if tensors or attrs:  # a block without tensors of its own may still keep channel counts (diffusers' Downsample2D)
            out[name] = {"tensors": tensors, "attrs": attrs}
    return out


def structure_diff(module: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """The layers of `module` whose shapes differ from a freshly built `reference`."""
    mine, ref = structure_of(module), structure_of(reference)
    return {k: v for k, v in mine.items() if ref.get(k) != v}


@torch.no_grad()
def apply_structure(module: nn.Module, structure: dict[str, dict[str, Any]]) -> None:
    """Re-shape layers as recorded (empty tensors, to be filled by load_state_dict)."""
    layers = dict(module.named_modules())
    for name, rec in structure.items():
        m = layers.get(name)
        if m is None:
            raise KdgenError(f"the recorded structure names layer '{name}', which this class does not build; "
                             "the model's code changed since it was saved")
        for key, shape in rec.get("tensors", {}).items():
            if key in m._parameters and m._parameters[key] is not None:
                p = m._parameters[key]
                m._parameters[key] = nn.Parameter(p.new_empty(shape), requires_grad=p.requires_grad)
            elif key in m._buffers and m._buffers[key] is not None:
                m._buffers[key] = m._buffers[key].new_empty(shape)
        for a, v in rec.get("attrs", {}).items():
            setattr(m, a, tuple(v) if isinstance(v, list) else v)


def rebuild_check(module: nn.Module, class_path: str, args: dict[str, Any] | None,
                  example: torch.Tensor | None = None) -> tuple[dict | None, str | None]:
    """(structure, None) when `class_path(**args)` + that structure rebuilds `module` tensor for tensor and, given an
    `example` input, output for output; (None, why) if not."""
    if args is None:
        return None, (f"kdgen cannot read {type(module).__name__}'s constructor arguments back from the module; "
                      "pass them: kdgen.Generator(module, ..., args={...}) or teacher.args in a recipe")
    if class_path.split(":", 1)[0] in ("__main__", "__mp_main__"):
        return None, (f"{type(module).__name__} is defined in the script being run (__main__), which another process cannot "
                      "import; move it into a module file")
    try:
        fresh = build_class(class_path, args)
    except KdgenError as e:
        return None, str(e)
    structure = structure_diff(module, fresh)
    apply_structure(fresh, structure)
    a, b = fresh.state_dict(), module.state_dict()
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        return None, (f"{class_path}(**{args}) does not rebuild this {type(module).__name__} (its tensors differ); "
                      "pass the constructor args that made it")
    if example is not None and not _same_outputs(module, fresh, example):
        return None, (f"{class_path}(**{args}) rebuilds {type(module).__name__}'s tensors but not its outputs (a setting that is "
                      "neither a tensor shape nor read back from an attribute); pass the constructor args: "
                      "kdgen.Generator(module, ..., args={...}) / kdgen.Classifier(module, args={...}), or teacher.args in a recipe")
    return structure, None


@torch.no_grad()
def _same_outputs(module: nn.Module, fresh: nn.Module, x: torch.Tensor) -> bool:
    """The rebuilt model, given the module's weights, computes what the module computes (eval mode, one batch)."""
    was = module.training
    try:
        fresh.load_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()})
        module.eval()
        fresh.eval()
        device = next(module.parameters()).device
        want = module(x.to(device)).float().cpu()
        got = fresh.to(device)(x.to(device)).float().cpu()
    except Exception:  # the rebuilt model does not even run on the module's input
        return False
    finally:
        module.train(was)
    return got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(want.abs().max())))


# --------------------------------------------------------------------------- saving and loading


def example_of(face: Face) -> torch.Tensor | None:
    """One small batch of what the model takes (noise for a generator, images otherwise), if the face says."""
    from .prune import example_input

    if face.kind in ("generator", "image-to-image") or (face.kind == "classifier" and face.image_shape is not None):
        return example_input(face)
    return None


def save_class_model(module: nn.Module, folder: str | Path, *, face: Face | None = None, extra: dict | None = None) -> Path:
    """Write a module of any class as weights + class path + args + face + pruned structure; a sentence if it cannot be rebuilt."""
    from .loading import save_model

    path, args = class_path_of(module), guess_args(module)
    face = face or face_of(module)
    structure, why = rebuild_check(module, path, args, example_of(face))
    if why is not None:
        raise KdgenError(f"cannot save {type(module).__name__} so that a fresh process rebuilds it: {why}")
    code = path.split(":", 1)[0]
    meta = {"class": path, "face": face.to_dict(), "structure": structure or None,
            "code": code if path.startswith(("torchvision:", "timm:")) else f"import {code} (from the working directory or PYTHONPATH)",
            **(extra or {})}
    return save_model(module, folder, family="class", args=args or {}, extra=meta)


def load_class_model(folder: Path, meta: dict[str, Any]) -> nn.Module:
    from ..io import load_state_dict_file

    path = meta.get("class")
    if not isinstance(path, str):
        raise KdgenError(f"'{folder / 'model.json'}' has family 'class' but no class path; it was not written by kdgen")
    module = build_class(path, meta.get("args") or {})
    apply_structure(module, meta.get("structure") or {})
    weights = folder / meta.get("weights", "model.safetensors")
    state = load_state_dict_file(weights)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise KdgenError(f"the weights in '{weights}' do not fit {path} with args {meta.get('args')} "
                         f"({str(e).splitlines()[-1].strip()}); the model's code changed since it was saved") from None
    if meta.get("face"):
        set_face(module, Face.from_dict(meta["face"]))
    return module
