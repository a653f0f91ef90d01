"""Ship the student: ONNX or TorchScript, each checked against PyTorch before it is kept; int8; latency.

`export(run, format=...)` writes into RUN/export/:
    student.onnx            one self-contained graph (dynamic batch), onnx.checker full check
    sampler.json            what the graph takes; a diffusion student's recorded steps and scheduler coefficients
    student.int8-dynamic.onnx, student.int8-static.onnx    with --quantize int8 (onnxruntime quantization)
    student.torchscript.pt  with --format torchscript (torch.jit.trace)
and records under metrics.json["export"] the parity (max abs / relative error on fresh random inputs at
several batch sizes), and with int8 the quality of every variant measured the same way (FID/KID or
accuracy). A file that fails parity is never moved into place: the error says so and the last good
export stays.

What the graph is:
    generator (GAN / VAE decoder)   z [B, *z_shape] -> image [B, C, H, W]
    diffusion student               sample [B, C, H, W], timestep [B] (int64)[, class_labels [B]] -> model_output
                                    (classifier-free guidance inside the graph); kdgen.onnx_sampler runs the steps
    classifier                      image [B, C, H, W] -> logits [B, K]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import KdgenError
from ..io import atomic_write_text, checksum_path, write_checksum
from ..onnx_sampler import SAMPLER_JSON, OnnxStudent
from ..runs import holding_run_lock, lock_run
from .common import (
    FORMATS,
    INT8_FILES,
    ONNX_FILE,
    PARITY_BATCHES,
    QUANTIZE,
    SAMPLES_FILE,
    TS_FILE,
    _need,
    _rebuild_report,
    _size,
    _student,
    _update_metrics,
)
from .graph import Graph, _check_parity, parity, student_kind
from .int8 import quantize_int8, quantized_ops
from .latency import bench_latency
from .quality import _variant_grid, variant_quality
from .runtime import OrtSampler, _export_torchscript, _ort_runner, export_onnx, opset_range, sampler_parity, sampler_spec

log = logging.getLogger("kdgen")


@contextlib.contextmanager
def _staging(folder: Path):
    """RUN/export/.staging: every file of an export is built and checked there and moved into RUN/export only when
    all checks passed; on any failure the folder goes and RUN/export (and metrics.json) stay as they were."""
    stage = folder / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(stage: Path, folder: Path, *, stale: tuple[str, ...] = ()) -> None:
    """Move every staged file into place, each graph with its sha256 beside it; remove `stale` files that described an
    earlier export."""
    for name in stale:
        (folder / name).unlink(missing_ok=True)
        checksum_path(folder / name).unlink(missing_ok=True)
    for path in sorted(stage.iterdir()):
        if path.suffix in (".onnx", ".pt", ".data"):
            write_checksum(path)
            checksum_path(folder / path.name).unlink(missing_ok=True)  # no stale sha256 beside a new graph, even for a moment
    staged = sorted(stage.iterdir(), key=lambda p: (p.name.endswith(".sha256"), p.name))  # every sha256 after its file
    for path in staged:
        os.replace(path, folder / path.name)


@holding_run_lock
def export(run: str | Path | nn.Module, *, format: str = "onnx", quantize: str | None = None, opset: int | None = None,
           calibration: int = 256, measure_quality: bool = True, steps: int | None = None,
           seeds: list[int] | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Export RUN/student into RUN/export/ as `format` ("onnx" or "torchscript"), prove parity with PyTorch, optionally
    quantize to int8 (onnx only) and re-measure quality; records everything in metrics.json["export"]; returns that block.

    `run` may also be a module (or kdgen.Generator / kdgen.Classifier): it is saved as OUT/student and exported into
    OUT/export/ (`out` required); with no run config there, quality is not re-measured.
    `steps`: a diffusion student's sampling steps for the ONNX sampler (default: the ones it records).
    `seeds`: the evaluation seeds of the quality re-measure (default: the run's eval.seeds)."""
    if isinstance(run, nn.Module):
        if out is None:
            raise KdgenError("exporting a module needs out=FOLDER, where it is saved as FOLDER/student and exported to FOLDER/export")
        from ..models.resolve import load_any, save_any

        save_any(load_any(run), Path(out).expanduser() / "student")
        run = Path(out).expanduser()
    elif out is not None:
        raise KdgenError("out= applies to exporting a module; a run folder is exported into RUN/export")
    if format not in FORMATS:
        raise KdgenError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise KdgenError(f"unknown --quantize '{quantize}'; kdgen quantizes to {', '.join(QUANTIZE)}")
    if format != "onnx" and (quantize or opset is not None):
        raise KdgenError(f"--{'quantize' if quantize else 'opset'} applies to ONNX (onnxruntime); drop it or use --format onnx")
    if quantize and calibration < 1:
        raise KdgenError(f"--calibration must be at least 1 input, got {calibration}")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise KdgenError(f"the evaluation seeds must be distinct and at least one, got {seeds}")
    if format == "onnx":
        _need("onnxruntime", "checking an ONNX export")
    run_dir = Path(run).expanduser()
    model = _student(run_dir)
    lock_run(run_dir)  # no training, resume or other export writes metrics.json and RUN/export meanwhile
    if steps is not None:
        _set_steps(model, steps)
    graph = Graph(model)
    folder = run_dir / "export"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _staging(folder) as stage:
        if format == "torchscript":
            record = {"kind": graph.kind, **_export_torchscript(graph, stage / TS_FILE)}
            stale: tuple[str, ...] = ()
        else:
            record = _export_onnx_checked(graph, stage, run_dir, opset=opset, quantize=quantize, calibration=calibration,
                                          measure_quality=measure_quality, seeds=seeds)
            stale = (() if quantize else tuple(INT8_FILES.values())) + (SAMPLES_FILE,)  # an earlier export's files no longer match
        record["seconds"] = round(time.perf_counter() - t0, 1)
        _commit(stage, folder, stale=stale)
    block = {format: record}
    _update_metrics(run_dir, "export", block)
    _rebuild_report(run_dir)
    return block


def _export_onnx_checked(graph: Graph, stage: Path, run_dir: Path, *, opset: int | None, quantize: str | None, calibration: int,
                         measure_quality: bool, seeds: list[int] | None) -> dict[str, Any]:
    """Everything an ONNX export writes, built and checked in `stage`: the graph and its parity, sampler.json and
    (diffusion) the sampler's parity, the int8 graphs, and the quality of every variant."""
    path = stage / ONNX_FILE
    record: dict[str, Any] = {"kind": graph.kind, **export_onnx(graph, path, opset=opset)}
    free = bool(record.get("free_size"))
    record["parity"] = check = parity(graph, _ort_runner(graph, path), free_size=free)
    _check_parity("ONNX", check)
    spec = sampler_spec(graph)
    atomic_write_text(stage / SAMPLER_JSON, json.dumps(spec, indent=2) + "\n")
    record.update(file=f"export/{ONNX_FILE}", bytes=_size(path))
    ort_student = OnnxStudent(path, spec=spec)
    if graph.kind == "diffusion":
        record["sampler_parity"] = sp = sampler_parity(graph.model, ort_student)
        if not sp["max_abs"] <= sp["tolerance"]:
            raise KdgenError(f"the ONNX sampler's images differ from PyTorch's by {sp['max_abs']:.3g} (> {sp['tolerance']}) although the "
                             "graph matched; nothing was kept - report the model with its config.yaml")
    variants: dict[str, Any] = {"pytorch": graph.model, "onnx_fp32": ort_student}
    if quantize:
        paths, used = quantize_int8(path, graph, run_dir, calibration=calibration)
        int8: dict[str, Any] = {"calibration_inputs": used}
        for kind, q_path in paths.items():
            q_student = OnnxStudent(q_path, spec={**spec, "onnx": q_path.name})
            gap = parity(graph, lambda inputs, s=q_student: s.session.run(None, graph.feeds(inputs))[0], free_size=free)
            int8[kind] = {"file": f"export/{q_path.name}", "bytes": _size(q_path),
                          "vs_pytorch": {"max_abs": gap["max_abs"], "max_rel": gap["max_rel"]}, **quantized_ops(q_path)}
            variants[f"int8_{kind}"] = q_student
        record["int8"] = int8
    if graph.kind != "classifier":  # a picture: the same seeds through every variant
        record["samples"] = _variant_grid(graph, variants, stage / SAMPLES_FILE)
    if measure_quality and (run_dir / "config.yaml").is_file():
        record["quality"] = quality = variant_quality(run_dir, graph, variants, seeds=seeds)
        key = {"classifier": "accuracy", "image-to-image": "psnr"}.get(graph.kind, "fid")
        for q in quality.values():
            q[f"{key}_vs_pytorch"] = q[key] / quality["pytorch"][key] if quality["pytorch"][key] else float("nan")
    return record


def _set_steps(model: nn.Module, steps: int) -> None:
    from ..models.unet import DiffusionModel
    from ..sampling import DiffusionSampler

    if not isinstance(model, DiffusionModel):
        raise KdgenError(f"--steps applies to diffusion students; this student is a {student_kind(model)} - drop --steps")
    DiffusionSampler(model, steps=steps)  # one sentence when the model cannot take that many steps
    model.steps = int(steps)


__all__ = ["FORMATS", "PARITY_BATCHES", "QUANTIZE", "Graph", "OrtSampler", "bench_latency", "export", "export_onnx", "opset_range",
           "parity", "quantize_int8", "sampler_spec", "student_kind"]
