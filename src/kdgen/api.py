"""The Python API. The CLI only parses arguments and calls these."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig, load_run_config
from .data import native_shape, split_info
from .errors import KdgenError
from .evaluation import evaluate_classifier_pair, evaluate_model, evaluate_pair, image_pairs, run_dataset
from .faces import face_of
from .io import ensure_dir, resolve_path
from .methods import GeneratorDistiller, TermContext
from .methods.adversarial import AdversarialTerm
from .methods.supervised import SupervisedClassifier
from .models.classifier import CLASSIFIER_FAMILIES
from .models.img2img import IMAGE_TO_IMAGE_FAMILIES
from .models.loading import build_model, load_model, save_model
from .models.resolve import resolve_teacher
from .pipeline import distill, use_data
from .report import save_grid
from .report.compare import compare_runs
from .report.page import build_report
from .runs import Result, holding_run_lock, task_config, train_record, write_metrics
from .runs import train as train_run
from .utils import device_of

log = logging.getLogger("kdgen")

__all__ = ["Result", "compare", "distill", "evaluate", "report", "sample", "train_features", "train_teacher"]


EVAL_DATA_KEYS = ("data.on_corrupt=", "data.root=", "data.workers=")
MODEL_SPLIT_KEYS = ("data.test_fraction=", "data.split_seed=")  # one model measured on a folder: which held-out split


def evaluate(run: Any, overrides: list[str] | None = None, *, save_features: str | Path | None = None,
             data: Any = "mnist5k", out: str | Path | None = None, steps: int | None = None) -> Result:
    """Re-measure a distill run folder (its config.yaml, teacher and student) and rewrite its metrics.json;
    or measure one model (a folder, builtin:NAME, or an nn.Module / kdgen.Generator / kdgen.Classifier) on `data`
    (a dataset name or a torch Dataset), into `out`/metrics.json.

    `overrides` may change eval.* (e.g. "eval.seeds=[0,1,2]", "eval.num_samples=5000") and how the data is read
    (data.on_corrupt, data.root, data.workers), not what the model is.
    `steps`: a diffusion model's sampling steps (one model only; a run's are in its config and student).
    A run distilled on a Dataset handed in from Python needs `data=` that dataset again.
    """
    bad = [o for o in overrides or [] if not o.startswith(("eval.", *EVAL_DATA_KEYS, *MODEL_SPLIT_KEYS))]
    if bad:
        raise KdgenError(f"evaluate takes eval.* overrides and {', '.join(k.rstrip('=') for k in EVAL_DATA_KEYS)} (how the data is read, not "
                         f"what the model is), got '{bad[0]}'; other settings belong to the run's training")
    if save_features is not None and Path(save_features).expanduser().is_dir():
        raise KdgenError(f"--save-features '{save_features}' is a folder; give a file name such as features.npz")
    from .models.unet import is_diffusers_folder

    live = not isinstance(data, (str, Path))
    data_name = use_data(data)
    if isinstance(run, nn.Module):
        model = load_model(run)
        if save_features is not None:
            raise KdgenError("save_features applies to run folders (teacher and student); for one model, drop it")
        metrics = evaluate_model(model, overrides, data=data_name, steps=steps)
        out = ensure_dir(out or Path("runs") / f"eval-{type(model).__name__}")
        write_metrics(out, metrics)
        return Result(out, metrics, model)
    path = resolve_path(run)
    if (path / "model.json").is_file() or is_diffusers_folder(path):
        if save_features is not None:
            raise KdgenError("--save-features applies to run folders (teacher and student); for one model, drop it")
        metrics = evaluate_model(path, overrides, data=data_name, steps=steps)
        out = ensure_dir(out or Path("runs") / f"eval-{path.name}")
        write_metrics(out, metrics)
        return Result(out, metrics)
    split = [o for o in overrides or [] if o.startswith(MODEL_SPLIT_KEYS)]
    if split:
        raise KdgenError(f"'{split[0]}' would measure a run against another split than the one it was trained beside; a run folder "
                         "keeps its recorded split (data.test_fraction / data.split_seed apply to one model measured on a folder)")
    if out is not None or (data_name != "mnist5k" and not live) or steps is not None:
        raise KdgenError("--out, --data and --steps apply to one model; a run folder is measured on its own data and rewritten in place")
    out = path
    if not (out / "config.yaml").is_file() or not (out / "student").is_dir():
        raise KdgenError(f"'{out}' is neither a finished kdgen run folder (config.yaml + student/) nor a model folder (model.json)")
    cfg = load_run_config(out / "config.yaml", overrides)
    if live:
        cfg.data.name = data_name
    teacher = resolve_teacher(cfg.teacher, None)  # a folder, builtin:NAME or teacher.class, as the run recorded it
    student = load_model(out / "student")
    if face_of(teacher).kind == "classifier":
        if save_features is not None:
            raise KdgenError("--save-features applies to generator runs; a classifier run has no FID features - drop it")
        metrics = evaluate_classifier_pair(cfg, teacher=teacher, student=student, out=out)
    elif face_of(teacher).kind == "image-to-image":
        if save_features is not None:
            raise KdgenError("--save-features applies to generator runs; an image-to-image run is measured on its pairs - drop it")
        from .evaluation import evaluate_image_pair

        metrics = evaluate_image_pair(cfg, teacher=teacher, student=student, out=out)
    else:
        from .methods import measurement_caveats
        from .metrics.quality import feature_path

        space = feature_path(cfg.eval.features, data=cfg.data.name, channels=face_of(teacher).channels)
        metrics = evaluate_pair(cfg, teacher=teacher, student=student, out=out, caveats=measurement_caveats(cfg.methods, space),
                                save_features=Path(save_features) if save_features else None)
    previous = out / "metrics.json"
    if previous.is_file():  # keep what training recorded
        metrics = {"train": json.loads(previous.read_text()).get("train", {}), **metrics}
    write_metrics(out, metrics)
    build_report(out)
    return Result(out, metrics, student)


def sample(model: Any = None, *, n: int = 64, steps: int | None = None, seed: int = 0, out: str | Path = "samples.png",
           onnx: str | Path | None = None) -> Path:
    """Sample `n` images of a generator or diffusion model (a folder, a run's student, builtin:NAME, or a module /
    kdgen.Generator) into a PNG grid;
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
        kind = face_of(m).kind
        if kind not in ("generator", "diffusion"):
            raise KdgenError(f"'{model if isinstance(model, (str, Path)) else type(m).__name__}' is a {kind} model, which makes no images from noise; "
                             "give a generator or diffusion model")
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


def compare(runs: list[str | Path], out: str | Path, *, separate: bool = False) -> dict:
    """One table (markdown + CSV) of every run's teacher and student, and a Pareto plot, into `out`; runs measured in
    different feature spaces or against different references are refused, or with `separate`, kept in a table each."""
    return compare_runs([Path(r).expanduser() for r in runs], Path(out).expanduser(), separate=separate)


# --------------------------------------------------------------------------- train-teacher / train-features


def _labelled(cfg: RunConfig, dataset, what: str) -> None:
    if getattr(dataset, "labels", None) is None:
        how = " - put the images in one sub-folder per class" if cfg.data.name.startswith("folder:") else ""
        raise KdgenError(f"{what} needs labelled images and '{cfg.data.name}' has none{how}; or use mnist5k, digits, emoji, mnist, "
                         "fashion-mnist or cifar10")


def _split(cfg: RunConfig) -> dict:
    """{"split": the held-out split the model was trained beside} for a folder, so a later measurement can check it."""
    info = split_info(cfg.data)
    return {"split": info} if info else {}


def images_sha256(dataset) -> str:
    """sha256 of a dataset's images as 8-bit pixels, in order: what a feature net records it was trained on."""
    import hashlib

    h = hashlib.sha256()
    for i in range(len(dataset)):  # one image at a time: a large folder never sits in memory whole
        x = dataset[i]["image"]
        h.update(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_shape(cfg: RunConfig, given: dict[str, Any] | None = None, names: dict[str, str] | None = None) -> tuple[int, int]:
    """(image_size, channels) a new model is built for: data.image_size / data.channels, else the data's own (a folder's most
    common shorter side; greyscale only when every image is). `given`: what the recipe's model args say, which must agree
    (`names`: the recipe keys they came from, default model.args.image_size / model.args.channels)."""
    d = cfg.data
    if d.name.startswith("python:"):
        from .data.user import live_dataset

        c, h, _ = live_dataset(d.name).image_shape
        native = (h, c)
    else:
        native = native_shape(d.name, d.root, d.on_corrupt)
    size, ch = d.image_size or native[0], d.channels or native[1]
    for key, want, got in (("image_size", size, (given or {}).get("image_size")), ("channels", ch, (given or {}).get("channels"))):
        if got is not None and got != want:
            told = f"data.{key}={want}" if getattr(d, key) is not None else f"the '{d.name}' images have {key} {want}"
            name = (names or {}).get(key, f"model.args.{key}")
            raise KdgenError(f"{name}={got} but {told}; a new model's shape is the data's, set by data.{key} for every family - "
                             f"remove {name}, or set data.{key}={got} to read the data at that {key.replace('_', ' ')}")
    return size, ch


@holding_run_lock
def train_teacher(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False) -> Result:
    """Train a GAN teacher from scratch (hinge loss), saved to OUT/teacher with its discriminator beside it."""
    cfg = task_config(config, overrides, "train-teacher")
    if cfg.data.task is not None and cfg.model.family not in IMAGE_TO_IMAGE_FAMILIES:
        raise KdgenError(f"data.task makes (input, target) pairs for an image-to-image model; a '{cfg.model.family}' teacher does not "
                         f"take them - remove data.task, or set model.family to {' or '.join(IMAGE_TO_IMAGE_FAMILIES)}")
    if cfg.eval.lpips is not None and cfg.model.family not in IMAGE_TO_IMAGE_FAMILIES:
        raise KdgenError(f"eval.lpips measures image-to-image outputs; a '{cfg.model.family}' teacher makes none - remove eval.lpips")
    if cfg.model.family == "diffusion":
        return _train_diffusion_teacher(cfg, resume)
    if cfg.model.family in CLASSIFIER_FAMILIES:
        return _train_classifier_teacher(cfg, resume)
    if cfg.model.family in IMAGE_TO_IMAGE_FAMILIES:
        return _train_image_teacher(cfg, resume)
    if cfg.model.family != "dcgan-generator":
        raise KdgenError(f"train-teacher builds GAN generators, image-to-image networks, diffusion models or classifiers; model.family "
                         f"must be 'dcgan-generator', {', '.join(map(repr, IMAGE_TO_IMAGE_FAMILIES))}, 'diffusion' or one of "
                         f"{', '.join(CLASSIFIER_FAMILIES)}, got '{cfg.model.family}'")
    size, ch = data_shape(cfg, cfg.model.args)
    args = {"z_dim": 100, "base_width": 64, "width": 1.0, **cfg.model.args, "image_size": size, "channels": ch}
    # 1. generator and a matching discriminator, trained by the adversarial term alone
    torch.manual_seed(cfg.train.seed)
    generator = build_model("dcgan-generator", args)
    d_args = {k: args[k] for k in ("image_size", "channels", "base_width", "width")}
    discriminator = build_model("dcgan-discriminator", d_args)
    adv = AdversarialTerm(AdversarialTerm.Options(weight=1.0, init="random"), TermContext(student=generator, teacher=None),
                          discriminator=discriminator)
    method = GeneratorDistiller(student=generator, teacher=None, terms={"adversarial": adv}, z_shape=(args["z_dim"],))
    # 2. data, train, save
    dataset = run_dataset(cfg, image_size=args["image_size"], channels=args["channels"])
    out, trained = train_run(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    folder = save_model(trained.student, out / "teacher", family="dcgan-generator", args=args,
                        extra={"trained_on": cfg.data.name, "steps": trained.step, "train_seconds": round(trained.total_seconds, 1), **_split(cfg)})
    save_model(discriminator, folder / "discriminator", family="dcgan-discriminator", args=d_args)
    save_grid(method.preview(16, module=trained.student), out / "samples" / "teacher.png", nrow=4)
    metrics = {"train": train_record(trained)}
    write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.total_seconds)


PIX2PIX_KEYS = {"l1_weight", "adversarial_weight", "discriminator"}  # model.args of the training, not of the network


def _train_image_teacher(cfg: RunConfig, resume: bool) -> Result:
    """An image-to-image teacher (pix2pix U-Net or ResNet generator) trained on data.task's pairs by L1 + a conditional PatchGAN;
    saved to OUT/teacher (its discriminator beside it) and measured by PSNR / SSIM on the held-out pairs."""
    from .data.paired import task_channels
    from .methods.img2img import Pix2PixTraining
    from .metrics.restoration import Lpips, outputs, psnr_ssim, shown_as

    task = cfg.data.task
    if task is None or task == "none":
        raise KdgenError("an image-to-image teacher learns a task from pairs; set data.task to sr4, denoise or colorize")
    lpips = Lpips(cfg.eval.lpips, batch_size=cfg.eval.batch_size) if cfg.eval.lpips else None  # a bad file: a sentence before training
    train_args = {k: v for k, v in cfg.model.args.items() if k in PIX2PIX_KEYS}
    net_args = {k: v for k, v in cfg.model.args.items() if k not in PIX2PIX_KEYS}
    size, ch = data_shape(cfg, {"image_size": net_args.get("image_size")})
    c_in, c_out = task_channels(task, ch)
    for key, want in (("in_channels", c_in), ("out_channels", c_out)):
        if net_args.get(key, want) != want:
            raise KdgenError(f"model.args.{key}={net_args[key]} but data.task={task} on {ch}-channel images needs {want}; remove it")
    args = {**net_args, "in_channels": c_in, "out_channels": c_out, "image_size": size}
    torch.manual_seed(cfg.train.seed)
    generator = build_model(cfg.model.family, args)
    d_args = {"base_width": 64, "n_layers": 2, **dict(train_args.get("discriminator") or {}), "in_channels": c_in + c_out}
    discriminator = build_model("patchgan-discriminator", d_args)
    from .evaluation import held_out

    train = image_pairs(cfg, image_size=size, channels=ch, split="train", training=True)
    split = held_out(cfg)
    test = image_pairs(cfg, image_size=size, channels=ch, split="test" if split else "train", fixed=True)
    shown = [test[i] for i in range(min(8, len(test)))]
    method = Pix2PixTraining(generator, discriminator, l1_weight=train_args.get("l1_weight", 100.0),
                             adversarial_weight=train_args.get("adversarial_weight", 1.0),
                             preview_pairs={k: torch.stack([s[k] for s in shown]) for k in ("input", "image")},
                             degradation=train.degradation)
    out, trained = train_run(method, train, cfg, resume)
    if not trained.is_main:
        return Result(out)
    record = test.record()
    folder = save_model(trained.student, out / "teacher", family=cfg.model.family, args=args,
                        extra={"trained_on": cfg.data.name, "task": record, "steps": trained.step,
                               "train_seconds": round(trained.total_seconds, 1), **_split(cfg)})
    if method.adversarial_weight > 0:  # a discriminator that never trained does not ship beside the teacher
        save_model(discriminator, folder / "discriminator", family="patchgan-discriminator", args=d_args)
    x, y_hat, y = outputs(trained.student, test, batch_size=cfg.eval.batch_size)
    save_grid(method.preview(24, module=trained.student), out / "samples" / "teacher.png", nrow=3)
    metrics = {"train": {**train_record(trained), "task": train.record()},  # the pairs it trained on (data.train_images of them)
               "teacher": {**psnr_ssim(y_hat, y), "params": sum(p.numel() for p in generator.parameters())},
               "input": psnr_ssim(shown_as(x, y), y),
               "protocol": {"kind": "image-to-image", **record, "reference": f"{cfg.data.name} {'held-out split' if split else '(the training set)'}",
                            "reference_count": len(test), "lpips": lpips.record(int(y.shape[-1])) if lpips else None}}
    if lpips:
        metrics["teacher"]["lpips"], metrics["input"]["lpips"] = lpips(y_hat, y), lpips(shown_as(x, y), y)
    write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.total_seconds)


DIFFUSION_TEACHER_KEYS = {"unet", "scheduler", "steps", "num_classes", "label_dropout", "guidance_scale"}


def _train_diffusion_teacher(cfg: RunConfig, resume: bool) -> Result:
    """A DDPM teacher: diffusers UNet2DModel + noise schedule, trained by the denoising loss; saved as a diffusers folder."""
    from .methods.denoise import DenoisingTraining
    from .models.unet import DiffusionModel, build_unet, save_diffusion

    a = dict(cfg.model.args)
    unknown = sorted(set(a) - DIFFUSION_TEACHER_KEYS)
    if unknown:
        raise KdgenError(f"unknown model.args key '{unknown[0]}' for a diffusion teacher; valid keys are: {', '.join(sorted(DIFFUSION_TEACHER_KEYS))}")
    u = dict(a.get("unet") or {})
    size, ch = data_shape(cfg, {"image_size": u.get("sample_size"), "channels": u.get("in_channels")},
                          {"image_size": "model.args.unet.sample_size", "channels": "model.args.unet.in_channels"})
    if u.get("out_channels", ch) != ch:
        raise KdgenError(f"model.args.unet.out_channels={u['out_channels']} but the images have {ch} channel(s); remove it")
    unet_args = {**u, "sample_size": size, "in_channels": ch, "out_channels": ch}
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
    out, trained = train_run(method, dataset, cfg, resume)
    if not trained.is_main:
        return Result(out)
    save_diffusion(trained.student, out / "teacher",
                   extra={"trained_on": cfg.data.name, "train_steps": trained.step, "train_seconds": round(trained.total_seconds, 1),
                          **_split(cfg)})
    save_grid(method.preview(64, module=trained.student), out / "samples" / "teacher.png")
    metrics = {"train": train_record(trained)}
    write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.total_seconds)


def _train_classifier_teacher(cfg: RunConfig, resume: bool) -> Result:
    """A classifier trained alone (cross-entropy, data.shift augmentation), saved to OUT/teacher and measured on the test split."""
    from .evaluation import measure_classifier

    name = cfg.data.name
    size, ch = data_shape(cfg, cfg.model.args)
    train = run_dataset(cfg, image_size=size, channels=ch)
    _labelled(cfg, train, "a classifier teacher")
    test = run_dataset(cfg, image_size=size, channels=ch, split="test")
    k = int(train.labels.max()) + 1
    args = {**cfg.model.args, "channels": ch, "num_classes": cfg.model.args.get("num_classes", k)}
    if cfg.model.family != "featnet":
        args["image_size"] = size
    torch.manual_seed(cfg.train.seed)
    net = build_model(cfg.model.family, args)
    out, trained = train_run(SupervisedClassifier(net, shift=cfg.data.shift), train, cfg, resume)
    if not trained.is_main:
        return Result(out)
    folder = save_model(trained.student, out / "teacher", family=cfg.model.family, args=args,
                        extra={"trained_on": name, "image_size": size, "steps": trained.step, "train_seconds": round(trained.total_seconds, 1),
                               **_split(cfg)})
    block, _ = measure_classifier(trained.student, test, weights=folder / "model.safetensors", num_classes=args["num_classes"],
                                  repeats=cfg.eval.latency_repeats)
    metrics = {"train": train_record(trained), "teacher": block,
               "protocol": {"kind": "classifier", "reference": f"{name} test split", "reference_count": len(test)}}
    write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.total_seconds)


@holding_run_lock
def train_features(config: Any = None, overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False) -> Result:
    """Train a feature network on the data: a classifier on labelled images (its test accuracy reported), or SimCLR on
    unlabelled ones (model.objective; its held-out pair accuracy, and k-NN accuracy where labels exist, reported)."""
    from .data import stack_images
    from .methods.contrastive import ContrastiveFeatures, check_options
    from .metrics.classify import knn_accuracy

    cfg = task_config(config, overrides, "train-features")
    if cfg.model.family != "featnet":
        raise KdgenError(f"train-features builds feature nets; model.family must be 'featnet', got '{cfg.model.family}'")
    name = cfg.data.name
    size, ch = data_shape(cfg, cfg.model.args)
    train = run_dataset(cfg, image_size=size, channels=ch)
    test = run_dataset(cfg, image_size=size, channels=ch, split="test")
    labels = getattr(train, "labels", None)
    objective = cfg.model.objective if cfg.model.objective != "auto" else ("classifier" if labels is not None else "simclr")
    torch.manual_seed(cfg.train.seed)
    if objective == "classifier":
        _labelled(cfg, train, "train-features with model.objective=classifier (model.objective=simclr needs no labels)")
        args = {**cfg.model.args, "channels": ch, "num_classes": int(labels.max()) + 1}
        method = SupervisedClassifier(build_model("featnet", args), shift=cfg.data.shift)
    else:
        check_options(cfg.model.simclr)  # before anything is built
        args = {"num_classes": 64, "dropout": 0.0, **cfg.model.args, "channels": ch}  # num_classes: the projection's width
        method = ContrastiveFeatures(build_model("featnet", args), cfg.model.simclr)
    out, trained = train_run(method, train, cfg, resume)
    if not trained.is_main:
        return Result(out)
    net = trained.student.eval()
    scores: dict[str, float] = {}
    test_images = stack_images(test)
    if objective == "classifier":
        scores["test_accuracy"] = classifier_accuracy(net, test_images, test.labels)
    else:
        scores["test_pair_accuracy"] = method.pair_accuracy(test_images[:512], net)
        if labels is not None and getattr(test, "labels", None) is not None:  # at most 10,000 training images as neighbours
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:10000]
            scores["knn_accuracy"] = knn_accuracy(lambda x: net.features(x.to(device_of(net))), torch.stack([train[int(i)]["image"] for i in pick]), labels[pick],
                                                  test_images, test.labels)
    save_model(net, out / "featnet", family="featnet", args=args,
               extra={"trained_on": name, "image_size": size, "channels": ch, "data_sha256": images_sha256(train), "objective": objective,
                      **scores, **_split(cfg)})
    metrics = {"train": train_record(trained), "objective": objective, **scores}
    write_metrics(out, metrics)
    return Result(out, metrics, trained.student, trained.total_seconds)


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    device = next(model.parameters()).device
    pred = torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(500)])
    return float((pred == labels).float().mean())
