"""`kdgen distill`: one pipeline for every teacher, read top to bottom.

    1. the teacher, frozen, with its face           (a folder, builtin:NAME, a class path, or a module)
    2. the data, at the teacher's image shape       (a dataset name, folder:PATH, or a torch Dataset)
    3. the plan of the teacher's kind               (the student, the method, how it is saved)
    4. train -> save -> measure -> report           (the same tail for every kind)

A plan is what differs between kinds: generators are distilled by weighted loss terms in one run,
classifiers by classifier terms, diffusion models in rounds (structural, then fewer steps), each
round's student the next round's teacher.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .config import RunConfig
from .errors import KdgenError
from .evaluation import (
    classifier_shape,
    evaluate_classifier_pair,
    evaluate_image_pair,
    evaluate_pair,
    held_out,
    image_pairs,
    run_dataset,
    run_features,
)
from .faces import Face, face_of, set_face
from .io import ensure_dir
from .metrics.quality import feature_path
from .models.loading import build_model, load_model
from .models.resolve import (
    check_one_student,
    check_saveable,
    class_student,
    derived_student,
    given_diffusion_student,
    given_student,
    resolve_teacher,
    save_any,
    teacher_record,
)
from .report import save_grid
from .report.page import build_report
from .report.tb import log_final_metrics
from .runs import (
    Result,
    check_existing,
    check_resume,
    holding_run_lock,
    lock_run,
    make_trainer,
    prepare_out,
    task_config,
    train,
    train_record,
    write_metrics,
)
from .utils import device_of

log = logging.getLogger("kdgen")


@dataclass
class Plan:
    """One training run: the method (student inside), its data, how the student is saved and measured."""

    method: nn.Module
    dataset: torch.utils.data.Dataset
    measure: Callable[..., dict]
    save: Callable[[nn.Module, Path], Any]
    record: Callable[[], dict] | None = None


@holding_run_lock
def distill(recipe: Any = None, overrides: list[str] | None = None, *, teacher: Any = None, student: Any = None,
            data: Any = None, resume: bool = False, overwrite: bool = False) -> Result:
    """Distil a teacher into a smaller student, then measure both. Returns the run's Result.

    A run folder that already holds a run is continued with `resume`, replaced with `overwrite`, and refused otherwise.

    `recipe`: a YAML path, a dict or a RunConfig (None: the demo recipe); `overrides`: "section.key=value" strings.
    `teacher` / `student`: an nn.Module (or kdgen.Generator / kdgen.Classifier), a model folder or builtin:NAME;
    None: as the recipe says (the student then derived from the teacher). `data`: a torch Dataset or a dataset name.
    """
    cfg = task_config(recipe, overrides, "distill")
    check_existing(cfg, resume)  # before anything is built or written
    # 1. the teacher, frozen, with its face
    t = resolve_teacher(cfg.teacher, teacher)
    face = face_of(t)
    from .methods import check_method_mix

    check_method_mix(cfg.methods, diffusion_teacher=face.kind == "diffusion", classifier_teacher=face.kind == "classifier")
    if face.kind not in PLANS:
        raise KdgenError(f"kdgen cannot distil a {face.kind} teacher yet; it distils generators, diffusion models and classifiers")
    # 2. the data: a Dataset handed in becomes python:NAME for this process
    if data is not None:
        cfg.data.name = use_data(data)
    _refuse_keys_of_other_kinds(cfg, face.kind)
    if teacher is not None:  # the recipe's teacher section gives way to the one handed in (its own folder, if it has one)
        own = getattr(t, "kdgen_path", None)
        cfg.teacher.path, cfg.teacher.class_ = (str(own) if own is not None else None), None
        cfg.teacher.args, cfg.teacher.weights, cfg.teacher.face, cfg.teacher.z_shape = {}, None, None, None
    # 3. the plan of this kind, and 4. the one tail
    if face.kind == "diffusion":
        given = given_diffusion_student(student, cfg.student, t) if student is not None or cfg.student.class_ is not None else None
        if teacher is not None:
            cfg.teacher.path = teacher_record(t, Path(cfg.out), write=False)
            lock_run(ensure_dir(cfg.out, what="the run folder (out)"))  # RUN/teacher is written next: hold the folder first
            check_resume(cfg, resume)
            cfg.teacher.path = teacher_record(t, Path(cfg.out))
        return _distill_diffusion(cfg, t, resume, given)
    plan = PLANS[face.kind](cfg, t, face, student)
    if cfg.eval.enabled and face.makes_images:
        run_features(cfg, face.channels)  # a bad or mismatched eval.features fails now, not after training
    if teacher is not None:  # everything is built: the run's config.yaml must name a teacher a fresh process can load
        cfg.teacher.path = teacher_record(t, Path(cfg.out), write=False)
        lock_run(ensure_dir(cfg.out, what="the run folder (out)"))
        check_resume(cfg, resume)  # before RUN/teacher is (over)written
        cfg.teacher.path = teacher_record(t, Path(cfg.out))
    return train_save_measure(plan, cfg, resume, t)


def use_data(data: Any) -> str:
    """The dataset name a run records: a name as it is, a torch Dataset registered for this process as python:NAME."""
    from .data.user import UserDataset

    if isinstance(data, (str, Path)):
        return str(data)
    return UserDataset(data).name


def _refuse_keys_of_other_kinds(cfg: RunConfig, kind: str) -> None:
    s = cfg.student
    if kind != "classifier" and cfg.data.transfer is not None:
        raise KdgenError("data.transfer grows the transfer set of a classifier distillation; this teacher makes images - remove data.transfer")
    if cfg.data.teacher_cache is not None and not (kind == "generator" or (kind == "diffusion" and "onestep" in cfg.methods)):
        raise KdgenError(f"data.teacher_cache holds a GAN generator's (noise, image) pairs or methods.onestep's diffusion "
                         f"trajectories; this run (a {kind} teacher, methods {', '.join(cfg.methods)}) has neither - remove it")
    if kind != "image-to-image" and cfg.data.task is not None:
        raise KdgenError(f"data.task makes (input, target) pairs for an image-to-image teacher; this teacher is a {kind} - remove data.task")
    if kind != "image-to-image" and cfg.eval.lpips is not None:
        raise KdgenError(f"eval.lpips measures image-to-image outputs against their targets; this teacher is a {kind} - remove eval.lpips")
    if kind not in ("classifier", "image-to-image") and s.family is not None:
        raise KdgenError("student.family names a kdgen classifier or image-to-image family; for a generator give student.class or "
                         "student.width")
    if kind != "diffusion" and (s.layers_per_block is not None or not s.attention or cfg.teacher.steps is not None):
        raise KdgenError("student.layers_per_block, student.attention and teacher.steps apply to diffusion teachers; remove them")
    if kind == "diffusion" and s.args and s.class_ is None:
        raise KdgenError("student.args apply to a student of a class or family; a diffusion student is sized by student.width, "
                         "student.layers_per_block and student.attention")


def train_save_measure(plan: Plan, cfg: RunConfig, resume: bool, teacher: nn.Module) -> Result:
    """Train, save the (EMA) student as RUN/student, measure teacher and student, write metrics.json and the report."""
    out, trained = train(plan.method, plan.dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    plan.save(trained.student, out / "student")
    metrics = {"train": {**train_record(trained), **(plan.record() if plan.record else {})}}
    if cfg.eval.enabled:
        metrics.update(plan.measure(cfg, teacher=teacher, student=trained.student, out=out))
        log_final_metrics(out / "tb", cfg.to_dict(), metrics, trained.step)
    write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, trained.student, trained.total_seconds)


def pick_student(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> nn.Module:
    """Given (argument or student.class), or derived from the teacher; checked to be saveable before any training."""
    s = cfg.student
    check_one_student(given, s)
    if given is not None:
        student = given_student(given, face)
    elif s.class_ is not None:
        student = class_student(s, face)
    else:
        student = derived_student(teacher, face, width=s.width, init=s.init, seed=cfg.train.seed, structure=s.structure)
    check_saveable(student, "student")
    return student


# --------------------------------------------------------------------------- generators


def plan_generator(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> Plan:
    """A student generator trained by a weighted sum of loss terms (output, feature, perceptual, adversarial)."""
    from .methods import GeneratorDistiller, TermContext, build_terms, measurement_caveats

    if cfg.student.args and cfg.student.class_ is None:
        raise KdgenError("student.args are the arguments of student.class; add student.class or remove student.args")
    dataset = training_data(cfg, face.image_size, face.channels)
    student = pick_student(cfg, teacher, face, given)
    ctx = TermContext(student=student, teacher=teacher, teacher_path=cfg.teacher.path, image_size=face.image_size,
                      channels=face.channels, z_shape=face.z_shape)
    method = GeneratorDistiller(student=student, teacher=teacher, terms=build_terms(cfg.methods, ctx), z_shape=face.z_shape)
    space = feature_path(cfg.eval.features, data=cfg.data.name, channels=face.channels) if cfg.eval.enabled else None
    caveats = measurement_caveats(cfg.methods, space) if space else []
    record = None
    if cfg.data.teacher_cache is not None:
        from .cache import WithPairs, generator_cache

        pairs = generator_cache(teacher, setting=cfg.data.teacher_cache, count=cfg.data.teacher_cache_size, z_shape=face.z_shape,
                                layers=method.teacher_layers, seed=cfg.train.seed)
        dataset, record = WithPairs(dataset, pairs), (lambda: {"teacher_cache": pairs.record()})
    return Plan(method, dataset, functools.partial(evaluate_pair, caveats=caveats), lambda m, folder: save_any(m, folder), record)


# --------------------------------------------------------------------------- classifiers


def plan_classifier(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> Plan:
    """Classic knowledge distillation: a student classifier trained on the weighted sum of classifier terms."""
    from .methods import ClassifierContext, ClassifierDistiller, build_classifier_terms
    from .transfer import draw_transfer_pool, load_transfer_generator

    # 1. data at the teacher's shape (a classifier that states none takes the data's), the student, the terms
    if face.image_shape is None:
        face = _classifier_face_from_data(cfg, teacher, face)
    size, ch = face.image_size, face.channels
    dataset = training_data(cfg, size, ch)
    if cfg.eval.enabled and getattr(dataset, "labels", "given") is None and cfg.data.name.startswith("folder:"):
        raise KdgenError("a classifier is measured on labelled test images and this folder has no class sub-folders; put the images in one "
                         "sub-folder per class, or set eval.enabled=false to distil on it unlabelled")
    student = classifier_student(cfg, teacher, face, given)
    labelled = getattr(dataset, "labelled", None)
    labelled = dataset.labels is not None if labelled is None else labelled
    ctx = ClassifierContext(student=student, teacher=teacher, example=dataset_images(dataset, 2), has_labels=labelled,
                            transfer=cfg.data.transfer is not None)
    terms, weights = build_classifier_terms(cfg.methods, ctx)
    d = cfg.data
    pool = None if d.transfer is None else draw_transfer_pool(load_transfer_generator(d.transfer), d.transfer_images or 20000,
                                                              image_size=size, channels=ch, seed=cfg.train.seed)
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=dataset_images(dataset, 2),
                                 shift=d.shift, transfer=pool, transfer_batch=d.transfer_batch or d.batch_size)

    def save(m: nn.Module, folder: Path) -> None:  # the student, and 64 pool images (RUN/samples/transfer.png) or none
        save_any(m, folder, extra={"trained_on": d.name, "image_size": size})
        png = folder.parent / "samples" / "transfer.png"
        if pool is not None:
            save_grid(pool[:64], png)
        else:
            png.unlink(missing_ok=True)  # an earlier run's picture in this folder would misdescribe this one

    record = None if pool is None else lambda: {"transfer": {"generator": d.transfer, "pool": len(pool), "per_batch": method.transfer_batch,
                                                             "images_seen": int(method.transfer_seen)}}
    return Plan(method, dataset, evaluate_classifier_pair, save, record)


def training_data(cfg: RunConfig, size: int, channels: int) -> torch.utils.data.Dataset:
    """The run's training split at the teacher's shape; a folder whose own shape differs is read at the teacher's, and kdgen says so."""
    if cfg.data.name.startswith("folder:") and cfg.data.image_size is None and cfg.data.channels is None:
        from .data import native_shape

        own = native_shape(cfg.data.name, cfg.data.root, cfg.data.on_corrupt)
        if own != (size, channels):
            log.warning("the folder's images are %d px with %d channel(s); the teacher takes %d px with %d, so kdgen reads them at the "
                        "teacher's shape", own[0], own[1], size, channels)
    return run_dataset(cfg, image_size=size, channels=channels)


def dataset_images(dataset, n: int) -> torch.Tensor:
    """The first `n` images (a tensor dataset's slice; any other dataset is read item by item, never whole)."""
    from .data import TensorImageDataset

    if isinstance(dataset, TensorImageDataset):
        return dataset.images[:n]
    return torch.stack([dataset[i]["image"] for i in range(n)])


def _classifier_face_from_data(cfg: RunConfig, teacher: nn.Module, face: Face) -> Face:
    from .data import native_shape
    from .data.user import PREFIX, live_dataset
    from .faces import probe_classifier

    if cfg.data.name.startswith(PREFIX):
        shape = live_dataset(cfg.data.name).image_shape
    else:
        size, ch = cfg.data.image_size, cfg.data.channels
        native = native_shape(cfg.data.name, cfg.data.root, cfg.data.on_corrupt)
        if native is not None:
            size, ch = size or native[0], ch or native[1]
        if not size or not ch:
            raise KdgenError("this classifier states no input shape and the data gives none; set data.image_size and data.channels")
        shape = (ch, size, size)
    # the shape came from the data, not from the user: the fix names the keys that set it
    k = probe_classifier(teacher, shape, fix="the shape is the data's: set data.channels and data.image_size to what the teacher "
                                             "takes, or state it with kdgen.Classifier(net, input_shape=(C, H, W))")
    face = Face("classifier", image_shape=tuple(shape), num_classes=face.num_classes or k)
    set_face(teacher, face)
    return face


def classifier_student(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> nn.Module:
    """The student classifier: given, student.class, a kdgen family (student.family, default the teacher's when it has one)
    with student.args over the teacher's args, or the teacher pruned to student.width."""
    from .models.classifier import CLASSIFIER_FAMILIES

    s = cfg.student
    meta = getattr(teacher, "kdgen_meta", None) or {}
    t_family = meta.get("family") if meta.get("family") in CLASSIFIER_FAMILIES else None
    if given is not None or s.class_ is not None or (s.family is None and t_family is None):
        if s.args and s.class_ is None:
            raise KdgenError("student.args set the arguments of a student family or class; add student.family or student.class")
        return pick_student(cfg, teacher, face, given)
    family = s.family or t_family
    if family not in CLASSIFIER_FAMILIES:
        raise KdgenError(f"student.family '{family}' is not a classifier family; use one of {', '.join(CLASSIFIER_FAMILIES)}")
    t_args = dict(meta.get("args", {})) if t_family else {}
    base = t_args if family == t_family else {"channels": face.channels, "image_size": face.image_size, "num_classes": face.num_classes}
    if family != "featnet" and "image_size" not in base:
        base["image_size"] = classifier_shape(teacher, cfg.data.name)[0]
    if family == "featnet":
        base.pop("image_size", None)
    args = {k: v for k, v in {**base, **s.args}.items() if v is not None}
    want = face.num_classes or t_args.get("num_classes", 10)
    if args.get("num_classes", 10) != want:
        raise KdgenError(f"student.args.num_classes={args.get('num_classes')} but the teacher has {want} classes; remove student.args.num_classes")
    torch.manual_seed(cfg.train.seed)
    student = build_model(family, args)
    object.__setattr__(student, "kdgen_family", (family, args))
    set_face(student, face)
    return student


# --------------------------------------------------------------------------- diffusion


def _distill_diffusion(cfg: RunConfig, teacher: nn.Module, resume: bool, given: nn.Module | None = None) -> Result:
    """Rounds of diffusion distillation: [structural] then the step method's rounds, each student the next round's
    teacher, each saved in RUN/rounds/NAME/student (a diffusers folder); the last one is RUN/student. The first
    student is `given`, or derived from the teacher (student.structure / width / layers_per_block / attention)."""
    from .methods import METHODS, parse_methods
    from .models.unet import build_diffusion_student, save_diffusion

    opts = parse_methods(cfg.methods)
    order = sorted(opts, key=lambda n: n != "structural")  # structural first: a smaller UNet, then fewer steps
    if not order:
        raise KdgenError("no methods given; name one of progressive, consistency, onestep, structural (see `kdgen methods`)")
    plan = [(name, rnd) for name in order for rnd in METHODS.get(name).rounds(opts[name], teacher, cfg.train.steps)]
    if cfg.eval.enabled:
        run_features(cfg, teacher.channels)  # a bad or mismatched eval.features fails now, not after training
    dataset = training_data(cfg, teacher.image_size, teacher.channels)
    s = cfg.student
    if given is not None:
        student, init_counts = given, {"given": type(given.unet).__name__, "params": sum(p.numel() for p in given.parameters())}
    elif s.structure == "pruned":  # torch-pruning from the teacher's own UNet
        from .models.resolve import reinitialise
        from .models.unet import prune_unet

        if s.layers_per_block is not None or not s.attention:
            raise KdgenError("student.structure=pruned keeps the teacher's blocks and attention and prunes channels; remove "
                             "student.layers_per_block and student.attention (or use student.structure=auto)")
        student = prune_unet(teacher, width=s.width, seed=cfg.train.seed)
        if s.init == "random":
            reinitialise(student.unet, cfg.train.seed)
        init_counts = {"pruned": "torch-pruning", "init": s.init}
    else:
        student, init_counts = build_diffusion_student(teacher, width=s.width, layers_per_block=s.layers_per_block,
                                                       attention=s.attention, init=s.init, seed=cfg.train.seed)
    if given is None and s.width < 1 and "structural" not in opts:
        log.warning("student.width=%s: the UNet is narrower than the teacher but no 'structural' loss trains its features; "
                    "set student.width=1.0 for a same-size student, or add methods.structural", s.width)
    out = prepare_out(cfg, resume)
    is_main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch: only rank 0 writes
    round_teacher, rounds, seconds, settings = teacher, [], 0.0, {}
    for name, rnd in plan:
        folder = out / "rounds" / rnd.name
        done = folder / "student" / "kdgen.json"
        if resume and done.is_file():  # a finished round: its student is the next round's teacher
            trained_student = load_model(folder / "student").to(device_of(round_teacher))
            earlier = float(trained_student.extra.get("train_seconds", 0.0))
            seconds += earlier
            rounds.append({"round": rnd.name, "method": name, "steps": rnd.student_steps, "skipped": "finished earlier",
                           "seconds": round(earlier, 1)})
        else:
            method = METHODS.get(name)(opts[name], student=student, teacher=round_teacher, round=rnd)
            method.cache_root = cfg.data.teacher_cache
            data = method.prepare_data(dataset, folder)
            trainer = make_trainer(method, data, cfg, folder, steps=rnd.train_steps)
            trained = trainer.fit(resume=resume and (folder / "state" / "last.pt").is_file())
            trained_student = trained.student  # every process goes on to the next round with it
            settings = {"processes": trained.processes, **trained.settings}
            if is_main:
                save_diffusion(trained_student, folder / "student", extra={"round": rnd.name, "method": name, "teacher_steps": rnd.teacher_steps,
                                                                           "train_seconds": round(trained.total_seconds, 3)})
            _barrier()
            seconds += trained.total_seconds
            rounds.append({"round": rnd.name, "method": name, "teacher_steps": rnd.teacher_steps, "steps": rnd.student_steps,
                           "seconds": round(trained.total_seconds, 1), "train_steps": trained.step, "segments": len(trained.segments)})
        if not rnd.convert:  # a converted student re-expresses its teacher; the teacher stays the next round's
            round_teacher = trained_student
        student = copy.deepcopy(trained_student).train().requires_grad_(True)
    if not is_main:
        return Result(out)
    final = load_model(out / "rounds" / plan[-1][1].name / "student").to(device_of(teacher))
    save_diffusion(final, out / "student", extra={"methods": order, "rounds": len(plan), "train_seconds": round(seconds, 3)})
    metrics = {"train": {"seconds": round(seconds, 1), "steps": cfg.train.steps, "rounds": rounds, "student_init": init_counts, **settings}}
    if cfg.eval.enabled:
        metrics.update(evaluate_pair(cfg, teacher=teacher, student=final, out=out))
        log_final_metrics(out / "tb", cfg.to_dict(), metrics, cfg.train.steps)
    write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, final, seconds)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def plan_image_to_image(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> Plan:
    """A student image-to-image network trained on data.task's inputs by the generator terms (output to the teacher's image
    of the same input, feature, perceptual, and a conditional adversarial term on (input, output)); data.task=none:
    unpaired inputs alone, the teacher's outputs then being the adversarial term's real images."""
    from .data.paired import task_channels
    from .methods import GeneratorDistiller, TermContext, build_terms

    task = cfg.data.task
    if task is None:
        raise KdgenError("an image-to-image teacher is distilled on a task's inputs; set data.task (sr4, denoise, colorize, or none "
                         "for unpaired inputs: the student then learns from the teacher's outputs alone)")
    c_in, c_out = task_channels(task, face.channels)
    if (c_in, c_out) != (face.input_shape[0], face.channels):
        raise KdgenError(f"data.task={task} makes {c_in}-channel inputs and {c_out}-channel targets, but the teacher maps "
                         f"{face.input_shape[0]} to {face.channels} channels; use the task the teacher was trained for")
    if cfg.eval.enabled and cfg.eval.lpips:  # a bad weights file is a sentence now, not after training
        from .metrics.restoration import Lpips

        Lpips(cfg.eval.lpips)
    dataset = image_pairs(cfg, image_size=face.image_size, channels=face.channels, split="train", training=True)
    shown = image_pairs(cfg, image_size=face.image_size, channels=face.channels, split="test" if held_out(cfg) else "train")
    preview = torch.stack([shown[i]["input"] for i in range(min(16, len(shown)))])
    student = image_to_image_student(cfg, teacher, face, given)
    ctx = TermContext(student=student, teacher=teacher, teacher_path=cfg.teacher.path, image_size=face.image_size,
                      channels=face.channels, z_shape=face.input_shape, in_channels=face.input_shape[0], paired=task != "none")
    method = GeneratorDistiller(student=student, teacher=teacher, terms=build_terms(cfg.methods, ctx), z_shape=face.input_shape,
                                preview_inputs=preview, real_from_teacher=task == "none", degradation=dataset.degradation)
    record = lambda: {"task": dataset.record()}  # noqa: E731
    return Plan(method, dataset, evaluate_image_pair, lambda m, folder: save_any(m, folder), record)


def image_to_image_student(cfg: RunConfig, teacher: nn.Module, face: Face, given: Any) -> nn.Module:
    """Given, student.class, derived from the teacher (student.width / init), or a kdgen image-to-image family of its own
    (student.family with student.args; the teacher's args when it is the teacher's family), started from random weights."""
    from .config import StudentConfig
    from .models.img2img import IMAGE_TO_IMAGE_FAMILIES

    s = cfg.student
    if s.family is None:
        if s.args and s.class_ is None:
            raise KdgenError("student.args are the arguments of student.family or student.class; add one of them or remove student.args")
        return pick_student(cfg, teacher, face, given)
    if given is not None or s.class_ is not None:
        raise KdgenError("student.family and a given student (student.class or student=) both name the student; keep one")
    default = StudentConfig()
    for key in ("width", "init"):
        if getattr(s, key) != getattr(default, key):
            raise KdgenError(f"student.{key} shrinks the teacher's own network; a student.family student is sized by student.args "
                             f"(e.g. student.args.width) and starts from random weights - remove student.{key}")
    if s.family not in IMAGE_TO_IMAGE_FAMILIES:
        raise KdgenError(f"student.family '{s.family}' is not an image-to-image family; use one of {', '.join(IMAGE_TO_IMAGE_FAMILIES)}")
    meta = getattr(teacher, "kdgen_meta", None) or {}
    base = dict(meta.get("args", {})) if meta.get("family") == s.family else {}
    fixed = {"in_channels": face.input_shape[0], "out_channels": face.channels, "image_size": face.image_size}
    for key, want in fixed.items():
        if s.args.get(key, want) != want:
            raise KdgenError(f"student.args.{key}={s.args[key]} but the teacher's is {want}; remove student.args.{key}")
    args = {**base, **s.args, **fixed}
    torch.manual_seed(cfg.train.seed)
    try:
        student = build_model(s.family, args)
    except KdgenError as e:  # its sentence names model.args; here the key to fix is student.args
        raise KdgenError(str(e).replace("fix model.args", "fix student.args")) from None
    object.__setattr__(student, "kdgen_family", (s.family, args))
    set_face(student, face)
    check_saveable(student, "student")
    return student


PLANS: dict[str, Callable[..., Plan] | None] = {"generator": plan_generator, "classifier": plan_classifier, "diffusion": None,
                                                "image-to-image": plan_image_to_image}
