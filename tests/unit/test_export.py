"""Export at tiny size: every kind of student round-trips ONNX and TorchScript with parity; the numpy +
onnxruntime diffusion sampler matches the PyTorch sampler (DDIM, LCM with step noise, guided); bad input is
one sentence and never leaves a half-written or unchecked file behind."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusion_fixtures import tiny_diffusion

from kdgen.errors import KdgenError
from kdgen.export import PARITY_BATCHES, export
from kdgen.models.loading import build_model, save_model
from kdgen.models.unet import save_diffusion
from kdgen.onnx_sampler import OnnxStudent
from kdgen.sampling import DiffusionSampler


def _run_with(tmp_path, kind):
    """A run folder holding only student/ (no config.yaml: quality is not re-measured)."""
    torch.manual_seed(0)
    run = tmp_path / kind
    if kind == "generator":
        args = {"z_dim": 16, "image_size": 28, "channels": 1, "base_width": 8, "width": 1.0}
        save_model(build_model("dcgan-generator", args), run / "student", family="dcgan-generator", args=args)
    elif kind == "classifier":
        args = {"channels": 1, "image_size": 8, "num_classes": 10, "widths": [4, 8]}
        save_model(build_model("cnn", args), run / "student", family="cnn", args=args)
    elif kind == "diffusion":
        save_diffusion(tiny_diffusion(steps=3), run / "student")
    else:  # class-conditional with classifier-free guidance inside the graph
        save_diffusion(tiny_diffusion(steps=2, num_classes=3, guidance_scale=2.0), run / "student")
    return run


@pytest.mark.parametrize("kind", ["generator", "classifier", "diffusion", "guided-diffusion"])
def test_every_kind_round_trips_onnx_and_torchscript_with_parity(tmp_path, kind):
    import onnx

    run = _run_with(tmp_path, kind)
    block = export(run, format="onnx", measure_quality=False)["onnx"]
    onnx.checker.check_model(str(run / "export" / "student.onnx"), full_check=True)
    p = block["parity"]
    assert set(p["batches"]) == {f"b{b}" for b in PARITY_BATCHES}
    assert 0 <= p["max_abs"] <= p["tolerance"] <= 1e-4 * 100 and block["opset"] >= 18
    spec = json.loads((run / "export" / "sampler.json").read_text())
    assert spec["kind"] == ("diffusion" if "diffusion" in kind else kind)
    ts = export(run, format="torchscript")["torchscript"]
    assert ts["parity"]["max_abs"] <= ts["parity"]["tolerance"] and (run / "export" / "student.torchscript.pt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["export"]) == {"onnx", "torchscript"}  # the second export adds, it does not replace
    if "diffusion" in kind:
        sp = block["sampler_parity"]
        assert sp["max_abs"] <= sp["tolerance"] and sp["steps"] == spec["steps"]
    assert not list((run / "export").glob("*.tmp*"))


def _lcm_student(steps=3):
    m = tiny_diffusion(steps=steps)
    m.sampler = "LCMScheduler"
    m.scheduler_config = {**m.scheduler_config, "original_inference_steps": 8, "clip_sample": False, "timestep_scaling": 10.0}
    return m


@pytest.mark.parametrize("make", [lambda: tiny_diffusion(steps=4), _lcm_student, lambda: tiny_diffusion(steps=2, num_classes=3, guidance_scale=3.0)],
                         ids=["ddim", "lcm-multistep", "ddim-guided"])
def test_onnx_sampler_matches_the_pytorch_sampler_on_the_same_noise(tmp_path, make):
    from kdgen.export import OrtSampler

    model = make()
    run = tmp_path / "run"
    save_diffusion(model, run / "student")
    export(run, measure_quality=False)
    ref = DiffusionSampler(model)
    ours = OrtSampler(OnnxStudent(run / "export" / "student.onnx"), batch_size=ref.batch_size)
    a, b = ref.sample(12, seed=3), ours.sample(12, seed=3)
    assert a.shape == b.shape == (12, 1, 16, 16)
    assert (a - b).abs().max() <= 1e-3
    # and it is the noise that matters: another seed gives other images
    assert (ours.sample(12, seed=4) - b).abs().max() > 0.1


def test_the_onnx_sampler_runs_with_torch_unimportable(tmp_path):
    run = tmp_path / "run"
    save_diffusion(tiny_diffusion(steps=2), run / "student")
    export(run, measure_quality=False)
    path = importlib.util.find_spec("kdgen.onnx_sampler").origin
    code = f"""
import sys, importlib.util
sys.modules['torch'] = None  # any import of torch now fails
spec = importlib.util.spec_from_file_location('onnx_sampler', {path!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
import numpy as np
x = mod.OnnxStudent({str(run / 'export' / 'student.onnx')!r}).sample(5, rng=np.random.default_rng(0))
assert x.shape == (5, 1, 16, 16) and -1 <= x.min() and x.max() <= 1 and x.std() > 0, x.shape
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_parity_failure_is_an_error_and_keeps_the_last_good_export(tmp_path, monkeypatch):
    ex = sys.modules["kdgen.export"]  # `kdgen.export` itself is the function

    run = _run_with(tmp_path, "generator")
    export(run, measure_quality=False)
    good = (run / "export" / "student.onnx").read_bytes()
    before = json.loads((run / "metrics.json").read_text())
    real = ex._ort_runner
    monkeypatch.setattr(ex, "_ort_runner", lambda *a, **k: (lambda inputs, f=real(*a, **k): f(inputs) + 1e-3))
    with pytest.raises(KdgenError, match="does not match PyTorch"):
        export(run, measure_quality=False)
    assert (run / "export" / "student.onnx").read_bytes() == good
    assert json.loads((run / "metrics.json").read_text()) == before
    assert sorted(p.name for p in (run / "export").iterdir()) == ["sampler.json", "samples.png", "student.onnx", "student.onnx.sha256"]


@pytest.mark.parametrize("where", ["sampler_parity", "quantize_int8"])
def test_a_failure_late_in_an_export_changes_nothing(tmp_path, monkeypatch, where):
    """The ONNX sampler's check and int8 quantization run after the graph passed parity: failing there must
    still leave the earlier export, its int8 files and metrics.json exactly as they were."""
    ex = sys.modules["kdgen.export"]
    run = tmp_path / "run"
    save_diffusion(tiny_diffusion(steps=2), run / "student")
    export(run, quantize="int8", calibration=8, measure_quality=False)
    files = {p.name: p.read_bytes() for p in (run / "export").iterdir()}
    before = (run / "metrics.json").read_text()

    def broken(*a, **k):
        if where == "sampler_parity":
            return {"n": 1, "steps": 3, "max_abs": 1.0, "mean_abs": 1.0, "tolerance": 1e-3}
        raise KdgenError("onnxruntime could not quantize this student to int8 (forced); export without --quantize")

    monkeypatch.setattr(ex, where, broken)
    with pytest.raises(KdgenError):
        export(run, quantize="int8", steps=3, calibration=8, measure_quality=False)
    assert {p.name: p.read_bytes() for p in (run / "export").iterdir()} == files
    assert (run / "metrics.json").read_text() == before
    assert set(files) == {"sampler.json", "samples.png", *(f"{g}{c}" for g in ("student.onnx", "student.int8-dynamic.onnx",
                                                                          "student.int8-static.onnx") for c in ("", ".sha256"))}


def test_a_plain_re_export_drops_the_int8_graphs_of_the_old_one(tmp_path):
    run = _run_with(tmp_path, "generator")
    export(run, quantize="int8", calibration=40, measure_quality=False)
    assert json.loads((run / "metrics.json").read_text())["export"]["onnx"]["int8"]["calibration_inputs"] == 40
    export(run, measure_quality=False)
    assert sorted(p.name for p in (run / "export").iterdir()) == ["sampler.json", "samples.png", "student.onnx", "student.onnx.sha256"]
    assert "int8" not in json.loads((run / "metrics.json").read_text())["export"]["onnx"]


def test_mismatched_or_malformed_export_files_are_sentences(tmp_path):
    gan, cls = _run_with(tmp_path, "generator"), _run_with(tmp_path, "classifier")
    export(gan, measure_quality=False)
    export(cls, measure_quality=False)
    (gan / "export" / "student.onnx").write_bytes((cls / "export" / "student.onnx").read_bytes())
    with pytest.raises(KdgenError, match="student.onnx' does not match the sha256 recorded"):  # the graph alone swapped: caught
        OnnxStudent(gan / "export" / "student.onnx")
    (gan / "export" / "student.onnx.sha256").write_bytes((cls / "export" / "student.onnx.sha256").read_bytes())  # swapped whole
    with pytest.raises(KdgenError, match=r"takes inputs \['image'\] but its sampler.json describes \['z'\]"):
        OnnxStudent(gan / "export" / "student.onnx")
    for text, match in (("{}", "is not a kdgen sampler.json"), ("[1]", "is not a kdgen sampler.json"), ("{oops", "is not valid JSON"),
                        ('{"kind": "diffusion", "inputs": []}', "lacks shape, steps")):
        (cls / "export" / "sampler.json").write_text(text)
        with pytest.raises(KdgenError, match=match):
            OnnxStudent(cls / "export" / "student.onnx")


@pytest.mark.parametrize("kwargs,match", [  # a Python caller is told parameter names (the CLI says --quantize, ...)
    ({"format": "tflite"}, "unknown export format 'tflite'; use one of onnx, torchscript"),
    ({"format": "torchscript", "quantize": "int8"}, "^quantize applies to ONNX"),
    ({"format": "torchscript", "opset": 18}, "^opset applies to ONNX"),
    ({"quantize": "int8", "calibration": 0}, "^calibration must be at least 1 input, got 0"),
    ({"steps": 2}, "^steps applies to diffusion students; this student is a generator"),
    ({"quantize": "int4"}, "unknown quantize 'int4'"),
    ({"opset": 9}, r"^opset 9 is outside what the installed exporter can write \(18\.\."),
])
def test_bad_export_options_are_one_sentence(tmp_path, kwargs, match):
    run = _run_with(tmp_path, "generator")
    with pytest.raises(KdgenError, match=match):
        export(run, **kwargs)
    assert not (run / "export" / "student.onnx").exists()


def test_a_run_without_a_student_is_one_sentence(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(KdgenError, match="has no student/ to export; run `kdgen distill`"):
        export(tmp_path / "r")


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    run = _run_with(tmp_path, "generator")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(KdgenError, match=r"pip install 'kdgen\[export\]'"):
        export(run)


def test_the_onnx_parity_check_can_fail(tmp_path):
    """The check compares real numbers: a graph exported from other weights is caught."""
    from kdgen.export import Graph, _ort_runner, export_onnx, parity

    run = _run_with(tmp_path, "classifier")
    from kdgen.models.loading import load_model

    a = load_model(run / "student")
    export_onnx(Graph(a), tmp_path / "a.onnx")
    b = load_model(run / "student")
    with torch.no_grad():
        b.net[0].weight.mul_(1.01) if hasattr(b, "net") else next(b.parameters()).mul_(1.01)
    check = parity(Graph(b), _ort_runner(Graph(b), tmp_path / "a.onnx"))
    assert check["max_abs"] > check["tolerance"]
    assert np.isfinite(check["max_rel"])
