"""What every part of export shares: file names, tolerances, the run's student and metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from ..errors import KdgenError
from ..io import atomic_write_text
from ..models.loading import load_model

log = logging.getLogger("kdgen")

FORMATS = ("onnx", "torchscript")
QUANTIZE = ("int8",)
INT8_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]  # the weighted ops; quantizing broadcast Adds breaks diffusers UNets
PARITY_BATCHES = (1, 3, 64)
PARITY_TOL = 1e-4  # fp32: max |onnxruntime - PyTorch| <= PARITY_TOL * max(1, max |PyTorch|)
SAMPLER_TOL = 1e-3  # the ONNX diffusion sampler vs the PyTorch sampler, all steps, same noise
ONNX_FILE, TS_FILE = "student.onnx", "student.torchscript.pt"
INT8_FILES = {"dynamic": "student.int8-dynamic.onnx", "static": "student.int8-static.onnx"}
SAMPLES_FILE = "samples.png"  # PyTorch | onnxruntime fp32 | int8 ..., the same seeds


def _need(module_name: str, what: str):
    try:
        return __import__(module_name)
    except ImportError:
        raise KdgenError(f"{what} needs the '{module_name}' package, which is not installed; install the export extra with "
                         "`pip install 'kdgen[export]'`") from None


def _student(run_dir: Path) -> nn.Module:
    if not run_dir.is_dir():
        raise KdgenError(f"'{run_dir}' is not a folder; give a run folder written by `kdgen distill`")
    if not (run_dir / "student").is_dir():
        raise KdgenError(f"'{run_dir}' has no student/ to export; run `kdgen distill` into it first (or give the run folder, not a model folder)")
    return load_model(run_dir / "student").cpu().eval()


def _update_metrics(run_dir: Path, key: str, value: dict) -> None:
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.setdefault(key, {}).update(value)
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")


def _size(path: Path) -> int:
    """Bytes of a graph and of its external-data file, if it has one."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _rebuild_report(run_dir: Path) -> None:
    if (run_dir / "metrics.json").is_file():
        from ..report.page import build_report

        build_report(run_dir)
