"""`kdgen bench-latency`: teacher and student in every runtime, same process, same threads."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import KdgenError
from ..metrics.cost import median_ms
from ..onnx_sampler import OnnxStudent, read_sampler_json
from .common import INT8_FILES, ONNX_FILE, TS_FILE, _need, _rebuild_report, _student, _update_metrics
from .graph import Graph

log = logging.getLogger("kdgen")


def bench_latency(run: str | Path, *, batches: tuple[int, ...] = (1, 64), repeats: int = 20) -> dict[str, Any]:
    """Teacher (PyTorch eager) and student (eager, TorchScript, onnxruntime fp32 and int8, whichever are exported),
    same process, same threads: median ms per batch after warm-up and images/s, every sampling step included.
    Written into metrics.json["latency"] and the report."""
    from ..config import load_run_config

    run_dir = Path(run).expanduser()
    student = _student(run_dir)
    folder = run_dir / "export"
    if not (folder / ONNX_FILE).is_file():
        raise KdgenError(f"'{folder / ONNX_FILE}' is missing; run `kdgen export {run_dir}` first (add --quantize int8 for the int8 rows)")
    _need("onnxruntime", "latency of the exported student")
    cfg = load_run_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    spec = read_sampler_json(folder / ONNX_FILE)
    if spec["kind"] == "diffusion":
        student.steps = int(spec["steps"])  # every student row runs the step count that was exported
    graph = Graph(student)
    threads = torch.get_num_threads()
    rows: dict[str, Callable[[int], Callable[[], Any]]] = {}
    steps = {"student": getattr(student, "steps", 1)}
    teacher = None
    if cfg is not None:
        from ..models.resolve import resolve_teacher

        try:
            teacher = resolve_teacher(cfg.teacher, None).cpu().eval()
        except KdgenError as e:  # e.g. a teacher handed in from Python that could not be saved: time the student alone
            log.warning("the teacher row is skipped: %s", e)
    if teacher is not None:
        steps["teacher"] = cfg.teacher.steps or getattr(teacher, "steps", 1)
        rows["teacher_eager"] = _torch_timer(graph.kind, teacher, cfg.teacher.steps)
    rows["student_eager"] = _torch_timer(graph.kind, student, None)
    from ..evaluation import weights_file

    newest = weights_file(run_dir / "student").stat().st_mtime  # an export older than the student's weights is stale

    def fresh(name: str) -> bool:
        path = folder / name
        if path.is_file() and path.stat().st_mtime < newest:
            log.warning("%s is older than the student's weights; skipped (re-run kdgen export)", path)
            return False
        return path.is_file()

    if not fresh(ONNX_FILE):
        raise KdgenError(f"'{folder / ONNX_FILE}' is older than the student it should hold; run `kdgen export {run_dir}` again")
    if fresh(TS_FILE):
        from ..io import verify_checksum

        verify_checksum(folder / TS_FILE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(folder / TS_FILE))
        rows["student_torchscript"] = _torchscript_timer(graph, student, scripted)
    for name, file in (("student_onnx_fp32", ONNX_FILE), *((f"student_onnx_int8_{k}", f) for k, f in INT8_FILES.items())):
        if fresh(file):
            rows[name] = _ort_timer(graph, OnnxStudent(folder / file, threads=threads, spec={**spec, "onnx": file}))
    result: dict[str, Any] = {"threads": threads, "device": "cpu", "repeats": repeats, "kind": graph.kind,
                              "steps": steps, "rows": {}}
    for name, make in rows.items():
        entry = {}
        for b in batches:
            ms = median_ms(make(b), repeats=repeats)
            entry[f"b{b}"] = {"ms": ms, "ms_per_image": ms / b, "images_per_s": 1000 * b / ms}
        result["rows"][name] = entry
    if "teacher_eager" in result["rows"]:
        t = result["rows"]["teacher_eager"]
        result["speedup_vs_teacher_eager"] = {name: {k: t[k]["ms"] / r[k]["ms"] for k in r} for name, r in result["rows"].items()}
    _update_metrics(run_dir, "latency", result)
    _rebuild_report(run_dir)
    return result


def _torch_timer(kind: str, model: nn.Module, steps: int | None) -> Callable[[int], Callable[[], Any]]:
    from ..sampling import make_sampler

    if kind in ("classifier", "image-to-image"):
        from ..evaluation import classifier_shape
        from ..faces import face_of

        if kind == "image-to-image":
            shape = face_of(model).input_shape
        else:
            size, ch = classifier_shape(model)
            shape = (ch, size, size)

        def make(b):
            x = torch.randn(b, *shape)
            return lambda: _no_grad(model, x)
        return make
    sampler = make_sampler(model, steps=steps if kind == "diffusion" else None)
    return lambda b: (lambda: sampler.sample(b, 0))


def _no_grad(model, *inputs):
    with torch.no_grad():
        return model(*inputs)


def _torchscript_timer(graph: Graph, student: nn.Module, scripted) -> Callable[[int], Callable[[], Any]]:
    if graph.kind != "diffusion":
        return lambda b: (lambda inputs=graph.random_inputs(b, torch.Generator().manual_seed(0)): _no_grad(scripted, *inputs))
    from ..sampling import DiffusionSampler

    def net(x, t, labels):  # the traced network inside kdgen's own sampler loop
        t = (t.expand(x.shape[0]) if t.dim() == 0 else t).long()
        return scripted(x, t) if labels is None else scripted(x, t, labels)

    sampler = DiffusionSampler(student, net=net)
    return lambda b: (lambda: sampler.sample(b, 0))


def _ort_timer(graph: Graph, student: OnnxStudent) -> Callable[[int], Callable[[], Any]]:
    if graph.kind in ("classifier", "image-to-image"):
        run = student.logits if graph.kind == "classifier" else student.map
        return lambda b: (lambda x=np.random.default_rng(0).standard_normal((b, *graph.shape), dtype=np.float32): run(x))
    return lambda b: (lambda: student.sample(b, rng=np.random.default_rng(0)))
