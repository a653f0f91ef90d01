"""Every exported variant re-measured the way the run measured its student (FID/KID or accuracy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..faces import face_of
from .common import SAMPLES_FILE
from .graph import Graph
from .runtime import OrtSampler

log = logging.getLogger("kdgen")


def _run_config(run_dir: Path):
    from ..config import load_run_config

    return load_run_config(run_dir / "config.yaml")


def _run_split(run_dir: Path, graph: Graph, split: str):
    """The run's labelled dataset split at the classifier's shape."""
    from ..evaluation import run_dataset

    return run_dataset(_run_config(run_dir), image_size=graph.shape[1], channels=graph.shape[0], split=split)


def _image_pairs(run_dir: Path, graph: Graph, split: str):
    """The run's (input, ground truth) pairs of data.task at the image-to-image network's shape, inputs fixed by their seed."""
    from ..evaluation import image_pairs

    face = face_of(graph.model)
    return image_pairs(_run_config(run_dir), image_size=face.image_size, channels=face.channels, split=split, fixed=True)


def _mapped(v: Any, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """A variant's outputs for inputs x, in batches (a PyTorch module, or an OnnxStudent, which batches itself)."""
    if isinstance(v, nn.Module):
        with torch.no_grad():
            return torch.cat([v(chunk).float() for chunk in x.split(batch)])
    return torch.from_numpy(v.map(x.numpy()))


def variant_quality(run_dir: Path, graph: Graph, variants: dict[str, Any], *, seeds: list[int] | None = None) -> dict[str, dict]:
    """Every variant (name -> a PyTorch module or an OnnxStudent) measured the same way as the run measured its
    student: FID/KID/precision/recall on the run's eval seeds for samplers, accuracy/macro-F1/errors for classifiers."""
    cfg = _run_config(run_dir)
    if graph.kind == "image-to-image":  # PSNR / SSIM on the held-out pairs, as the run measured its student
        from ..evaluation import held_out
        from ..metrics.restoration import psnr_ssim

        test = _image_pairs(run_dir, graph, "test" if held_out(cfg) else "train")
        x, y = torch.stack([p["input"] for p in test]), torch.stack([p["image"] for p in test])
        out = {name: psnr_ssim(_mapped(v, x), y) for name, v in variants.items()}
        for q in out.values():
            q["psnr_drop_db"] = round(out["pytorch"]["psnr"] - q["psnr"], 3)
        return out
    if graph.kind == "classifier":
        from ..metrics.classify import classification_scores, predict

        test = _run_split(run_dir, graph, "test")
        out = {}
        for name, v in variants.items():
            pred = predict(v, test.images) if isinstance(v, nn.Module) else torch.from_numpy(v.logits(test.images.numpy()).argmax(1))
            s = classification_scores(pred, test.labels, face_of(graph.model).num_classes)
            out[name] = {k: s[k] for k in ("accuracy", "macro_f1", "errors") if k in s}
        return out
    from ..evaluation import generator_shape, reference_images, run_features
    from ..metrics import QualityMetric, evaluate_quality
    from ..sampling import make_sampler

    e = cfg.eval
    size, ch, _ = generator_shape(graph.model)
    torch_sampler = make_sampler(graph.model, batch_size=e.batch_size)
    extractor, _ = run_features(cfg, ch)
    real, _ = reference_images(cfg, size, ch)
    metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
    out = {}
    for name, v in variants.items():
        sampler = torch_sampler if isinstance(v, nn.Module) else OrtSampler(v, batch_size=torch_sampler.batch_size)
        q = evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=seeds or e.seeds)
        out[name] = {k: q[k] for k in ("fid", "fid_std", "kid", "precision", "recall") if k in q}
    return out


def _variant_grid(graph: Graph, variants: dict[str, Any], path: Path, n: int = 36) -> dict[str, Any]:
    """Side-by-side grids of every variant from the same noise (seed 0), left to right in `variants` order."""
    from ..report import save_side_by_side
    from ..sampling import make_sampler

    if graph.kind == "image-to-image":  # the same inputs through every variant
        x = graph.random_inputs(n, torch.Generator().manual_seed(0))[0]
        run_dir = getattr(graph.model, "kdgen_path", None)
        run_dir = Path(run_dir).parent if run_dir is not None else None
        if run_dir is not None and (run_dir / "config.yaml").is_file():
            pairs = _image_pairs(run_dir, graph, "train")
            x = torch.stack([pairs[i]["input"] for i in range(min(n, len(pairs)))])
        panels = {name: _mapped(v, x) for name, v in variants.items()}
        save_side_by_side(panels, path, nrow=6)
        return {"file": f"export/{SAMPLES_FILE}", "panels": list(panels), "n": len(x)}
    ref = make_sampler(graph.model, batch_size=n)
    panels = {name: (ref if isinstance(v, nn.Module) else OrtSampler(v, batch_size=ref.batch_size)).sample(n, 0) for name, v in variants.items()}
    save_side_by_side(panels, path, nrow=6)
    return {"file": f"export/{SAMPLES_FILE}", "panels": list(panels), "seed": 0, "n": n}
