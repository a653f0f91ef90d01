"""Measuring models: teacher and student of a run side by side, or one model alone.

Called by the API (kdgen.distill, kdgen.evaluate); everything here reads a RunConfig's data and eval
sections and returns plain dicts that become metrics.json.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RunConfig, load_config
from .data import data_split, has_test_split, native_shape, split_info, stack_images
from .errors import KdgenError
from .faces import face_of
from .io import atomic_write_bytes
from .metrics import QualityMetric, evaluate_quality, feature_space, fidelity, measure_cost
from .metrics.classify import classification_scores, predict
from .metrics.quality import same_dataset
from .models.loading import load_model
from .report import save_grid, save_side_by_side
from .sampling import GeneratorSampler, make_sampler


def run_dataset(cfg: RunConfig, *, image_size: int, channels: int, split: str = "train") -> torch.utils.data.Dataset:
    """The run's dataset at the model's size; an explicit data size that disagrees is an error."""
    for key, want, got in (("image_size", image_size, cfg.data.image_size), ("channels", channels, cfg.data.channels)):
        if got is not None and got != want:
            raise KdgenError(
                f"data.{key}={got} does not match the model's {key} {want}; remove data.{key} or use a model made for {got}"
            )
    return data_split(cfg.data, split, image_size=image_size, channels=channels)


def image_pairs(cfg: RunConfig, *, image_size: int, channels: int, split: str, fixed: bool | None = None,
                training: bool = False) -> torch.utils.data.Dataset:
    """The run's images as (degraded input, clean image) pairs of data.task. Held-out pairs (and any with `fixed`) carry
    their input, drawn from (data.split_seed, index); training items carry the clean image, degraded in the training step.
    `training`: the pairs a model trains on, data.train_images of them when that is set."""
    from .data.paired import PairedTask

    images = run_dataset(cfg, image_size=image_size, channels=channels, split=split)
    n = cfg.data.train_images
    if training and n is not None:  # a seeded subset: the same images for every run of that seed
        if n > len(images):
            raise KdgenError(f"data.train_images={n} but the training split has {len(images)} images; use at most {len(images)} or remove it")
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.data.split_seed))[:n].sort().values
        images = torch.utils.data.Subset(images, keep.tolist())
    return PairedTask(images, cfg.data.task, noise_sigma=cfg.data.noise_sigma, seed=cfg.data.split_seed,
                      fixed=split != "train" if fixed is None else fixed)


def held_out(cfg: RunConfig) -> bool:
    """Whether the run's data has a held-out split (named datasets; folders unless data.test_fraction=0)."""
    return has_test_split(cfg.data.name, cfg.data.test_fraction)


def run_features(cfg: RunConfig, channels: int) -> tuple[nn.Module, dict]:
    """The run's FID feature space (eval.features, checked against the data it measures)."""
    return feature_space(cfg.eval.features, data=cfg.data.name, channels=channels, allow_mismatch=cfg.eval.allow_feature_mismatch)


def generator_shape(model: nn.Module) -> tuple[int, int, tuple[int, ...] | None]:
    """(image_size, channels, z_shape) from a generator's or diffusion model's face (z_shape None for diffusion)."""
    face = face_of(model)
    return face.image_size, face.channels, face.z_shape


def measure_samplers(cfg: RunConfig, samplers: dict[str, GeneratorSampler], weights: dict[str, Path], *, size: int, ch: int,
                     features: dict[str, dict] | None = None) -> tuple[dict[str, Any], QualityMetric]:
    """Every sampler's quality (all seeds) and cost, against one reference set, plus the protocol that says how."""
    e = cfg.eval
    extractor, feat_info = run_features(cfg, ch)
    real, ref_name = reference_images(cfg, size, ch)
    metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
    metrics: dict[str, Any] = {}
    for name, sampler in samplers.items():
        t0 = time.perf_counter()
        feats = features.setdefault(name, {}) if features is not None else None
        metrics[name] = {**evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=e.seeds, features=feats),
                         **measure_cost(sampler, weights=weights[name], repeats=e.latency_repeats)}
        if hasattr(sampler, "sampling_steps"):  # diffusion: steps, and network calls per image (x2 with guidance)
            metrics[name]["sampling_steps"], metrics[name]["network_evals"] = sampler.sampling_steps, sampler.steps
        metrics[name]["eval_seconds"] = round(time.perf_counter() - t0, 1)
    metrics["protocol"] = {
        "reference": ref_name, "reference_count": len(real), "generated_count": e.num_samples, "seeds": e.seeds,
        "feature_net": feat_info, "image_size": size, "channels": ch, "value_range": [-1, 1],
        "kid_subset_size": min(metric.kid_subset, len(real), e.num_samples), "prdc_k": e.k,
    }
    if split_info(cfg.data) is not None:
        metrics["protocol"]["split"] = split_info(cfg.data)
    return metrics, metric


def evaluate_pair(cfg: RunConfig, *, teacher: nn.Module, student: nn.Module, out: Path, save_features: Path | None = None,
                  caveats: list[str] | None = None) -> dict:
    """Teacher and student measured by the same code on the same seeds; writes samples/, returns the metrics.

    `save_features`: also write the real and generated feature matrices and the seeds to this .npz.
    `caveats`: what the methods say about this protocol (e.g. a perceptual loss trained in the FID space).
    """
    size, ch, _ = generator_shape(teacher)
    e = cfg.eval
    samplers = {"teacher": make_sampler(teacher, batch_size=e.batch_size, steps=cfg.teacher.steps),
                "student": make_sampler(student, batch_size=e.batch_size)}
    weights = {"teacher": model_weights(teacher), "student": weights_file(out / "student")}
    feats: dict[str, dict] = {}
    metrics, metric = measure_samplers(cfg, samplers, weights, size=size, ch=ch, features=feats)
    if save_features is not None:
        _save_features(save_features, metric.real_features, feats, e.seeds)
    metrics["student"]["fidelity"] = fidelity(samplers["student"], samplers["teacher"], metric.extractor,
                                              n=min(e.num_samples, 500), seed=e.seeds[0], batch_size=e.batch_size)
    metrics["protocol"]["real_train_vs_reference"] = _floor(cfg, metric, size, ch, e.num_samples)
    metrics["protocol"]["caveats"] = _caveats(cfg, teacher, caveats or [], metrics["protocol"]["feature_net"])
    panels = {k: s.sample(64, e.seeds[0]) for k, s in samplers.items()}
    save_side_by_side(panels, out / "samples" / "teacher_vs_student.png")
    save_grid(panels["student"], out / "samples" / "student.png")
    return metrics


def classifier_shape(model: nn.Module, data: str | None = None, on_corrupt: str = "error") -> tuple[int, int]:
    """(image_size, channels) of a classifier from its face, else the data's native shape."""
    face = face_of(model)
    if face.image_shape is not None:
        return face.image_size, face.channels
    native = native_shape(data or "", on_corrupt=on_corrupt) if not (data or "").startswith("python:") else None
    if data and data.startswith("python:"):
        from .data.user import live_dataset

        c, h, _ = live_dataset(data).image_shape
        native = (h, c)
    if native is None:
        raise KdgenError(f"this {type(model).__name__} states no input shape and no dataset gives one; give "
                         "kdgen.Classifier(module, input_shape=(C, H, W))")
    return int(getattr(model, "image_size", native[0])), int(getattr(model, "channels", native[1]))


def measure_classifier(model: nn.Module, test, *, weights: Path | None, num_classes: int, repeats: int) -> tuple[dict, torch.Tensor]:
    """Accuracy, macro-F1, per-class accuracy, confusion and errors on `test`, plus params, MACs and latency; and the predictions."""
    pred = predict(model, test.images)
    block = {**classification_scores(pred, test.labels, num_classes),
             **measure_cost(ClassifierProbe(model, test.images[:1]), weights=weights, repeats=repeats)}
    return block, pred


def evaluate_classifier_pair(cfg: RunConfig, *, teacher: nn.Module, student: nn.Module, out: Path) -> dict:
    """Teacher and student classifiers on the same test split: scores, cost, and how often their arg-max agrees;
    writes RUN/plots/confusion.png (teacher | student)."""
    size, ch = classifier_shape(teacher, cfg.data.name, cfg.data.on_corrupt)
    split = held_out(cfg)
    test = run_dataset(cfg, image_size=size, channels=ch, split="test" if split else "train")
    if getattr(test, "labels", None) is None:
        raise KdgenError(f"a classifier is measured on labelled images and '{cfg.data.name}' has no labels; set eval.enabled=false, "
                         "or put the images in one sub-folder per class")
    k = int(face_of(teacher).num_classes or int(test.labels.max()) + 1)
    reps = cfg.eval.latency_repeats
    metrics: dict[str, Any] = {}
    metrics["teacher"], t_pred = measure_classifier(teacher, test, weights=model_weights(teacher), num_classes=k, repeats=reps)
    metrics["student"], s_pred = measure_classifier(student, test, weights=weights_file(out / "student"), num_classes=k, repeats=reps)
    metrics["student"]["agreement"] = float((s_pred == t_pred).float().mean())
    caveats = [f"{len(test)} test images: one error is {100 / len(test):.2f} points of accuracy"]
    if not split:
        caveats.append(f"{cfg.data.name} has no held-out split: accuracy is measured on the training images")
    metrics["protocol"] = {"kind": "classifier", "reference": f"{cfg.data.name} {'test split' if split else '(the training set)'}",
                           "reference_count": len(test), "image_size": size, "channels": ch, "num_classes": k, "caveats": caveats}
    if split_info(cfg.data) is not None:
        metrics["protocol"]["split"] = split_info(cfg.data)
    from .report.plots import confusion

    confusion({"teacher": metrics["teacher"]["confusion"], "student": metrics["student"]["confusion"]}, out / "plots" / "confusion.png")
    return metrics


def model_weights(model: nn.Module) -> Path | None:
    """The file a loaded model's weights came from (its folder's, or the weights file a recipe named), if any."""
    if getattr(model, "kdgen_path", None) is not None:
        return weights_file(model.kdgen_path)
    return getattr(model, "kdgen_weights", None)


def weights_file(folder: Path) -> Path:
    """The weights file of a kdgen model folder or a diffusers folder (flat or pipeline)."""
    for rel in ("model.safetensors", "diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        if (Path(folder) / rel).is_file():
            return Path(folder) / rel
    return Path(folder) / "model.safetensors"


def _save_features(path: Path, real: torch.Tensor, feats: dict[str, dict], seeds: list[int]) -> None:
    """real [N, D], <who>_seed<s> [M, D] for each model and seed, and the seeds: recompute any score elsewhere."""
    arrays = {"real": real.numpy(), "seeds": np.asarray(seeds)}
    for who, by_seed in feats.items():
        for seed, f in by_seed.items():
            arrays[f"{who}_seed{seed}"] = f.numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def _floor(cfg: RunConfig, metric: QualityMetric, size: int, ch: int, n: int) -> dict | None:
    """FID/KID of real training images vs the reference: the best score this protocol allows."""
    if not held_out(cfg) or cfg.eval.reference == "train":
        return None  # a folder is both training data and reference: no independent real set
    train_real = stack_images(run_dataset(cfg, image_size=size, channels=ch), n)
    floor = metric.score(train_real)
    return {"fid": floor["fid"], "kid": floor["kid"], "count": len(train_real)}


def _caveats(cfg: RunConfig, teacher: nn.Module | None, extra: list[str], feature_net: dict) -> list[str]:
    notes = list(extra)
    if not held_out(cfg):
        notes.append(f"{cfg.data.name.split(':')[0]} data: the reference set is the training set (no held-out split)")
    elif cfg.eval.reference == "train":
        notes.append("eval.reference=train: FID compares with the training images, so a model that memorised them scores best")
    if feature_net.get("caveat"):
        notes.append(feature_net["caveat"])
    meta = (getattr(teacher, "kdgen_meta", None) or {}) if teacher is not None else {}
    trained, now = meta.get("split"), split_info(cfg.data)
    same_data = str(meta.get("trained_on", "")).startswith("folder:") and same_dataset(meta["trained_on"], cfg.data.name)
    if trained and same_data and (now or {}).get("test_files_sha256") != trained.get("test_files_sha256"):
        notes.append("the teacher was trained beside another held-out split of this folder (seed, fraction or files differ), so "
                     "some reference images may be ones it trained on")
    if teacher is not None and face_of(teacher).kind == "diffusion":
        notes.append("diffusion: teacher and student start from the same noise; their MACs count every network call of sampling")
    return notes


def reference_images(cfg: RunConfig, size: int, ch: int) -> tuple[torch.Tensor, str]:
    """The real images FID is measured against: the held-out split; the training images with eval.reference=train, or where
    the data has no split (a Dataset handed in, data.test_fraction=0)."""
    if not held_out(cfg):
        return stack_images(run_dataset(cfg, image_size=size, channels=ch)), f"all of {cfg.data.name} (no held-out split)"
    if cfg.eval.reference == "train":
        return stack_images(run_dataset(cfg, image_size=size, channels=ch), cfg.eval.num_samples), f"{cfg.data.name} training images"
    return stack_images(run_dataset(cfg, image_size=size, channels=ch, split="test")), f"{cfg.data.name} test split"


def evaluate_model(path: Path | nn.Module, overrides: list[str] | None, *, data: str, steps: int | None = None) -> dict:
    """One model measured alone: a generator's quality and cost, or a classifier's accuracy, macro-F1 and cost."""
    model = load_model(path)
    kind = face_of(model).kind
    cfg = load_config(None, [*(overrides or [])])
    cfg.data.name = data
    e = cfg.eval
    weights = weights_file(path) if isinstance(path, Path) else None
    if steps is not None and kind != "diffusion":
        raise KdgenError(f"--steps applies to diffusion models; '{path}' is a {kind}, which makes an image in one call")
    if kind in ("generator", "diffusion"):
        size, ch, _ = generator_shape(model)
        sampler = make_sampler(model, batch_size=e.batch_size, steps=steps)
        measured, _ = measure_samplers(cfg, {"model": sampler}, {"model": weights}, size=size, ch=ch)
        block, protocol = measured["model"], measured["protocol"]
        protocol["caveats"] = _caveats(cfg, None, [], protocol["feature_net"])
    elif kind == "classifier":
        size, ch = classifier_shape(model, data, cfg.data.on_corrupt)
        split = held_out(cfg)
        test = run_dataset(cfg, image_size=size, channels=ch, split="test" if split else "train")
        if getattr(test, "labels", None) is None:
            how = " (a folder is labelled by one sub-folder per class)" if data.startswith("folder:") else ""
            raise KdgenError(f"a classifier is measured on labelled images and '{data}' has none; give labelled data{how}")
        k = face_of(model).num_classes or int(test.labels.max()) + 1
        block, _ = measure_classifier(model, test, weights=weights, num_classes=k, repeats=e.latency_repeats)
        protocol = {"reference": f"{data} {'test split' if split else '(the whole set: no held-out split)'}", "reference_count": len(test)}
        if split_info(cfg.data) is not None:
            protocol["split"] = split_info(cfg.data)
    else:
        raise KdgenError(f"'{path}' is a {kind} model, which kdgen cannot evaluate alone yet; give a generator, a classifier, or the run folder that made it")
    family = getattr(model, "kdgen_meta", {}).get("family") or type(model).__name__
    where = str(path) if isinstance(path, Path) else f"<{type(model).__name__} module>"
    metrics = {"model": {"path": where, "family": family, "face": face_of(model).kind, **block}, "protocol": protocol}
    return metrics


def evaluate_image_pair(cfg: RunConfig, *, teacher: nn.Module, student: nn.Module, out: Path, caveats: list[str] | None = None) -> dict:
    """Teacher and student image-to-image models on the same held-out pairs: PSNR / SSIM against the ground truth (and the
    student against the teacher), the degraded input's own as the floor, params / MACs / latency at the task's resolution;
    writes RUN/samples/teacher_vs_student.png, rows of input | teacher | student | ground truth."""
    from .metrics.restoration import outputs, psnr_ssim, shown_as

    face = face_of(teacher)
    split = held_out(cfg)
    test = image_pairs(cfg, image_size=face.image_size, channels=face.channels, split="test" if split else "train")
    x, t_out, y = outputs(teacher, test, batch_size=cfg.eval.batch_size)
    _, s_out, _ = outputs(student, test, batch_size=cfg.eval.batch_size)
    reps, example = cfg.eval.latency_repeats, x[:1]
    metrics: dict[str, Any] = {
        "teacher": {**psnr_ssim(t_out, y), **measure_cost(ClassifierProbe(teacher, example), weights=model_weights(teacher), repeats=reps)},
        "student": {**psnr_ssim(s_out, y), **measure_cost(ClassifierProbe(student, example), weights=weights_file(out / "student"), repeats=reps),
                    "vs_teacher": psnr_ssim(s_out, t_out)},
        "input": psnr_ssim(shown_as(x, y), y),
    }
    extractor, space = run_features(cfg, face.channels)  # FID / KID of the outputs against the ground truth, in the data's space
    metric = QualityMetric(extractor, y, batch_size=cfg.eval.batch_size, k=cfg.eval.k)
    for who, images in (("teacher", t_out), ("student", s_out)):
        q = metric.score(images)
        metrics[who].update({"fid": q["fid"], "kid": q["kid"], "precision": q["precision"], "recall": q["recall"]})
    lpips = None
    if cfg.eval.lpips:
        from .metrics.restoration import Lpips

        lpips = Lpips(cfg.eval.lpips, batch_size=cfg.eval.batch_size)
        metrics["teacher"]["lpips"], metrics["student"]["lpips"] = lpips(t_out, y), lpips(s_out, y)
        metrics["student"]["vs_teacher"]["lpips"] = lpips(s_out, t_out)
        metrics["input"]["lpips"] = lpips(shown_as(x, y), y)
    notes = list(caveats or [])
    notes.append(f"FID / KID of {len(y)} outputs against the {len(y)} ground-truth images of the same inputs: few images, so a "
                 "biased FID - compare teacher and student with each other, not with other papers")
    if not split:
        notes.append(f"{cfg.data.name} has no held-out split: PSNR / SSIM are measured on the training images")
    metrics["protocol"] = {"kind": "image-to-image", **test.record(), "reference": f"{cfg.data.name} {'held-out split' if split else '(the training set)'}",
                           "reference_count": len(test), "image_size": face.image_size, "channels": face.channels,
                           "in_channels": face.input_shape[0], "metrics": "PSNR (dB, data range 1) and SSIM (torchmetrics) in [0, 1]",
                           "feature_net": space, "lpips": lpips.record(face.image_size) if lpips else None,
                           "caveats": notes}
    if split_info(cfg.data) is not None:
        metrics["protocol"]["split"] = split_info(cfg.data)
    n = min(8, len(test))
    save_grid(torch.stack([shown_as(x[:n], y), t_out[:n], s_out[:n], y[:n]], 1).flatten(0, 1), out / "samples" / "teacher_vs_student.png", nrow=4)
    return metrics


class ClassifierProbe:
    """The cost face of a classifier (or an image-to-image model): `module` and an example input of the data's shape."""

    steps = 1

    def __init__(self, module: nn.Module, example: torch.Tensor):
        self.module, self.example = module, example

    def example_input(self, batch: int) -> torch.Tensor:
        return self.example.expand(batch, *self.example.shape[1:]).contiguous()
