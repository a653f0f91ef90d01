"""ONNX (dynamo exporter + onnx.checker), TorchScript, sampler.json, and the onnxruntime sampler."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import KdgenError
from ..faces import face_of
from ..onnx_sampler import OnnxStudent, session
from .common import ONNX_FILE, SAMPLER_TOL, TS_FILE, _first_line, _need
from .graph import Graph, _check_parity, parity

log = logging.getLogger("kdgen")


def opset_range() -> tuple[int, int]:
    """Opsets the installed exporter writes natively (the dynamo exporter starts at 18) up to the installed onnx's newest."""
    import onnx

    return 18, int(onnx.defs.onnx_opset_version())


def export_onnx(graph: Graph, path: Path, *, opset: int | None = None) -> dict[str, Any]:
    """torch.onnx.export (dynamo exporter, dynamic batch) into `path`, then onnx.checker's full check; returns facts."""
    onnx = _need("onnx", "ONNX export")
    _need("onnxscript", "ONNX export")
    lo, hi = opset_range()
    if opset is not None and not lo <= opset <= hi:
        raise KdgenError(f"--opset {opset} is outside what the installed exporter can write ({lo}..{hi}); pick one in that range")
    example = graph.random_inputs(2, torch.Generator().manual_seed(0))
    # Dim.AUTO: a batch-size guard inside the model (diffusers' Upsample2D branches on batch >= 64 to call
    # .contiguous(), a no-op in ONNX) becomes a range note instead of failing the export; parity checks the batches
    auto = torch.export.Dim.AUTO
    dims = {0: auto, **({2: auto, 3: auto} if graph.size_multiple else {})}  # batch; H and W of fully convolutional families
    params = sum(p.numel() * p.element_size() for p in graph.module.parameters())
    big = params > 1_500_000_000  # protobuf caps one file at 2 GB: bigger students keep weights in student.onnx.data
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph.module.cpu(), example, str(path), input_names=graph.inputs, output_names=graph.outputs,
                              opset_version=opset, dynamo=True, external_data=big, verbose=False,
                              dynamic_shapes=tuple(dims for _ in example))
    except Exception as e:  # the exporter raises many types; the user needs one sentence
        raise KdgenError(f"torch.onnx.export could not export this student ({_first_line(e)}); try --format torchscript") from None
    model = onnx.load(str(path), load_external_data=False)
    written = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if opset is not None and written != opset:
        path.unlink(missing_ok=True)
        raise KdgenError(f"the installed exporter cannot write opset {opset} for this model (it fell back to {written}); "
                         f"pick --opset {written} or leave --opset out")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise KdgenError(f"onnx.checker rejects the exported graph ({str(e).splitlines()[0][:300]}); try another --opset") from None
    free = bool(graph.size_multiple) and _free_size(model)
    return {"opset": written, "checker": "full", "external_data": big, "inputs": graph.inputs, "outputs": graph.outputs,
            "dynamic_batch": True, **({"free_size": free, "size_multiple": graph.size_multiple} if graph.kind == "image-to-image" else {}),
            "exporter": f"torch.onnx dynamo (torch {torch.__version__}, onnx {onnx.__version__})"}


def _free_size(model) -> bool:
    """Whether the graph's first input has free H and W (symbolic dims 2 and 3): it runs on frames of any size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and all(d.dim_param or not d.HasField("dim_value") for d in dims[2:])


def free_size(path: Path) -> bool:
    """_free_size of an .onnx file on disk (its weights not loaded); a file that is not one is a sentence."""
    onnx = _need("onnx", "reading an ONNX graph")
    try:
        return _free_size(onnx.load(str(path), load_external_data=False))
    except Exception as e:  # protobuf's DecodeError, an empty or truncated file
        raise KdgenError(f"'{path}' is not a readable ONNX graph ({_first_line(e)}); run `kdgen export` again") from None


def _ort_runner(graph: Graph, path: Path, threads: int | None = None) -> Callable:
    try:
        sess = session(path, threads=threads)
    except KdgenError:
        raise
    except Exception as e:
        raise KdgenError(f"onnxruntime cannot load the exported graph ({str(e).splitlines()[0][:300]}); "
                         "try an older --opset (onnxruntime may not run the newest)") from None
    return lambda inputs: sess.run(None, graph.feeds(inputs))[0]


def sampler_spec(graph: Graph, *, batch_size: int = 500) -> dict[str, Any]:
    """sampler.json: the graph's inputs, and for diffusion every per-step coefficient of the recorded sampler,
    taken from diffusers' own scheduler (DDIM eta=0 with trailing timesteps, or LCM)."""
    spec: dict[str, Any] = {"kind": graph.kind, "onnx": ONNX_FILE, "inputs": graph.inputs, "outputs": graph.outputs, "batch_size": batch_size}
    if graph.kind == "generator":
        z = graph.z_shape
        return {**spec, **({"z_dim": z[0]} if len(z) == 1 else {}), "z_shape": list(z), "value_range": [-1, 1]}
    if graph.kind == "classifier":
        return {**spec, "shape": list(graph.shape), "num_classes": face_of(graph.model).num_classes}
    if graph.kind == "image-to-image":
        return {**spec, "shape": list(graph.shape), "out_shape": list(face_of(graph.model).image_shape), "value_range": [-1, 1],
                "fully_convolutional": False}  # exported at the training size; kdgen video tiles bigger frames
    m = graph.model
    sched = m.make_scheduler()
    sched.set_timesteps(int(m.steps))
    ts = [int(t) for t in sched.timesteps]
    ac = sched.alphas_cumprod.double()
    final = float(sched.final_alpha_cumprod)
    alpha_t = [float(ac[t]) for t in ts]
    if m.sampler == "LCMScheduler":
        prev = ts[1:] + [ts[-1]]
        scal = [sched.get_scalings_for_boundary_condition_discrete(t) for t in ts]
        extra = {"c_skip": [float(c) for c, _ in scal], "c_out": [float(c) for _, c in scal]}
    else:
        prev = [t - sched.config.num_train_timesteps // sched.num_inference_steps for t in ts]
        extra = {}
    alpha_prev = [float(ac[p]) if p >= 0 else final for p in prev]
    return {**spec, "shape": list(graph.shape), "steps": int(m.steps), "scheduler": m.sampler, "prediction_type": m.prediction_type,
            "clip_sample": bool(sched.config.get("clip_sample", False)), "clip_sample_range": float(sched.config.get("clip_sample_range", 1.0)),
            "timesteps": ts, "alpha_t": alpha_t, "alpha_prev": alpha_prev, **extra,
            "num_classes": m.num_classes, "guidance_scale": m.guidance_scale, "value_range": [-1, 1]}


class OrtSampler:
    """kdgen's Sampler face over an exported graph: the same latents (and LCM step noise) as the PyTorch
    Sampler for the same seed and batch size, so FID and images compare one to one."""

    def __init__(self, student: OnnxStudent, *, batch_size: int | None = None):
        self.student = student
        if batch_size is not None:  # LCM step noise is drawn batch by batch: chunk like the PyTorch sampler
            self.student.batch_size = batch_size

    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        from ..sampling import gaussian_latents

        z = gaussian_latents(n, seed, self.student.latent_shape).numpy()
        noise_gen = torch.Generator().manual_seed(seed + 1)  # what DiffusionSampler hands the LCM scheduler
        step_noise = lambda shape: torch.randn(shape, generator=noise_gen).numpy()  # noqa: E731
        labels = cond.numpy() if cond is not None else None
        return torch.from_numpy(self.student.sample(n, latents=z, labels=labels, step_noise=step_noise))


def sampler_parity(model: nn.Module, student: OnnxStudent, *, n: int = 16, seed: int = 0) -> dict[str, Any]:
    """The ONNX diffusion sampler (numpy + onnxruntime) vs kdgen's PyTorch sampler: all steps, same noise."""
    from ..sampling import DiffusionSampler

    ref = DiffusionSampler(model)
    a, b = ref.sample(n, seed).numpy(), OrtSampler(student, batch_size=ref.batch_size).sample(n, seed).numpy()
    return {"n": n, "steps": ref.sampling_steps, "max_abs": float(np.abs(a - b).max()), "mean_abs": float(np.abs(a - b).mean()),
            "tolerance": SAMPLER_TOL}


def _export_torchscript(graph: Graph, path: Path) -> dict[str, Any]:
    """torch.jit.trace of the exported module, saved to `path` (a staging path), reloaded and checked for parity."""
    example = graph.random_inputs(2, torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings, and torch.jit's own deprecation notice
            traced = torch.jit.trace(graph.module.cpu(), example, check_trace=False)
            torch.jit.save(traced, str(path))
            loaded = torch.jit.load(str(path))
    except Exception as e:
        raise KdgenError(f"torch.jit.trace could not trace this student ({_first_line(e)}); use --format onnx") from None

    def run(inputs):
        with torch.no_grad():
            return loaded(*inputs).numpy()

    check = parity(graph, run)
    _check_parity("TorchScript", check)
    return {"file": f"export/{TS_FILE}", "bytes": path.stat().st_size, "method": "torch.jit.trace", "inputs": graph.inputs, "parity": check}
