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
    generator (GAN / VAE decoder)   z [B, z_dim] -> image [B, C, H, W]
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
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .errors import KdgenError
from .io import atomic_write_text, load_model
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


# --------------------------------------------------------------------------- what is exported


def student_kind(model: nn.Module) -> str:
    from .models.classifier import is_classifier
    from .models.unet import DiffusionModel

    if isinstance(model, DiffusionModel):
        return "diffusion"
    if is_classifier(model):
        return "classifier"
    family = getattr(model, "kdgen_meta", {}).get("family", "")
    if family.endswith("generator") or family.endswith("decoder"):
        return "generator"
    raise KdgenError(f"kdgen cannot export a '{family}' model; it exports generators, diffusion students and classifiers")


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
            from .evaluation import generator_shape

            self.z_dim = generator_shape(model)[2]
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
            return (torch.randn(batch, self.z_dim, generator=gen),)
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
        ref, got = graph.reference(inputs), np.asarray(run(inputs))
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
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise KdgenError(f"torch.onnx.export could not export this student ({first}); try --format torchscript") from None
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
        return {**spec, "z_dim": graph.z_dim, "value_range": [-1, 1]}
    if graph.kind == "classifier":
        return {**spec, "shape": list(graph.shape), "num_classes": graph.model.kdgen_meta["args"].get("num_classes")}
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
    Sampler for the same seed, so FID and images compare one to one."""

    def __init__(self, student: OnnxStudent, torch_sampler):
        self.student, self.ref = student, torch_sampler
        self.steps = getattr(torch_sampler, "steps", 1)
        self.student.batch_size = torch_sampler.batch_size

    def sample(self, n: int, seed: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = self.ref.latents(n, seed).numpy()
        noise_gen = torch.Generator().manual_seed(seed + 1)  # what DiffusionSampler hands the LCM scheduler
        step_noise = lambda shape: torch.randn(shape, generator=noise_gen).numpy()  # noqa: E731
        labels = cond.numpy() if cond is not None else None
        return torch.from_numpy(self.student.sample(n, latents=z, labels=labels, step_noise=step_noise))


def sampler_parity(model: nn.Module, student: OnnxStudent, *, n: int = 16, seed: int = 0) -> dict[str, Any]:
    """The ONNX diffusion sampler (numpy + onnxruntime) vs kdgen's PyTorch sampler: all steps, same noise."""
    from .sampling import DiffusionSampler

    ref = DiffusionSampler(model)
    a, b = ref.sample(n, seed).numpy(), OrtSampler(student, ref).sample(n, seed).numpy()
    return {"n": n, "steps": ref.sampling_steps, "max_abs": float(np.abs(a - b).max()), "mean_abs": float(np.abs(a - b).mean()),
            "tolerance": SAMPLER_TOL}


# --------------------------------------------------------------------------- int8


def _calibration(graph: Graph, run_dir: Path, count: int) -> list[dict[str, np.ndarray]]:
    """Calibration batches drawn like real use: latents for a generator, training images for a classifier, and
    the inputs the student's own sampler feeds its network for a diffusion student."""
    gen = torch.Generator().manual_seed(4321)
    batch = 32
    if graph.kind == "generator":
        return [graph.feeds(graph.random_inputs(batch, gen)) for _ in range(max(1, count // batch))]
    if graph.kind == "classifier":
        images = _run_images(run_dir, graph, split="train", n=count)
        return [{"image": x.numpy()} for x in images.split(batch)]
    from .sampling import DiffusionSampler

    sampler = DiffusionSampler(graph.model)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    n = max(1, -(-count // sampler.sampling_steps))
    labels = graph.model.default_labels(n)
    sampler.run(sampler.latents(n, 4321), labels, torch.Generator().manual_seed(4322),
                record=lambda x, t: seen.append((x.clone(), t.expand(x.shape[0]).clone(), labels)))
    out = []
    for x, t, y in seen:
        out.append(graph.feeds((x, t.long()) if y is None else (x, t.long(), y)))
    return out


def quantize_int8(fp32: Path, graph: Graph, run_dir: Path, *, calibration: int = 256) -> dict[str, Path]:
    """onnxruntime dynamic (weights int8, activations quantized on the fly) and static (QDQ, per-channel,
    activations calibrated on `calibration` real inputs) quantization of the fp32 graph; temp paths."""
    _need("onnxruntime", "int8 quantization")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = fp32.with_name(fp32.stem + ".pre.tmp.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as e:  # pre-processing is an optimisation; quantize the raw graph if it fails
        log.warning("onnxruntime quantization pre-processing failed (%s); quantizing the exported graph as is", str(e).splitlines()[0][:200])
        pre = fp32
    batches = _calibration(graph, run_dir, calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    out = {k: fp32.with_name(v + ".tmp") for k, v in INT8_FILES.items()}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_dynamic(str(pre), str(out["dynamic"]), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
            quantize_static(str(pre), str(out["static"]), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
            for p in out.values():
                session(p)  # onnxruntime must load what it wrote
    except Exception as e:
        for p in out.values():
            p.unlink(missing_ok=True)
        raise KdgenError(f"onnxruntime could not quantize this student to int8 ({str(e).splitlines()[0][:300]}); export without --quantize") from None
    finally:
        if pre != fp32:
            pre.unlink(missing_ok=True)
    return out


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


def _run_images(run_dir: Path, graph: Graph, *, split: str, n: int | None = None) -> torch.Tensor:
    from .data import stack_images
    from .evaluation import run_dataset

    cfg = _run_config(run_dir)
    ds = run_dataset(cfg, image_size=graph.shape[1], channels=graph.shape[0], split=split)
    return stack_images(ds, n) if n else ds.images


def variant_quality(run_dir: Path, graph: Graph, variants: dict[str, Any], *, seeds: list[int] | None = None) -> dict[str, dict]:
    """Every variant (name -> a PyTorch module or an OnnxStudent) measured the same way as the run measured its
    student: FID/KID/precision/recall on the run's eval seeds for samplers, accuracy/macro-F1/errors for classifiers."""
    cfg = _run_config(run_dir)
    if graph.kind == "classifier":
        from .metrics.classify import classification_scores, predict

        test = _run_images_labels(run_dir, graph)
        out = {}
        for name, v in variants.items():
            pred = predict(v, test.images) if isinstance(v, nn.Module) else torch.from_numpy(v.logits(test.images.numpy()).argmax(1))
            s = classification_scores(pred, test.labels, graph.model.kdgen_meta["args"].get("num_classes"))
            out[name] = {k: s[k] for k in ("accuracy", "macro_f1", "errors") if k in s}
        return out
    from .evaluation import reference_images
    from .metrics import QualityMetric, evaluate_quality, load_feature_extractor
    from .sampling import make_sampler

    from .evaluation import generator_shape

    e = cfg.eval
    size, ch, _ = generator_shape(graph.model)
    torch_sampler = make_sampler(graph.model, batch_size=e.batch_size)
    extractor, _ = load_feature_extractor(e.features, channels=ch)
    real, _ = reference_images(cfg, size, ch)
    metric = QualityMetric(extractor, real, batch_size=e.batch_size, k=e.k)
    out = {}
    for name, v in variants.items():
        sampler = torch_sampler if isinstance(v, nn.Module) else OrtSampler(v, torch_sampler)
        q = evaluate_quality(metric, sampler, num_samples=e.num_samples, seeds=seeds or e.seeds)
        out[name] = {k: q[k] for k in ("fid", "fid_std", "kid", "precision", "recall") if k in q}
    return out


def _run_images_labels(run_dir: Path, graph: Graph):
    from .evaluation import run_dataset

    return run_dataset(_run_config(run_dir), image_size=graph.shape[1], channels=graph.shape[0], split="test")


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


def _place(tmp: Path, final: Path) -> Path:
    os.replace(tmp, final)
    return final


def export(run: str | Path, *, format: str = "onnx", quantize: str | None = None, opset: int | None = None,
           calibration: int = 256, measure_quality: bool = True, steps: int | None = None,
           seeds: list[int] | None = None) -> dict[str, Any]:
    """Export RUN/student into RUN/export/ as `format` ("onnx" or "torchscript"), prove parity with PyTorch, optionally
    quantize to int8 (onnx only) and re-measure quality; records everything in metrics.json["export"]; returns that block.

    `steps`: a diffusion student's sampling steps for the ONNX sampler (default: the ones it records).
    `seeds`: the evaluation seeds of the quality re-measure (default: the run's eval.seeds)."""
    if format not in FORMATS:
        raise KdgenError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise KdgenError(f"unknown --quantize '{quantize}'; kdgen quantizes to {', '.join(QUANTIZE)}")
    if quantize and format != "onnx":
        raise KdgenError("--quantize int8 uses onnxruntime quantization; use it with --format onnx")
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
    record: dict[str, Any] = {"kind": graph.kind}
    if format == "torchscript":
        record = {**record, **_export_torchscript(graph, folder)}
        block = {"torchscript": record}
    else:
        tmp = folder / (ONNX_FILE + ".tmp")
        try:
            facts = export_onnx(graph, tmp, opset=opset)
            check = parity(graph, _ort_runner(graph, tmp))
            _check_parity("ONNX", check)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave an unchecked graph behind
            raise
        spec = sampler_spec(graph)
        atomic_write_text(folder / SAMPLER_JSON, json.dumps(spec, indent=2) + "\n")
        final = _place(tmp, folder / ONNX_FILE)
        record = {**record, **facts, "file": str(final.relative_to(run_dir)), "bytes": final.stat().st_size, "parity": check}
        _update_metrics(run_dir, "export", {"onnx": record})  # the file in place is the one metrics.json describes
        ort_student = OnnxStudent(final, spec=spec)
        if graph.kind == "diffusion":
            record["sampler_parity"] = sp = sampler_parity(model, ort_student)
            if not sp["max_abs"] <= sp["tolerance"]:
                raise KdgenError(f"the ONNX sampler's images differ from PyTorch's by {sp['max_abs']:.3g} (> {sp['tolerance']}); "
                                 "report the model - the graph itself matched")
        variants: dict[str, Any] = {"pytorch": model, "onnx_fp32": ort_student}
        if quantize:
            tmps = quantize_int8(final, graph, run_dir, calibration=calibration)
            int8 = {}
            for kind, path in tmps.items():
                placed = _place(path, folder / INT8_FILES[kind])
                q_student = OnnxStudent(placed, spec={**spec, "onnx": placed.name})
                gap = parity(graph, lambda inputs, s=q_student: s.session.run(None, graph.feeds(inputs))[0])
                int8[kind] = {"file": str(placed.relative_to(run_dir)), "bytes": placed.stat().st_size,
                              "vs_pytorch": {"max_abs": gap["max_abs"], "max_rel": gap["max_rel"]}, **quantized_ops(placed)}
                variants[f"int8_{kind}"] = q_student
            int8["calibration_inputs"] = calibration
            record["int8"] = int8
        if measure_quality and (run_dir / "config.yaml").is_file():
            record["quality"] = variant_quality(run_dir, graph, variants, seeds=seeds)
            ref = record["quality"]["pytorch"]
            key = "accuracy" if graph.kind == "classifier" else "fid"
            for name, q in record["quality"].items():
                q[f"{key}_vs_pytorch"] = q[key] / ref[key] if ref[key] else float("nan")
        block = {"onnx": record}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    _update_metrics(run_dir, "export", block)
    _rebuild_report(run_dir)
    return block


def _set_steps(model: nn.Module, steps: int) -> None:
    from .models.unet import DiffusionModel
    from .sampling import DiffusionSampler

    if not isinstance(model, DiffusionModel):
        raise KdgenError("--steps applies to diffusion students; this student makes an image in one call - drop --steps")
    DiffusionSampler(model, steps=steps)  # one sentence when the model cannot take that many steps
    model.steps = int(steps)


def _export_torchscript(graph: Graph, folder: Path) -> dict[str, Any]:
    example = graph.random_inputs(2, torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph.module.cpu(), example, check_trace=False)
    except Exception as e:
        raise KdgenError(f"torch.jit.trace could not trace this student ({str(e).splitlines()[0][:300]}); use --format onnx") from None
    tmp = folder / (TS_FILE + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, and says so on every call
        with open(tmp, "wb") as f:
            torch.jit.save(traced, f)
        loaded = torch.jit.load(str(tmp))

    def run(inputs):
        with torch.no_grad():
            return loaded(*inputs).numpy()

    check = parity(graph, run)
    try:
        _check_parity("TorchScript", check)
    except KdgenError:
        tmp.unlink(missing_ok=True)
        raise
    final = _place(tmp, folder / TS_FILE)
    return {"file": str(final.relative_to(folder.parent)), "bytes": final.stat().st_size, "method": "torch.jit.trace",
            "inputs": graph.inputs, "parity": check}


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
    from .sampling import make_sampler
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

