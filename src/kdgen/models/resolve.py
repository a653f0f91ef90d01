"""Teachers and students from whatever the user brings: a folder, builtin:NAME, a class path, or a module.

Every model leaves here with its face decided (kdgen.faces) and knows how to save itself so that a
fresh process rebuilds it: kdgen's own families as family + args, any other class as class path +
args + pruned structure (kdgen.models.custom), diffusion models as diffusers folders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import KdgenError
from ..faces import Face, face_from_keys, face_of, set_face, unwrap
from ..io import resolve_path
from .loading import load_model, save_model

log = logging.getLogger("kdgen")

ModelLike = Any  # str | Path | nn.Module | kdgen.Generator | kdgen.Classifier
UNSAVED = "(not saved: "  # teacher.path of a handed-in teacher that could not be saved


def frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def class_model(class_path: str, args: dict, weights: str | None, *, face: str | None, z_shape: list[int] | None,
                role: str) -> nn.Module:
    """`role`.class + args + weights (+ face keys) from a recipe, built and loaded, its face decided."""
    from .custom import HUB_WEIGHTS, build_class, load_weights

    module = build_class(class_path, args, hub_weights=weights == HUB_WEIGHTS)
    if weights is not None and weights != HUB_WEIGHTS:
        path = Path(weights).expanduser()
        load_weights(module, path, what=f"{role}.class {class_path}")
        object.__setattr__(module, "kdgen_weights", path)
    elif weights is None and role == "teacher":
        log.warning("teacher.class %s has no teacher.weights: the teacher is randomly initialised", class_path)
    set_face(module, face_from_keys(module, face=face, z_shape=z_shape))
    return module


def as_diffusion(module: nn.Module) -> nn.Module:
    """A diffusers UNet2DModel handed in alone becomes a DiffusionModel with the default DDPM schedule (and a warning)."""
    from .unet import DEFAULT_DDPM_SCHEDULE, DiffusionModel

    if type(module).__name__ == "UNet2DModel" and type(module).__module__.startswith("diffusers"):
        log.warning("a UNet2DModel was handed in without its scheduler; assuming the default DDPM schedule (1000 linear betas, "
                    "epsilon prediction) - wrap it in kdgen.models.unet.DiffusionModel(unet, scheduler_config) if it was trained otherwise")
        return DiffusionModel(module, dict(DEFAULT_DDPM_SCHEDULE))
    return module


def load_any(given: ModelLike) -> nn.Module:
    """A folder / builtin:NAME / hub id, or a module (wrapped or plain), with its face."""
    if isinstance(given, nn.Module):
        return load_model(as_diffusion(unwrap(given)))
    if isinstance(given, (str, Path)):
        return load_model(given)
    raise KdgenError(f"a model must be an nn.Module, a kdgen model folder or builtin:NAME, got {type(given).__name__}")


def resolve_teacher(tcfg, given: ModelLike | None) -> nn.Module:
    """The frozen teacher: handed in (module or path), or as the recipe's teacher section says."""
    from ..teacher import load_teacher

    if given is not None:
        if isinstance(given, (str, Path)):
            return load_teacher(given)
        return frozen(load_any(given))
    if tcfg.class_ is not None:
        return frozen(class_model(tcfg.class_, tcfg.args, tcfg.weights, face=tcfg.face, z_shape=tcfg.z_shape, role="teacher"))
    if str(tcfg.path).startswith(UNSAVED):
        raise KdgenError(f"this run's teacher was {tcfg.path[len(UNSAVED):].rstrip(')')} handed in from Python that kdgen could not "
                         "save; re-measure the run in that process, or hand the teacher in again (kdgen.distill(..., teacher=...))")
    return load_teacher(tcfg.path)


def given_student(given: ModelLike, teacher_face: Face) -> nn.Module:
    """A student handed in: a module without a stated face takes the teacher's, checked by one forward pass."""
    module = unwrap(given) if isinstance(given, nn.Module) else load_any(given)
    if isinstance(given, (str, Path)):
        module = module.train().requires_grad_(True)
    face = getattr(module, "kdgen_face", None)
    if face is None:
        try:
            face = face_of(module)
        except KdgenError:
            face = teacher_face
    return check_student_face(module, face, teacher_face)


def given_diffusion_student(given: ModelLike | None, scfg, teacher: nn.Module) -> nn.Module:
    """A diffusion student handed in (a diffusers UNet2DModel, a DiffusionModel, a folder) or named by student.class: it
    denoises on the teacher's noise schedule, so it takes the teacher's betas and keeps only its own prediction type."""
    from .unet import DiffusionModel, wrap_like

    check_one_student(given, scfg)
    module = built_class_student(scfg) if given is None else unwrap(given) if isinstance(given, nn.Module) else load_any(given)
    if type(module).__name__ == "UNet2DModel" and type(module).__module__.startswith("diffusers"):
        module = wrap_like(module, teacher)
    if not isinstance(module, DiffusionModel):
        raise KdgenError(f"a diffusion student must be a diffusers UNet2DModel (or a kdgen diffusion folder), got {type(module).__name__}; "
                         "or leave the student out and kdgen derives one (student.width, student.layers_per_block, student.attention)")
    got, want = (module.channels, module.image_size), (teacher.channels, teacher.image_size)
    if got != want:
        raise KdgenError(f"the student UNet denoises {got[0]}x{got[1]}x{got[1]} images but the teacher {want[0]}x{want[1]}x{want[1]}; "
                         "give a UNet with the teacher's in/out channels and sample_size")
    if module.num_classes != teacher.num_classes:
        raise KdgenError(f"the student UNet has {module.num_classes or 'no'} classes but the teacher {teacher.num_classes or 'none'}; "
                         "give num_class_embeds as the teacher has")
    own = {k: v for k, v in module.scheduler_config.items() if k != "prediction_type" and not k.startswith("_")}
    theirs = {k: v for k, v in teacher.scheduler_config.items() if k != "prediction_type" and not k.startswith("_")}
    if own != theirs:
        log.warning("the given student's noise schedule differs from the teacher's; it is trained on the teacher's")
    module.scheduler_config = {**teacher.scheduler_config, "prediction_type": module.prediction_type}
    set_face(module, face_of(teacher))
    return module.train().requires_grad_(True)


def check_one_student(given: ModelLike | None, scfg) -> None:
    if given is not None and scfg.class_ is not None:
        raise KdgenError("a student was handed in and the recipe names student.class; keep one")


def built_class_student(scfg) -> nn.Module:
    """student.class built with student.args, and student.weights loaded into it when given."""
    from .custom import build_class, load_weights

    module = build_class(scfg.class_, scfg.args)
    if scfg.weights is not None:
        load_weights(module, Path(scfg.weights).expanduser(), what=f"student.class {scfg.class_}")
    return module


def class_student(scfg, teacher_face: Face) -> nn.Module:
    return check_student_face(built_class_student(scfg), teacher_face, teacher_face)


def check_student_face(module: nn.Module, face: Face, teacher_face: Face) -> nn.Module:
    """The student must take and make what the teacher does (probed with one forward pass)."""
    from ..faces import probe_classifier, probe_generator

    if face.kind != teacher_face.kind:
        raise KdgenError(f"the student is a {face.kind} but the teacher a {teacher_face.kind}; give a student of the teacher's kind")
    if teacher_face.kind == "generator":
        got = probe_generator(module, teacher_face.z_shape)
        if got != teacher_face.image_shape:
            raise KdgenError(f"the student makes images {got} from the teacher's noise {teacher_face.z_shape}, but the teacher makes "
                             f"{teacher_face.image_shape}; give a student with the teacher's output shape")
    elif teacher_face.kind == "classifier" and teacher_face.image_shape is not None:
        k = probe_classifier(module, teacher_face.image_shape)
        if teacher_face.num_classes is not None and k != teacher_face.num_classes:
            raise KdgenError(f"the student gives {k} logits but the teacher {teacher_face.num_classes}; give a student with the teacher's classes")
    elif teacher_face.kind == "diffusion":
        raise KdgenError("a diffusion student takes the teacher's noise schedule: pass it through given_diffusion_student")
    set_face(module, teacher_face)
    return module.train().requires_grad_(True)


def derived_student(teacher: nn.Module, face: Face, *, width: float, init: str, seed: int, structure: str = "auto") -> nn.Module:
    """The teacher pruned to `width` (torch-pruning); with structure=auto kdgen's width-scalable families build theirs
    from their args (and, with init=prune, take the torch-pruned teacher's weights at those shapes)."""
    from . import build_student
    from .prune import prune_student

    meta = getattr(teacher, "kdgen_meta", None)
    own = meta and meta.get("family") not in (None, "class") and any(k in meta.get("args", {}) for k in ("width", "base_width"))
    if own and structure == "auto":
        student, args = build_student(teacher, width=width, init=init, seed=seed)
        object.__setattr__(student, "kdgen_family", (meta["family"], args))
        set_face(student, face)
        return student
    student = prune_student(teacher, face, width=width, seed=seed)
    if init == "random":
        reinitialise(student, seed)
    return student


def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh weights in a (pruned) structure: every layer's own reset_parameters."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()


def check_saveable(model: nn.Module, role: str) -> None:
    """Fail before training when a fresh process could not rebuild this student (nothing is lost yet)."""
    from .custom import class_path_of, example_of, guess_args, rebuild_check

    if _family(model) is not None or type(model).__name__ == "DiffusionModel":
        return
    path = class_path_of(model)
    if path.startswith(("torchvision.models", "timm.models")) and guess_args(model) is None:
        raise KdgenError(f"the {role} is a {type(model).__name__} built in Python, and kdgen cannot tell which stock builder made it; "
                         "name it: kdgen.Classifier(net, class_path='torchvision:resnet18', args={'num_classes': 10}), or "
                         f"{role}.class: torchvision:NAME (timm:NAME) with {role}.args in a recipe")
    _, why = rebuild_check(model, path, guess_args(model), example_of(face_of(model)))
    if why is not None:
        raise KdgenError(f"the {role} could not be saved for a fresh process: {why}")


def _family(model: nn.Module) -> tuple[str, dict] | None:
    fam = getattr(model, "kdgen_family", None)
    if fam is not None:
        return fam
    meta = getattr(model, "kdgen_meta", None)
    if meta and meta.get("family") not in (None, "class", "diffusion"):
        return meta["family"], dict(meta.get("args", {}))
    return None


def save_any(model: nn.Module, folder: Path, *, extra: dict | None = None) -> Path:
    """Save any loaded or built model so that kdgen.load_model(folder) rebuilds it in a fresh process."""
    from .custom import save_class_model
    from .unet import DiffusionModel, save_diffusion

    if isinstance(model, DiffusionModel):
        return save_diffusion(model, folder, extra=extra)
    fam = _family(model)
    if fam is not None:
        return save_model(model, folder, family=fam[0], args=fam[1], extra={**(extra or {}), "face": face_of(model).to_dict()})
    return save_class_model(model, folder, face=face_of(model), extra=extra)


def teacher_record(teacher: nn.Module, out: Path, *, write: bool = True) -> str:
    """Where a handed-in teacher lives for the run's config.yaml: its own folder, or a copy in RUN/teacher
    (`write=False`: only say where, write nothing)."""
    path = getattr(teacher, "kdgen_path", None)
    if path is not None:
        assets = resolve_path("builtin:gan-mnist5k").parent
        return f"builtin:{Path(path).name}" if Path(path).resolve().parent == assets.resolve() else str(path)
    if not write:
        return str(out / "teacher")
    try:
        save_any(teacher, out / "teacher", extra={"role": "teacher (handed in as a module)"})
    except KdgenError as e:
        log.warning("the teacher handed in cannot be saved for a fresh process (%s); this run re-measures only in this process", e)
        return f"{UNSAVED}a {type(teacher).__name__} module)"
    return str(out / "teacher")
