"""int8: onnxruntime dynamic and static (QDQ, per-channel) quantization, calibrated on the student's real inputs."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import KdgenError
from ..onnx_sampler import session
from .common import INT8_FILES, INT8_OPS, _first_line, _need
from .graph import Graph
from .quality import _run_split

log = logging.getLogger("kdgen")


def _calibration(graph: Graph, run_dir: Path, count: int) -> list[dict[str, np.ndarray]]:
    """`count` calibration inputs in batches of 32, drawn like real use: latents for a generator, training images for a
    classifier, and for a diffusion student the inputs its own sampler feeds its network along real trajectories."""
    gen = torch.Generator().manual_seed(4321)
    batch = 32
    if graph.kind == "generator":
        return [graph.feeds(graph.random_inputs(min(batch, count - i), gen)) for i in range(0, count, batch)]
    if graph.kind == "classifier":
        from ..data import stack_images

        images = stack_images(_run_split(run_dir, graph, "train"), count)
        return [{"image": x.numpy()} for x in images.split(batch)]
    if graph.kind == "image-to-image":  # the task's real inputs (degraded training images)
        from .quality import _image_pairs

        pairs = _image_pairs(run_dir, graph, "train")
        inputs = torch.stack([pairs[i]["input"] for i in range(min(count, len(pairs)))])
        return [{"image": x.numpy()} for x in inputs.split(batch)]
    from ..sampling import DiffusionSampler

    sampler = DiffusionSampler(graph.model, batch_size=batch)
    seen: list[dict[str, np.ndarray]] = []

    def record(x, t, labels):
        t = t.expand(x.shape[0]).long()
        seen.append(graph.feeds((x, t) if labels is None else (x, t, labels)))

    n = max(1, -(-count // sampler.sampling_steps))  # trajectories: every step of each is one input
    latents, labels, noise = sampler.latents(n, 4321), graph.model.default_labels(n), torch.Generator().manual_seed(4322)
    for i in range(0, n, batch):
        y = labels[i : i + batch] if labels is not None else None
        sampler.run(latents[i : i + batch], y, noise, record=lambda x, t, y=y: record(x, t, y))
    return seen


def quantize_int8(fp32: Path, graph: Graph, run_dir: Path, *, calibration: int = 256) -> tuple[dict[str, Path], int]:
    """onnxruntime dynamic (weights int8, activations quantized on the fly) and static (QDQ, per-channel,
    activations calibrated on `calibration` real inputs) quantization of the fp32 graph, written beside it;
    returns their paths and how many calibration inputs were used."""
    _need("onnxruntime", "int8 quantization")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    big = fp32.with_name(fp32.name + ".data").is_file()
    pre = fp32.parent / "pre" / fp32.name
    pre.parent.mkdir(exist_ok=True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True, save_as_external_data=big)
    except Exception as e:  # pre-processing is an optimisation; quantize the raw graph if it fails
        log.warning("onnxruntime quantization pre-processing failed (%s); quantizing the exported graph as is", _first_line(e))
        pre = fp32
    batches = _calibration(graph, run_dir, calibration)
    used = sum(len(next(iter(b.values()))) for b in batches)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    out = {k: fp32.with_name(v) for k, v in INT8_FILES.items()}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_dynamic(str(pre), str(out["dynamic"]), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS,
                             use_external_data_format=big)
            quantize_static(str(pre), str(out["static"]), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS,
                            use_external_data_format=big)
            for p in out.values():
                session(p)  # onnxruntime must load what it wrote
    except Exception as e:
        raise KdgenError(f"onnxruntime could not quantize this student to int8 ({_first_line(e)}); export without --quantize") from None
    finally:
        shutil.rmtree(fp32.parent / "pre", ignore_errors=True)
    return out, used


def quantized_ops(path: Path) -> dict[str, int]:
    """How many nodes of the graph are int8 (QuantizeLinear / ConvInteger / MatMulInteger ...) and how many in all."""
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    q = sum(1 for o in ops if "Integer" in o or o.startswith("QLinear") or o in ("QuantizeLinear", "DynamicQuantizeLinear"))
    return {"int8_nodes": q, "nodes": len(ops)}
