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
import io
import json
import logging
import os
import shutil
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import KdgenError
from .faces import face_of
from .io import atomic_write_text
from .models.loading import load_model
from .onnx_sampler import SAMPLER_JSON, OnnxStudent, read_sampler_json, session

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


# --------------------------------------------------------------------------- what is exported


def student_kind(model: nn.Module) -> str:
    """What the graph is, from the model's face."""
    from .faces import face_of

    kind = face_of(model).kind
    if kind not in ("generator", "diffusion", "classifier"):
        raise KdgenError(f"kdgen cannot export a {kind} yet; it exports generators, diffusion students and classifiers")
    return kind


class _GuidedNet(nn.Module):
    """One guided network call of a diffusion model: what the ONNX sampler calls once per step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.guided(sample, timestep, class_labels)


class Graph:
    """The module that is exported, its input names and a maker of fresh random inputs at any batch size."""

    def __init__(self, model: nn.Module):
        self.kind = student_kind(model)
        self.model = model.eval()
        if self.kind == "generator":
            from .faces import face_of

            self.z_shape = face_of(model).z_shape
            self.module, self.inputs, self.outputs = model, ["z"], ["image"]
        elif self.kind == "classifier":
            from .evaluation import classifier_shape

            size, ch = classifier_shape(model)
            self.shape = (ch, size, size)
            self.module, self.inputs, self.outputs = model, ["image"], ["logits"]
        else:
            self.shape = (model.channels, model.image_size, model.image_size)
            self.module, self.outputs = _GuidedNet(model), ["model_output"]
            self.inputs = ["sample", "timestep"] + (["class_labels"] if model.num_classes is not None else [])

    def random_inputs(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        if self.kind == "generator":
            return (torch.randn(batch, *self.z_shape, generator=gen),)
        x = torch.randn(batch, *self.shape, generator=gen)
        if self.kind == "classifier":
            return (x,)
        t = torch.randint(0, self.model.num_train_timesteps, (batch,), generator=gen)
        if self.model.num_classes is None:
            return x, t
        return x, t, torch.randint(0, self.model.num_classes, (batch,), generator=gen)

    @torch.no_grad()
    def reference(self, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
        device = next(self.module.parameters()).device
        return self.module(*(i.to(device) for i in inputs)).float().cpu().numpy()

    def feeds(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        return {name: t.numpy() for name, t in zip(self.inputs, inputs)}


# --------------------------------------------------------------------------- parity


def parity(graph: Graph, run: Callable[[tuple[torch.Tensor, ...]], np.ndarray], *, seed: int = 1234) -> dict[str, Any]:
    """max |exported - PyTorch| and that over max |PyTorch| at each of PARITY_BATCHES, on fresh random inputs."""
    gen = torch.Generator().manual_seed(seed)
    per_batch, worst_abs, worst_rel, scale = {}, 0.0, 0.0, 1.0
    for b in PARITY_BATCHES:
        inputs = graph.random_inputs(b, gen)
        try:
            got = np.asarray(run(inputs))
        except Exception as e:
            raise KdgenError(f"the exported student fails at batch {b} ({_first_line(e)}); nothing was kept - try --format torchscript "
                             "or another --opset") from None
        ref = graph.reference(inputs)
        scale = max(scale, float(np.abs(ref).max()))
        if got.shape != ref.shape:
            raise KdgenError(f"the exported student gives shape {list(got.shape)} at batch {b} where PyTorch gives {list(ref.shape)}; "
                             "the export is broken - report it with the run's config.yaml")
        err = float(np.abs(got - ref).max())
        rel = err / max(float(np.abs(ref).max()), 1e-12)
        per_batch[f"b{b}"] = {"max_abs": err, "max_rel": rel}
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
    return {"max_abs": worst_abs, "max_rel": worst_rel, "batches": per_batch, "seed": seed, "tolerance": PARITY_TOL * scale}


def _check_parity(what: str, result: dict) -> None:
    if not result["max_abs"] <= result["tolerance"]:
        raise KdgenError(f"the {what} export does not match PyTorch (max abs error {result['max_abs']:.3g} > {result['tolerance']:.3g}); "
                         "it was not kept - try another --opset or --format torchscript, and report the model if it persists")


# --------------------------------------------------------------------------- ONNX


def opset_range() -> tuple[int, int]:
    """Opsets the installed exporter writes natively (the dynamo exporter starts at 18) up to the installed onnx's newest."""
    import onnx

    return 18, int(onnx.defs.onnx_opset_version())


def _need(module_name: str, what: str):
    try:
        return __import__(module_name)
    except ImportError:
        raise KdgenError(f"{what} needs the '{module_name}' package, which is not installed; install the export extra with "
                         "`pip install 'kdgen[export]'`") from None


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
    batch = torch.export.Dim.AUTO
    params = sum(p.numel() * p.element_size() for p in graph.module.parameters())
    big = params > 1_500_000_000  # protobuf caps one file at 2 GB: bigger students keep weights in student.onnx.data
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph.module.cpu(), example, str(path), input_names=graph.inputs, output_names=graph.outputs,
                              opset_version=opset, dynamo=True, external_data=big, verbose=False,
                              dynamic_shapes=tuple({0: batch} for _ in example))
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
    return {"opset": written, "checker": "full", "external_data": big, "inputs": graph.inputs, "outputs": graph.outputs,
            "dynamic_batch": True, "exporter": f"torch.onnx dynamo (torch {torch.__version__}, onnx {onnx.__version__})"}


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
        from .sampling import gaussian_latents

        z = gaussian_latents(n, seed, self.student.latent_shape).numpy()
        noise_gen = torch.Generator().manual_seed(seed + 1)  # what DiffusionSampler hands the LCM scheduler
        step_noise = lambda shape: torch.randn(shape, generator=noise_gen).numpy()  # noqa: E731
        labels = cond.numpy() if cond is not None else None
        return torch.from_numpy(self.student.sample(n, latents=z, labels=labels, step_noise=step_noise))


def sampler_parity(model: nn.Module, student: OnnxStudent, *, n: int = 16, seed: int = 0) -> dict[str, Any]:
    """The ONNX diffusion sampler (numpy + onnxruntime) vs kdgen's PyTorch sampler: all steps, same noise."""
    from .sampling import DiffusionSampler

    ref = DiffusionSampler(model)
    a, b = ref.sample(n, seed).numpy(), OrtSampler(student, batch_size=ref.batch_size).sample(n, seed).numpy()
    return {"n": n, "steps": ref.sampling_steps, "max_abs": float(np.abs(a - b).max()), "mean_abs": float(np.abs(a - b).mean()),
            "tolerance": SAMPLER_TOL}


# --------------------------------------------------------------------------- int8


def _calibration(graph: Graph, run_dir: Path, count: int) -> list[dict[str, np.ndarray]]:
    """`count` calibration inputs in batches of 32, drawn like real use: latents for a generator, training images for a
    classifier, and for a diffusion student the inputs its own sampler feeds its network along real trajectories."""
    gen = torch.Generator().manual_seed(4321)
    batch = 32
    if graph.kind == "generator":
        return [graph.feeds(graph.random_inputs(min(batch, count - i), gen)) for i in range(0, count, batch)]
    if graph.kind == "classifier":
        from .data import stack_images

        images = stack_images(_run_split(run_dir, graph, "train"), count)
        return [{"image": x.numpy()} for x in images.split(batch)]
    from .sampling import DiffusionSampler

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


# --------------------------------------------------------------------------- quality of every variant


def _run_config(run_dir: Path):
    from .config import load_config

    return load_config(run_dir / "config.yaml")


def _run_split(run_dir: Path, graph: Graph, split: str):
    """The run's labelled dataset split at the classifier's shape."""
    from .evaluation import run_dataset

    return run_dataset(_run_config(run_dir), image_size=graph.shape[1], channels=graph.shape[0], split=split)


def variant_quality(run_dir: Path, graph: Graph, variants: dict[str, Any], *, seeds: list[int] | None = None) -> dict[str, dict]:
    """Every variant (name -> a PyTorch module or an OnnxStudent) measured the same way as the run measured its
    student: FID/KID/precision/recall on the run's eval seeds for samplers, accuracy/macro-F1/errors for classifiers."""
    cfg = _run_config(run_dir)
    if graph.kind == "classifier":
        from .metrics.classify import classification_scores, predict

        test = _run_split(run_dir, graph, "test")
        out = {}
        for name, v in variants.items():
            pred = predict(v, test.images) if isinstance(v, nn.Module) else torch.from_numpy(v.logits(test.images.numpy()).argmax(1))
            s = classification_scores(pred, test.labels, face_of(graph.model).num_classes)
            out[name] = {k: s[k] for k in ("accuracy", "macro_f1", "errors") if k in s}
        return out
    from .evaluation import generator_shape, reference_images
    from .metrics import QualityMetric, evaluate_quality, load_feature_extractor
    from .sampling import make_sampler

    e = cfg.eval
    size, ch, _ = generator_shape(graph.model)
    torch_sampler = make_sampler(graph.model, batch_size=e.batch_size)
    extractor, _ = load_feature_extractor(e.features, channels=ch)
    real, _ = reference_images(cfg, size, ch)
    metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
    out = {}
    for name, v in variants.items():
        sampler = torch_sampler if isinstance(v, nn.Module) else OrtSampler(v, batch_size=torch_sampler.batch_size)
        q = evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=seeds or e.seeds)
        out[name] = {k: q[k] for k in ("fid", "fid_std", "kid", "precision", "recall") if k in q}
    return out


# --------------------------------------------------------------------------- the command


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
    """Move every staged file into place; remove `stale` files that described an earlier export."""
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    for path in sorted(stage.iterdir()):
        os.replace(path, folder / path.name)


def _size(path: Path) -> int:
    """Bytes of a graph and of its external-data file, if it has one."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


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
        from .models.resolve import load_any, save_any

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
    record["parity"] = check = parity(graph, _ort_runner(graph, path))
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
            gap = parity(graph, lambda inputs, s=q_student: s.session.run(None, graph.feeds(inputs))[0])
            int8[kind] = {"file": f"export/{q_path.name}", "bytes": _size(q_path),
                          "vs_pytorch": {"max_abs": gap["max_abs"], "max_rel": gap["max_rel"]}, **quantized_ops(q_path)}
            variants[f"int8_{kind}"] = q_student
        record["int8"] = int8
    if graph.kind != "classifier":  # a picture: the same seeds through every variant
        record["samples"] = _variant_grid(graph, variants, stage / SAMPLES_FILE)
    if measure_quality and (run_dir / "config.yaml").is_file():
        record["quality"] = quality = variant_quality(run_dir, graph, variants, seeds=seeds)
        key = "accuracy" if graph.kind == "classifier" else "fid"
        for q in quality.values():
            q[f"{key}_vs_pytorch"] = q[key] / quality["pytorch"][key] if quality["pytorch"][key] else float("nan")
    return record


def _set_steps(model: nn.Module, steps: int) -> None:
    from .models.unet import DiffusionModel
    from .sampling import DiffusionSampler

    if not isinstance(model, DiffusionModel):
        raise KdgenError(f"--steps applies to diffusion students; this student is a {student_kind(model)} - drop --steps")
    DiffusionSampler(model, steps=steps)  # one sentence when the model cannot take that many steps
    model.steps = int(steps)


def _variant_grid(graph: Graph, variants: dict[str, Any], path: Path, n: int = 36) -> dict[str, Any]:
    """Side-by-side grids of every variant from the same noise (seed 0), left to right in `variants` order."""
    from .report import save_side_by_side
    from .sampling import make_sampler

    ref = make_sampler(graph.model, batch_size=n)
    panels = {name: (ref if isinstance(v, nn.Module) else OrtSampler(v, batch_size=ref.batch_size)).sample(n, 0) for name, v in variants.items()}
    save_side_by_side(panels, path, nrow=6)
    return {"file": f"export/{SAMPLES_FILE}", "panels": list(panels), "seed": 0, "n": n}


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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _rebuild_report(run_dir: Path) -> None:
    if (run_dir / "metrics.json").is_file():
        from .report.page import build_report

        build_report(run_dir)


# --------------------------------------------------------------------------- latency


def _median_ms(fn: Callable[[], Any], *, repeats: int, budget_s: float = 20.0) -> float:
    """Median wall time of fn() in ms after warm-up (3 calls, or 1 when a call takes over a second); stops early
    once `budget_s` is spent, but always times at least 3 calls."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(0 if first > 1 else 2):
        fn()
    times, spent = [], 0.0
    while len(times) < repeats and (len(times) < 3 or spent < budget_s):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt * 1000)
        spent += dt
    return statistics.median(times)


def bench_latency(run: str | Path, *, batches: tuple[int, ...] = (1, 64), repeats: int = 20) -> dict[str, Any]:
    """Teacher (PyTorch eager) and student (eager, TorchScript, onnxruntime fp32 and int8, whichever are exported),
    same process, same threads: median ms per batch after warm-up and images/s, every sampling step included.
    Written into metrics.json["latency"] and the report."""
    from .config import load_config
    from .teacher import load_teacher

    run_dir = Path(run).expanduser()
    student = _student(run_dir)
    folder = run_dir / "export"
    if not (folder / ONNX_FILE).is_file():
        raise KdgenError(f"'{folder / ONNX_FILE}' is missing; run `kdgen export {run_dir}` first (add --quantize int8 for the int8 rows)")
    _need("onnxruntime", "latency of the exported student")
    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    spec = read_sampler_json(folder / ONNX_FILE)
    if spec["kind"] == "diffusion":
        student.steps = int(spec["steps"])  # every student row runs the step count that was exported
    graph = Graph(student)
    threads = torch.get_num_threads()
    rows: dict[str, Callable[[int], Callable[[], Any]]] = {}
    steps = {"student": getattr(student, "steps", 1)}
    if cfg is not None:
        teacher = load_teacher(cfg.teacher.path).cpu().eval()
        steps["teacher"] = cfg.teacher.steps or getattr(teacher, "steps", 1)
        rows["teacher_eager"] = _torch_timer(graph.kind, teacher, cfg.teacher.steps)
    rows["student_eager"] = _torch_timer(graph.kind, student, None)
    from .evaluation import weights_file

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
            ms = _median_ms(make(b), repeats=repeats)
            entry[f"b{b}"] = {"ms": ms, "ms_per_image": ms / b, "images_per_s": 1000 * b / ms}
        result["rows"][name] = entry
    if "teacher_eager" in result["rows"]:
        t = result["rows"]["teacher_eager"]
        result["speedup_vs_teacher_eager"] = {name: {k: t[k]["ms"] / r[k]["ms"] for k in r} for name, r in result["rows"].items()}
    _update_metrics(run_dir, "latency", result)
    _rebuild_report(run_dir)
    return result


def _torch_timer(kind: str, model: nn.Module, steps: int | None) -> Callable[[int], Callable[[], Any]]:
    from .sampling import make_sampler

    if kind == "classifier":
        from .evaluation import classifier_shape

        size, ch = classifier_shape(model)

        def make(b):
            x = torch.randn(b, ch, size, size)
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
    from .sampling import DiffusionSampler

    def net(x, t, labels):  # the traced network inside kdgen's own sampler loop
        t = (t.expand(x.shape[0]) if t.dim() == 0 else t).long()
        return scripted(x, t) if labels is None else scripted(x, t, labels)

    sampler = DiffusionSampler(student, net=net)
    return lambda b: (lambda: sampler.sample(b, 0))


def _ort_timer(graph: Graph, student: OnnxStudent) -> Callable[[int], Callable[[], Any]]:
    if graph.kind == "classifier":
        return lambda b: (lambda x=np.random.default_rng(0).standard_normal((b, *graph.shape), dtype=np.float32): student.logits(x))
    return lambda b: (lambda: student.sample(b, rng=np.random.default_rng(0)))

