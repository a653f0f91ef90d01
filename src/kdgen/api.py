"""The Python API. The CLI only parses arguments and calls these."""

from __future__ import annotations

import json
import os
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig, load_config
from .data import load_dataset, native_shape
from .errors import KdgenError
from .evaluation import classifier_shape, evaluate_classifier_pair, evaluate_model, evaluate_pair, generator_shape, run_dataset
from .metrics import load_feature_extractor
from .io import atomic_write_text, build_model, ensure_dir, load_model, resolve_path, save_model
from .methods import (ClassifierContext, ClassifierDistiller, GeneratorDistiller, TermContext, build_classifier_terms, build_terms,
                      check_method_mix, parse_methods)
from .models.classifier import CLASSIFIER_FAMILIES, is_classifier
from .models.unet import DiffusionModel, build_diffusion_student, save_diffusion
from .methods.adversarial import AdversarialTerm
from .methods.supervised import SupervisedClassifier
from .models import build_student
from .report import format_table, save_grid
from .report.compare import compare_runs
from .report.page import build_report
from .report.tb import log_final_metrics
from .teacher import load_teacher
from .train import Trainer
from .transfer import draw_transfer_pool, load_transfer_generator
from .utils import device_of

log = logging.getLogger("kdgen")


@dataclass
class Result:
    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    train_seconds: float = 0.0

    @property
    def table(self) -> str:
        return format_table(self.metrics)


def _config(config: Any, overrides: list[str] | None, task: str) -> RunConfig:
    cfg = load_config(config, overrides)
    if cfg.task != task:
        raise KdgenError(f"this recipe is for task '{cfg.task}', not '{task}'; run `kdgen {cfg.task}` with it (or set task={task})")
    return cfg


def _trainer(method, dataset, cfg: RunConfig, out: Path) -> Trainer:
    t = cfg.train
    return Trainer(
        method, dataset, out_dir=out, steps=t.steps, lr=t.lr, d_lr=t.d_lr, betas=tuple(t.betas), batch_size=cfg.data.batch_size,
        ema=t.ema, grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
        sample_every=t.sample_every, seed=t.seed, workers=cfg.data.workers, lr_schedule=t.lr_schedule,
    )


def _prepare_out(cfg: RunConfig, resume: bool) -> Path:
    """Create the run folder and save the resolved config; called only once everything is built,
    so a recipe that fails to build never overwrites an existing run's config.yaml."""
    out = ensure_dir(cfg.out, what="the run folder (out)")
    saved = out / "config.yaml"
    if resume and saved.exists():
        prev = load_config(saved)
        free = {"train": None, "eval": None}  # a resume may train longer or measure differently
        if {**prev.to_dict(), **free} != {**cfg.to_dict(), **free}:
            raise KdgenError(f"--resume with a config that differs from '{saved}' beyond train.* and eval.*; resume with the same recipe")
    cfg.save(saved)
    return out


def _train(method, dataset, cfg: RunConfig, resume: bool):
    out = _prepare_out(cfg, resume)
    return out, _trainer(method, dataset, cfg, out).fit(resume=resume)


def _write_metrics(out: Path, metrics: dict) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _train_record(trained) -> dict:
    return {"seconds": round(trained.seconds, 1), "steps": trained.step, "resumed_from": trained.resumed_from,
            "processes": trained.processes}


# --------------------------------------------------------------------------- distill


def distill(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False) -> Result:
    """Distil the teacher into a smaller student, then measure both. Returns the run's Result."""
    cfg = _config(config, overrides, "distill")
    # 1. teacher, data at the teacher's shape, student from the teacher's config
    teacher = load_teacher(cfg.teacher.path)
    check_method_mix(cfg.methods, diffusion_teacher=isinstance(teacher, DiffusionModel), classifier_teacher=is_classifier(teacher))
    if is_classifier(teacher):
        return _distill_classifier(cfg, teacher, resume)
    if cfg.data.transfer is not None:
        raise KdgenError("data.transfer grows the transfer set of a classifier distillation; this teacher makes images - remove data.transfer")
    if cfg.student.family is not None or cfg.student.args:
        raise KdgenError("student.family and student.args apply to classifier teachers; remove them (student.width sizes a generator student)")
    if isinstance(teacher, DiffusionModel):
        return _distill_diffusion(cfg, teacher, resume)
    if cfg.student.layers_per_block is not None or not cfg.student.attention or cfg.teacher.steps is not None:
        raise KdgenError("student.layers_per_block, student.attention and teacher.steps apply to diffusion teachers; remove them for a GAN teacher")
    size, ch, z_dim = generator_shape(teacher)
    dataset = run_dataset(cfg, image_size=size, channels=ch)
    student, student_args = build_student(teacher, width=cfg.student.width, init=cfg.student.init, seed=cfg.train.seed)
    # 2. the method: a weighted mix of registered loss terms
    ctx = TermContext(student=student, teacher=teacher, teacher_path=cfg.teacher.path, image_size=size, channels=ch, z_dim=z_dim)
    method = GeneratorDistiller(student=student, teacher=teacher, terms=build_terms(cfg.methods, ctx), z_dim=z_dim)
    if cfg.eval.enabled:
        load_feature_extractor(cfg.eval.features, channels=ch)  # a bad eval.features fails now, not after training
    # 3. train, save the (EMA) student, measure teacher and student the same way
    return _train_save_measure(method, dataset, cfg, resume, teacher, evaluate_pair,
                               lambda m, folder: save_model(m, folder, family=teacher.kdgen_meta["family"], args=student_args))


def _train_save_measure(method, dataset, cfg: RunConfig, resume: bool, teacher: nn.Module, measure, save, record=None) -> Result:
    """Train, save the (EMA) student as RUN/student, measure teacher and student, write metrics.json and the report."""
    out, trained = _train(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    save(trained.student, out / "student")
    metrics = {"train": {**_train_record(trained), **(record() if record else {})}}
    if cfg.eval.enabled:
        metrics.update(measure(cfg, teacher=teacher, student=trained.student, out=out))
        log_final_metrics(out / "tb", cfg.to_dict(), metrics, trained.step)
    _write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, trained.student, trained.seconds)


def _labelled(cfg: RunConfig, dataset, what: str) -> None:
    if getattr(dataset, "labels", None) is None:
        raise KdgenError(f"{what} needs labelled images and '{cfg.data.name}' has none; use mnist5k, digits, mnist, fashion-mnist or cifar10")


def classifier_student(cfg: RunConfig, teacher: nn.Module) -> tuple[nn.Module, str, dict]:
    """The student classifier: student.family (default: the teacher's) with student.args over the teacher's args
    (a different family starts from the teacher's channels, image_size and num_classes only); random init."""
    t_family, t_args = teacher.kdgen_meta["family"], dict(teacher.kdgen_meta["args"])
    family = cfg.student.family or t_family
    if family not in CLASSIFIER_FAMILIES:
        raise KdgenError(f"student.family '{family}' is not a classifier family; use one of {', '.join(CLASSIFIER_FAMILIES)}")
    base = t_args if family == t_family else {k: t_args[k] for k in ("channels", "image_size", "num_classes") if k in t_args}
    if family != "featnet" and "image_size" not in base:
        base["image_size"] = classifier_shape(teacher, cfg.data.name)[0]
    if family == "featnet":
        base.pop("image_size", None)
    args = {**base, **cfg.student.args}
    if args.get("num_classes", 10) != t_args.get("num_classes", 10):
        raise KdgenError(f"student.args.num_classes={args.get('num_classes')} but the teacher has {t_args.get('num_classes', 10)} "
                         "classes; remove student.args.num_classes")
    torch.manual_seed(cfg.train.seed)
    return build_model(family, args), family, args


def _distill_classifier(cfg: RunConfig, teacher: nn.Module, resume: bool) -> Result:
    """Classic knowledge distillation: a student classifier trained on the weighted sum of classifier terms."""
    # 1. data at the teacher's shape, a student classifier, and the terms built against both
    size, ch = classifier_shape(teacher, cfg.data.name)
    if cfg.eval.enabled and cfg.data.name.startswith("folder:"):
        raise KdgenError("a classifier is measured on labelled test data and a folder has none; set eval.enabled=false to distil on a folder")
    dataset = run_dataset(cfg, image_size=size, channels=ch)
    student, family, args = classifier_student(cfg, teacher)
    ctx = ClassifierContext(student=student, teacher=teacher, example=dataset.images[:2], has_labels=dataset.labels is not None,
                            transfer=cfg.data.transfer is not None)
    terms, weights = build_classifier_terms(cfg.methods, ctx)
    d = cfg.data
    pool = None if d.transfer is None else draw_transfer_pool(load_transfer_generator(d.transfer), d.transfer_images or 20000,
                                                              image_size=size, channels=ch, seed=cfg.train.seed)
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=dataset.images[:2],
                                 shift=d.shift, transfer=pool, transfer_batch=d.transfer_batch or d.batch_size)

    def save(m: nn.Module, folder: Path) -> None:  # the student, and 64 pool images (RUN/samples/transfer.png) or none
        save_model(m, folder, family=family, args=args, extra={"trained_on": d.name, "image_size": size})
        png = folder.parent / "samples" / "transfer.png"
        if pool is not None:
            save_grid(pool[:64], png)
        else:
            png.unlink(missing_ok=True)  # an earlier run's picture in this folder would misdescribe this one

    # 2. train, save the (EMA) student, measure teacher and student the same way
    record = None if pool is None else lambda: {"transfer": {"generator": d.transfer, "pool": len(pool), "per_batch": method.transfer_batch,
                                                             "images_seen": int(method.transfer_seen)}}
    return _train_save_measure(method, dataset, cfg, resume, teacher, evaluate_classifier_pair, save, record=record)


def _distill_diffusion(cfg: RunConfig, teacher: DiffusionModel, resume: bool) -> Result:
    """Rounds of diffusion distillation: [structural] then the step method's rounds, each student the next round's
    teacher, each saved in RUN/rounds/NAME/student (a diffusers folder); the last one is RUN/student."""
    import copy

    from .methods import METHODS

    opts = parse_methods(cfg.methods)
    order = sorted(opts, key=lambda n: n != "structural")  # structural first: a smaller UNet, then fewer steps
    if not order:
        raise KdgenError("no methods given; name one of progressive, consistency, onestep, structural (see `kdgen methods`)")
    plan = [(name, rnd) for name in order for rnd in METHODS.get(name).plan(opts[name], teacher)]
    if cfg.eval.enabled:
        load_feature_extractor(cfg.eval.features, channels=teacher.channels)  # a bad eval.features fails now, not after training
    dataset = run_dataset(cfg, image_size=teacher.image_size, channels=teacher.channels)
    s = cfg.student
    student, init_counts = build_diffusion_student(teacher, width=s.width, layers_per_block=s.layers_per_block, attention=s.attention,
                                                   init=s.init, seed=cfg.train.seed)
    if s.width < 1 and "structural" not in opts:
        log.warning("student.width=%s: the UNet is narrower than the teacher but no 'structural' loss trains its features; "
                    "set student.width=1.0 for a same-size student, or add methods.structural", s.width)
    out = _prepare_out(cfg, resume)
    is_main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch: only rank 0 writes
    round_teacher, rounds, seconds = teacher, [], 0.0
    for name, rnd in plan:
        folder = out / "rounds" / rnd.name
        done = folder / "student" / "kdgen.json"
        if resume and done.is_file():  # a finished round: its student is the next round's teacher
            trained_student = load_model(folder / "student").to(device_of(round_teacher))
            rounds.append({"round": rnd.name, "method": name, "steps": rnd.student_steps, "skipped": "finished earlier"})
        else:
            method = METHODS.get(name)(opts[name], student=student, teacher=round_teacher, round=rnd)
            data = method.prepare_data(dataset, folder)
            trained = _trainer(method, data, cfg, folder).fit(resume=resume and (folder / "state" / "last.pt").is_file())
            trained_student = trained.student  # every process goes on to the next round with it
            if is_main:
                save_diffusion(trained_student, folder / "student", extra={"round": rnd.name, "method": name, "teacher_steps": rnd.teacher_steps})
            _barrier()
            seconds += trained.seconds
            rounds.append({"round": rnd.name, "method": name, "teacher_steps": rnd.teacher_steps, "steps": rnd.student_steps,
                           "seconds": round(trained.seconds, 1), "train_steps": trained.step})
        round_teacher = trained_student
        student = copy.deepcopy(trained_student).train().requires_grad_(True)
    if not is_main:
        return Result(out)
    final = load_model(out / "rounds" / plan[-1][1].name / "student").to(device_of(teacher))
    save_diffusion(final, out / "student", extra={"methods": order, "rounds": len(plan)})
    metrics = {"train": {"seconds": round(seconds, 1), "steps": cfg.train.steps, "rounds": rounds, "student_init": init_counts}}
    if cfg.eval.enabled:
        metrics.update(evaluate_pair(cfg, teacher=teacher, student=final, out=out))
        log_final_metrics(out / "tb", cfg.to_dict(), metrics, cfg.train.steps)
    _write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, final, seconds)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def evaluate(run: str | Path, overrides: list[str] | None = None, *, save_features: str | Path | None = None,
             data: str = "mnist5k", out: str | Path | None = None, steps: int | None = None) -> Result:
    """Re-measure a distill run folder (its config.yaml, teacher and student) and rewrite its metrics.json;
    or measure one model folder (a generator or a classifier) on `data`, into `out`/metrics.json.

    `overrides` may change eval.* only (e.g. "eval.seeds=[0,1,2]", "eval.num_samples=5000").
    `steps`: a diffusion model's sampling steps (one model only; a run's are in its config and student).
    """
    bad = [o for o in overrides or [] if not o.startswith("eval.")]
    if bad:
        raise KdgenError(f"evaluate takes only eval.* overrides, got '{bad[0]}'; other settings belong to the run's training")
    path = resolve_path(run)
    if save_features is not None and Path(save_features).expanduser().is_dir():
        raise KdgenError(f"--save-features '{save_features}' is a folder; give a file name such as features.npz")
    from .models.unet import is_diffusers_folder

    if (path / "model.json").is_file() or is_diffusers_folder(path):
        if save_features is not None:
            raise KdgenError("--save-features applies to run folders (teacher and student); for one model, drop it")
        metrics = evaluate_model(path, overrides, data=data, steps=steps)
        out = ensure_dir(out or Path("runs") / f"eval-{path.name}")
        _write_metrics(out, metrics)
        return Result(out, metrics)
    if out is not None or data != "mnist5k" or steps is not None:
        raise KdgenError("--out, --data and --steps apply to one model; a run folder is measured on its own data and rewritten in place")
    out = path
    if not (out / "config.yaml").is_file() or not (out / "student").is_dir():
        raise KdgenError(f"'{out}' is neither a finished kdgen run folder (config.yaml + student/) nor a model folder (model.json)")
    cfg = load_config(out / "config.yaml", overrides)
    teacher = load_teacher(cfg.teacher.path)
    student = load_model(out / "student")
    if is_classifier(teacher):
        if save_features is not None:
            raise KdgenError("--save-features applies to generator runs; a classifier run has no FID features - drop it")
        metrics = evaluate_classifier_pair(cfg, teacher=teacher, student=student, out=out)
    else:
        metrics = evaluate_pair(cfg, teacher=teacher, student=student, out=out,
                                save_features=Path(save_features) if save_features else None)
    previous = out / "metrics.json"
    if previous.is_file():  # keep what training recorded
        metrics = {"train": json.loads(previous.read_text()).get("train", {}), **metrics}
    _write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, student)


def sample(model: str | Path | None = None, *, n: int = 64, steps: int | None = None, seed: int = 0, out: str | Path = "samples.png",
           onnx: str | Path | None = None) -> Path:
    """Sample `n` images of a generator or diffusion model (a folder, a run's student or builtin:NAME) into a PNG grid;
    or, with `onnx=RUN/export/student.onnx`, of the exported student in onnxruntime (the same noise as the PyTorch
    sampler for the same seed, every step run by onnxruntime and numpy)."""
    from .sampling import make_sampler

    if n < 1:
        raise KdgenError(f"-n must be at least 1, got {n}")
    if (model is None) == (onnx is None):
        raise KdgenError("give either a model (folder, run student or builtin:NAME) or --onnx RUN/export/student.onnx, not both or neither")
    if onnx is not None:
        images = _onnx_sampler(Path(onnx).expanduser(), steps).sample(n, seed)
    else:
        m = load_model(model)
        if m.kdgen_meta["family"] not in ("diffusion",) and not m.kdgen_meta["family"].endswith("generator"):
            raise KdgenError(f"'{model}' is a '{m.kdgen_meta['family']}', which makes no images; give a generator or diffusion model")
        images = make_sampler(m, steps=steps).sample(n, seed)
    out = Path(out).expanduser()
    save_grid(images, out, nrow=max(1, int(n**0.5)))
    return out


def _onnx_sampler(path: Path, steps: int | None):
    """An exported generator or diffusion student as a Sampler whose latents match kdgen's PyTorch samplers."""
    from .export import OrtSampler
    from .onnx_sampler import OnnxStudent, read_sampler_json

    spec = read_sampler_json(path)
    if spec["kind"] == "classifier":
        raise KdgenError(f"'{path}' is an exported classifier, which makes no images; give a generator or diffusion export")
    if steps is not None and steps != spec.get("steps", 1):
        raise KdgenError(f"this export runs its recorded {spec.get('steps', 1)} step(s); drop --steps, or re-export with "
                         f"`kdgen export RUN --steps {steps}`")
    return OrtSampler(OnnxStudent(path, spec=spec))


def report(run: str | Path) -> Path:
    """(Re)build RUN/report.html from the run folder; returns its path."""
    return build_report(Path(run).expanduser())


def compare(runs: list[str | Path], out: str | Path) -> dict:
    """One table (markdown + CSV) of every run's teacher and student, and a Pareto plot, into `out`."""
    return compare_runs([Path(r).expanduser() for r in runs], Path(out).expanduser())


# --------------------------------------------------------------------------- train-teacher / train-features


def train_teacher(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False) -> Result:
    """Train a GAN teacher from scratch (hinge loss), saved to OUT/teacher with its discriminator beside it."""
    cfg = _config(config, overrides, "train-teacher")
    if cfg.model.family == "diffusion":
        return _train_diffusion_teacher(cfg, resume)
    if cfg.model.family in CLASSIFIER_FAMILIES:
        return _train_classifier_teacher(cfg, resume)
    if cfg.model.family != "dcgan-generator":
        raise KdgenError(f"train-teacher builds GAN generators, diffusion models or classifiers; model.family must be 'dcgan-generator', "
                         f"'diffusion' or one of {', '.join(CLASSIFIER_FAMILIES)}, got '{cfg.model.family}'")
    args = {"z_dim": 100, "image_size": 28, "channels": 1, "base_width": 64, "width": 1.0, **cfg.model.args}
    # 1. generator and a matching discriminator, trained by the adversarial term alone
    torch.manual_seed(cfg.train.seed)
    generator = build_model("dcgan-generator", args)
    d_args = {k: args[k] for k in ("image_size", "channels", "base_width", "width")}
    discriminator = build_model("dcgan-discriminator", d_args)
    adv = AdversarialTerm(AdversarialTerm.Options(weight=1.0, init="random"), TermContext(student=generator, teacher=None),
                          discriminator=discriminator)
    method = GeneratorDistiller(student=generator, teacher=None, terms={"adversarial": adv}, z_dim=args["z_dim"])
    # 2. data, train, save
    dataset = run_dataset(cfg, image_size=args["image_size"], channels=args["channels"])
    out, trained = _train(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    folder = save_model(trained.student, out / "teacher", family="dcgan-generator", args=args,
                        extra={"trained_on": cfg.data.name, "steps": trained.step, "train_seconds": round(trained.seconds, 1)})
    save_model(discriminator, folder / "discriminator", family="dcgan-discriminator", args=d_args)
    save_grid(method.preview(16, module=trained.student), out / "samples" / "teacher.png", nrow=4)
    metrics = {"train": _train_record(trained)}
    _write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.seconds)


DIFFUSION_TEACHER_KEYS = {"unet", "scheduler", "steps", "num_classes", "label_dropout", "guidance_scale"}


def _train_diffusion_teacher(cfg: RunConfig, resume: bool) -> Result:
    """A DDPM teacher: diffusers UNet2DModel + noise schedule, trained by the denoising loss; saved as a diffusers folder."""
    from .methods.denoise import DenoisingTraining
    from .models.unet import DiffusionModel, build_unet, save_diffusion

    a = dict(cfg.model.args)
    unknown = sorted(set(a) - DIFFUSION_TEACHER_KEYS)
    if unknown:
        raise KdgenError(f"unknown model.args key '{unknown[0]}' for a diffusion teacher; valid keys are: {', '.join(sorted(DIFFUSION_TEACHER_KEYS))}")
    size, ch = native_shape(cfg.data.name) or (None, None)
    size, ch = cfg.data.image_size or size or 28, cfg.data.channels or ch or 1
    unet_args = {"sample_size": size, "in_channels": ch, "out_channels": ch, **dict(a.get("unet") or {})}
    k = a.get("num_classes")
    if k:
        unet_args["num_class_embeds"] = int(k) + 1  # the last one is the null class of classifier-free guidance
    sched = {"num_train_timesteps": 1024, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
             "clip_sample": True, **dict(a.get("scheduler") or {})}
    torch.manual_seed(cfg.train.seed)
    model = DiffusionModel(build_unet(unet_args), sched, steps=int(a.get("steps", 64)), guidance_scale=float(a.get("guidance_scale", 1.0)),
                           num_classes=int(k) if k else None, extra={"null_class": int(k)} if k else None)
    dataset = run_dataset(cfg, image_size=model.image_size, channels=model.channels)
    if k and (dataset.labels is None or int(dataset.labels.max()) + 1 > int(k)):
        raise KdgenError(f"model.args.num_classes={k} but the '{cfg.data.name}' data has no labels or more classes; fix num_classes or the data")
    method = DenoisingTraining(model, label_dropout=float(a.get("label_dropout", 0.1)))
    out, trained = _train(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    save_diffusion(trained.student, out / "teacher",
                   extra={"trained_on": cfg.data.name, "train_steps": trained.step, "train_seconds": round(trained.seconds, 1)})
    save_grid(method.preview(64, module=trained.student), out / "samples" / "teacher.png")
    metrics = {"train": _train_record(trained)}
    _write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.seconds)


def _train_classifier_teacher(cfg: RunConfig, resume: bool) -> Result:
    """A classifier trained alone (cross-entropy, data.shift augmentation), saved to OUT/teacher and measured on the test split."""
    from .evaluation import measure_classifier

    name = cfg.data.name
    if name.startswith("folder:"):
        raise KdgenError("a classifier teacher needs labelled data; a folder dataset has no labels - use mnist5k, digits, mnist, fashion-mnist or cifar10")
    size, ch = native_shape(name) or (None, None)
    size, ch = cfg.data.image_size or size or 28, cfg.data.channels or ch or 1
    for key, want in (("channels", ch), ("image_size", size)):
        given = cfg.model.args.get(key)
        if given is not None and given != want:
            raise KdgenError(f"model.args.{key}={given} but the '{name}' images have {key} {want}; remove model.args.{key} or set data.{key}={given}")
    train = load_dataset(name, split="train", image_size=size, channels=ch, root=cfg.data.root)
    test = load_dataset(name, split="test", image_size=size, channels=ch, root=cfg.data.root)
    _labelled(cfg, train, "a classifier teacher")
    k = int(train.labels.max()) + 1
    args = {**cfg.model.args, "channels": ch, "num_classes": cfg.model.args.get("num_classes", k)}
    if cfg.model.family != "featnet":
        args["image_size"] = size
    torch.manual_seed(cfg.train.seed)
    net = build_model(cfg.model.family, args)
    out, trained = _train(SupervisedClassifier(net, shift=cfg.data.shift), train, cfg, resume)
    if not trained.is_main:
        return Result(out)
    folder = save_model(trained.student, out / "teacher", family=cfg.model.family, args=args,
                        extra={"trained_on": name, "image_size": size, "steps": trained.step, "train_seconds": round(trained.seconds, 1)})
    block, _ = measure_classifier(trained.student, test, weights=folder / "model.safetensors", num_classes=args["num_classes"],
                                  repeats=cfg.eval.latency_repeats)
    metrics = {"train": _train_record(trained), "teacher": block,
               "protocol": {"kind": "classifier", "reference": f"{name} test split", "reference_count": len(test)}}
    _write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.seconds)


def train_features(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False) -> Result:
    """Train the feature network (a CNN classifier) on a labelled dataset; reports its test accuracy."""
    cfg = _config(config, overrides, "train-features")
    if cfg.model.family != "featnet":
        raise KdgenError(f"train-features builds feature nets; model.family must be 'featnet', got '{cfg.model.family}'")
    name = cfg.data.name
    if name.startswith("folder:"):
        raise KdgenError("train-features needs labelled data; a folder dataset has no labels - use mnist5k, digits, mnist, fashion-mnist or cifar10")
    size, ch = native_shape(name) or (None, None)
    size, ch = cfg.data.image_size or size, cfg.data.channels or ch
    given = cfg.model.args.get("channels")
    if given is not None and given != ch:
        raise KdgenError(f"model.args.channels={given} but the '{name}' images have {ch} channel(s); remove model.args.channels or set data.channels={given}")
    train = load_dataset(name, split="train", image_size=size, channels=ch, root=cfg.data.root)
    test = load_dataset(name, split="test", image_size=size, channels=ch, root=cfg.data.root)
    args = {**cfg.model.args, "channels": ch, "num_classes": int(train.labels.max()) + 1}
    torch.manual_seed(cfg.train.seed)
    net = build_model("featnet", args)
    out, trained = _train(SupervisedClassifier(net), train, cfg, resume)
    if not trained.is_main:
        return Result(out)
    acc = classifier_accuracy(trained.student, test.images, test.labels)
    save_model(trained.student, out / "featnet", family="featnet", args=args,
               extra={"trained_on": name, "image_size": size, "test_accuracy": acc})
    metrics = {"train": _train_record(trained), "test_accuracy": acc}
    _write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.seconds)


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    device = next(model.parameters()).device
    pred = torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(500)])
    return float((pred == labels).float().mean())
