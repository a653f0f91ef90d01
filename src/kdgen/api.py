"""The Python API. The CLI only parses arguments and calls these."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig, load_config
from .data import load_dataset, native_shape, stack_images
from .errors import KdgenError
from .metrics.classify import classification_scores, predict
from .metrics import QualityMetric, evaluate_quality, fidelity, load_feature_extractor, measure_cost
from .io import atomic_write_bytes, atomic_write_text, build_model, load_model, resolve_path, save_model
from .methods import GeneratorDistiller, TermContext, build_terms
from .methods.adversarial import AdversarialTerm
from .methods.supervised import SupervisedClassifier
from .models import build_student
from .report import format_table, save_grid, save_side_by_side
from .report.compare import compare_runs
from .report.page import build_report
from .report.tb import log_final_metrics
from .sampling import GeneratorSampler
from .teacher import load_teacher
from .train import Trainer

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


def _data(cfg: RunConfig, *, image_size: int, channels: int, split: str = "train") -> torch.utils.data.Dataset:
    """The run's dataset at the model's size; an explicit data size that disagrees is an error."""
    for key, want, got in (("image_size", image_size, cfg.data.image_size), ("channels", channels, cfg.data.channels)):
        if got is not None and got != want:
            raise KdgenError(
                f"data.{key}={got} does not match the model's {key} {want}; remove data.{key} or use a model made for {got}"
            )
    return load_dataset(cfg.data.name, split=split, image_size=image_size, channels=channels, root=cfg.data.root, on_corrupt=cfg.data.on_corrupt)


def _trainer(method, dataset, cfg: RunConfig, out: Path) -> Trainer:
    t = cfg.train
    return Trainer(
        method, dataset, out_dir=out, steps=t.steps, lr=t.lr, d_lr=t.d_lr, betas=tuple(t.betas), batch_size=cfg.data.batch_size,
        ema=t.ema, grad_clip=t.grad_clip, checkpoint_every=t.checkpoint_every, log_every=t.log_every,
        sample_every=t.sample_every, seed=t.seed, workers=cfg.data.workers,
    )


def _prepare_out(cfg: RunConfig, resume: bool) -> Path:
    """Create the run folder and save the resolved config; called only once everything is built,
    so a recipe that fails to build never overwrites an existing run's config.yaml."""
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
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
    return {"seconds": round(trained.seconds, 1), "steps": trained.step, "resumed_from": trained.resumed_from}


def generator_shape(model: nn.Module) -> tuple[int, int, int]:
    """(image_size, channels, z_dim) from a generator's model.json args."""
    args = model.kdgen_meta["args"]
    return args.get("image_size", 28), args.get("channels", 1), args.get("z_dim", 100)


# --------------------------------------------------------------------------- distill


def distill(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False) -> Result:
    """Distil the teacher into a smaller student, then measure both. Returns the run's Result."""
    cfg = _config(config, overrides, "distill")
    # 1. teacher, data at the teacher's shape, student from the teacher's config
    teacher = load_teacher(cfg.teacher.path)
    size, ch, z_dim = generator_shape(teacher)
    dataset = _data(cfg, image_size=size, channels=ch)
    student, student_args = build_student(teacher, width=cfg.student.width, init=cfg.student.init, seed=cfg.train.seed)
    # 2. the method: a weighted mix of registered loss terms
    ctx = TermContext(student=student, teacher=teacher, teacher_path=cfg.teacher.path, image_size=size, channels=ch, z_dim=z_dim)
    method = GeneratorDistiller(student=student, teacher=teacher, terms=build_terms(cfg.methods, ctx), z_dim=z_dim)
    # 3. train, save the (EMA) student
    out, trained = _train(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    save_model(trained.student, out / "student", family=teacher.kdgen_meta["family"], args=student_args)
    # 4. measure teacher and student the same way
    metrics = {"train": _train_record(trained)}
    if cfg.eval.enabled:
        metrics.update(evaluate_pair(cfg, teacher=teacher, student=trained.student, out=out))
        log_final_metrics(out / "tb", cfg.to_dict(), metrics, trained.step)
    _write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, trained.student, trained.seconds)


def evaluate_pair(cfg: RunConfig, *, teacher: nn.Module, student: nn.Module, out: Path, save_features: Path | None = None) -> dict:
    """Teacher and student measured by the same code on the same seeds; writes samples/, returns the metrics.

    `save_features`: also write the real and generated feature matrices and the seeds to this .npz.
    """
    size, ch, z_dim = generator_shape(teacher)
    e = cfg.eval
    samplers = {"teacher": GeneratorSampler(teacher, z_dim=z_dim, batch_size=e.batch_size),
                "student": GeneratorSampler(student, z_dim=z_dim, batch_size=e.batch_size)}
    extractor, feat_info = load_feature_extractor(e.features, channels=ch)
    real, ref_name = reference_images(cfg, size, ch)
    metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
    files = {"teacher": resolve_path(cfg.teacher.path) / "model.safetensors", "student": out / "student" / "model.safetensors"}
    metrics: dict[str, Any] = {}
    feats: dict[str, dict] = {}
    for name, sampler in samplers.items():
        t0 = time.perf_counter()
        feats[name] = {}
        metrics[name] = {**evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=e.seeds, features=feats[name]),
                         **measure_cost(sampler, weights=files[name], repeats=e.latency_repeats)}
        metrics[name]["eval_seconds"] = round(time.perf_counter() - t0, 1)
    if save_features is not None:
        _save_features(save_features, metric.real_features, feats, e.seeds)
    metrics["student"]["fidelity"] = fidelity(samplers["student"], samplers["teacher"], extractor, n=min(e.num_samples, 500), seed=e.seeds[0])
    metrics["protocol"] = {
        "reference": ref_name, "reference_count": len(real), "generated_count": e.num_samples, "seeds": e.seeds,
        "feature_net": feat_info, "image_size": size, "channels": ch, "value_range": [-1, 1],
        "kid_subset_size": min(metric.kid_subset, len(real), e.num_samples), "prdc_k": e.k,
        "real_train_vs_reference": _floor(cfg, metric, size, ch, e.num_samples),
        "caveats": _caveats(cfg),
    }
    panels = {k: s.sample(64, e.seeds[0]) for k, s in samplers.items()}
    save_side_by_side(panels, out / "samples" / "teacher_vs_student.png")
    save_grid(panels["student"], out / "samples" / "student.png")
    return metrics


def _save_features(path: Path, real: torch.Tensor, feats: dict[str, dict], seeds: list[int]) -> None:
    """real [N, D], <who>_seed<s> [M, D] for each model and seed, and the seeds: recompute any score elsewhere."""
    import io

    import numpy as np

    arrays = {"real": real.numpy(), "seeds": np.asarray(seeds)}
    for who, by_seed in feats.items():
        for seed, f in by_seed.items():
            arrays[f"{who}_seed{seed}"] = f.numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def _floor(cfg: RunConfig, metric: QualityMetric, size: int, ch: int, n: int) -> dict | None:
    """FID/KID of real training images vs the reference: the best score this protocol allows."""
    if cfg.data.name.startswith("folder:"):
        return None  # a folder is both training data and reference: no independent real set
    train_real = stack_images(_data(cfg, image_size=size, channels=ch), n)
    floor = metric.score(train_real)
    return {"fid": floor["fid"], "kid": floor["kid"], "count": len(train_real)}


def _caveats(cfg: RunConfig) -> list[str]:
    notes = []
    perceptual = cfg.methods.get("perceptual")
    if perceptual is not None and resolve_path(perceptual.get("features", "builtin:featnet-mnist5k")) == resolve_path(cfg.eval.features):
        notes.append("the perceptual loss trained the student in the same feature space FID/KID are measured in")
    if cfg.data.name.startswith("folder:"):
        notes.append("folder data: the reference set is the training set (no held-out split)")
    return notes


def reference_images(cfg: RunConfig, size: int, ch: int) -> tuple[torch.Tensor, str]:
    """The held-out real images FID is measured against (a folder has no split: all of it)."""
    if cfg.data.name.startswith("folder:"):
        return stack_images(_data(cfg, image_size=size, channels=ch)), f"all of {cfg.data.name} (a folder has no held-out split)"
    return stack_images(_data(cfg, image_size=size, channels=ch, split="test")), f"{cfg.data.name} test split"


def evaluate(run: str | Path, overrides: list[str] | None = None, *, save_features: str | Path | None = None,
             data: str = "mnist5k", out: str | Path | None = None) -> Result:
    """Re-measure a distill run folder (its config.yaml, teacher and student) and rewrite its metrics.json;
    or measure one model folder (a generator or a classifier) on `data`, into `out`/metrics.json.

    `overrides` may change eval.* only (e.g. "eval.seeds=[0,1,2]", "eval.num_samples=5000").
    """
    bad = [o for o in overrides or [] if not o.startswith("eval.")]
    if bad:
        raise KdgenError(f"evaluate takes only eval.* overrides, got '{bad[0]}'; other settings belong to the run's training")
    path = resolve_path(run)
    if (path / "model.json").is_file():
        return evaluate_model(path, overrides, data=data, out=out or Path("runs") / f"eval-{path.name}")
    out = path
    if not (out / "config.yaml").is_file() or not (out / "student").is_dir():
        raise KdgenError(f"'{out}' is neither a finished kdgen run folder (config.yaml + student/) nor a model folder (model.json)")
    cfg = load_config(out / "config.yaml", overrides)
    teacher = load_teacher(cfg.teacher.path)
    student = load_model(out / "student")
    metrics = evaluate_pair(cfg, teacher=teacher, student=student, out=out,
                            save_features=Path(save_features) if save_features else None)
    previous = out / "metrics.json"
    if previous.is_file():  # keep what training recorded
        metrics = {"train": json.loads(previous.read_text()).get("train", {}), **metrics}
    _write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, student)


def evaluate_model(path: Path, overrides: list[str] | None, *, data: str, out: str | Path) -> Result:
    """One model measured alone: a generator's quality and cost, or a classifier's accuracy, macro-F1 and cost."""
    model = load_model(path)
    family = model.kdgen_meta["family"]
    cfg = load_config(None, [f"data.name={data}", f"teacher.path={path}", *(overrides or [])])
    out = Path(out).expanduser()
    e = cfg.eval
    weights = path / "model.safetensors"
    if family.endswith("generator"):
        size, ch, z_dim = generator_shape(model)
        extractor, feat_info = load_feature_extractor(e.features, channels=ch)
        real, ref_name = reference_images(cfg, size, ch)
        sampler = GeneratorSampler(model, z_dim=z_dim, batch_size=e.batch_size)
        metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
        block = {**evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=e.seeds),
                 **measure_cost(sampler, weights=weights, repeats=e.latency_repeats)}
        protocol = {"reference": ref_name, "reference_count": len(real), "generated_count": e.num_samples, "seeds": e.seeds,
                    "feature_net": feat_info, "prdc_k": e.k}
    elif family == "featnet":
        size = model.kdgen_meta.get("image_size") or (native_shape(data) or (28, 1))[0]
        test = load_dataset(data, split="test", image_size=size, channels=model.channels, root=cfg.data.root)
        block = {**classification_scores(predict(model, test.images), test.labels, model.kdgen_meta["args"].get("num_classes")),
                 **measure_cost(ClassifierProbe(model, test.images[:1]), weights=weights, repeats=e.latency_repeats)}
        protocol = {"reference": f"{data} test split", "reference_count": len(test)}
    else:
        raise KdgenError(f"'{path}' is a '{family}', which kdgen cannot evaluate alone; give a generator, a classifier or a run folder")
    metrics = {"model": {"path": str(path), "family": family, **block}, "protocol": protocol}
    out.mkdir(parents=True, exist_ok=True)
    _write_metrics(out, metrics)
    return Result(out, metrics, model)


class ClassifierProbe:
    """The cost face of a classifier: `module` and an example input of the data's shape."""

    steps = 1

    def __init__(self, module: nn.Module, example: torch.Tensor):
        self.module, self.example = module, example

    def example_input(self, batch: int) -> torch.Tensor:
        return self.example.expand(batch, *self.example.shape[1:]).contiguous()


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
    if cfg.model.family != "dcgan-generator":
        raise KdgenError(f"train-teacher builds GAN generators; model.family must be 'dcgan-generator', got '{cfg.model.family}'")
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
    dataset = _data(cfg, image_size=args["image_size"], channels=args["channels"])
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
