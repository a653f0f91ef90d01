"""`kdgen export`, `kdgen bench-latency` and `kdgen sample --onnx` on real tiny runs made by `kdgen distill`:
a GAN student (int8 dynamic + static with FID re-measured, TorchScript, latency rows, ONNX samples equal
to PyTorch's), a consistency diffusion student and a classifier; and the user errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image
from test_cli import run_cli
from test_diffusion_cli import FAST, SMALL_EVAL, TINY_UNET


@pytest.fixture(scope="module")
def gan_run(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "gan"
    proc = subprocess.run([sys.executable, "-m", "kdgen.cli", "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out, steps=2)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_export_onnx_int8_measures_every_variant_and_reports_it(gan_run, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "export", gan_run, "--quantize", "int8", "--calibration", "64")
    assert code == 0, err
    assert "onnxruntime int8 static" in out and "max abs error vs PyTorch" in out
    block = json.loads((gan_run / "metrics.json").read_text())["export"]["onnx"]
    assert block["parity"]["max_abs"] <= 1e-4 and block["kind"] == "generator"
    q = block["quality"]
    assert set(q) == {"pytorch", "onnx_fp32", "int8_dynamic", "int8_static"}
    assert abs(q["onnx_fp32"]["fid"] - q["pytorch"]["fid"]) < 1e-2 * q["pytorch"]["fid"]
    assert q["pytorch"]["fid"] == pytest.approx(json.loads((gan_run / "metrics.json").read_text())["student"]["fid"], rel=1e-4)
    for kind in ("dynamic", "static"):
        rec = block["int8"][kind]
        assert (gan_run / rec["file"]).is_file() and rec["int8_nodes"] > 0 and rec["vs_pytorch"]["max_abs"] > 0
    assert block["int8"]["static"]["bytes"] < block["bytes"]  # int8 weights are smaller
    assert "deployment: export, int8, latency" in (gan_run / "report.html").read_text()
    assert block["samples"]["panels"] == ["pytorch", "onnx_fp32", "int8_dynamic", "int8_static"]
    assert Image.open(gan_run / "export" / "samples.png").width > 4 * 6 * 28


def test_torchscript_then_bench_latency_times_every_runtime(gan_run, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "export", gan_run, "--no-quality")[0] == 0
    assert not (gan_run / "export" / "student.int8-static.onnx").exists()  # a plain re-export drops the old int8 graphs
    code, out, err = run_cli(monkeypatch, capsys, "export", gan_run, "--format", "torchscript")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "bench-latency", gan_run, "--repeats", "3")
    assert code == 0, err
    lat = json.loads((gan_run / "metrics.json").read_text())["latency"]
    assert set(lat["rows"]) == {"teacher_eager", "student_eager", "student_torchscript", "student_onnx_fp32"}
    for row in lat["rows"].values():
        assert set(row) == {"b1", "b64"} and all(r["ms"] > 0 and r["images_per_s"] > 0 for r in row.values())
        assert row["b64"]["images_per_s"] == pytest.approx(64_000 / row["b64"]["ms"])
    assert lat["speedup_vs_teacher_eager"]["teacher_eager"]["b1"] == 1.0
    assert "student, onnxruntime fp32" in out and "latency where it runs" in (gan_run / "report.html").read_text()


def _png(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_sample_onnx_draws_the_pytorch_students_images(gan_run, tmp_path, monkeypatch, capsys):
    if not (gan_run / "export" / "student.onnx").is_file():
        assert run_cli(monkeypatch, capsys, "export", gan_run, "--no-quality")[0] == 0
    assert run_cli(monkeypatch, capsys, "sample", gan_run / "student", "-n", "16", "--seed", "5", "--out", tmp_path / "pt.png")[0] == 0
    code, out, err = run_cli(monkeypatch, capsys, "sample", "--onnx", gan_run / "export" / "student.onnx", "-n", "16", "--seed", "5",
                             "--out", tmp_path / "ort.png")
    assert code == 0 and "onnxruntime" in out, err
    assert np.abs(_png(tmp_path / "pt.png") - _png(tmp_path / "ort.png")).max() <= 1


def test_diffusion_student_exports_and_samples_in_onnxruntime(tmp_path, monkeypatch, capsys):
    from kdgen.api import train_teacher

    train_teacher("configs/diffusion/mnist5k-ddpm.yaml", [f"out={tmp_path / 't'}", "train.steps=2", "data.name=digits", "data.image_size=16",
                                                          TINY_UNET, "model.args.steps=4", *FAST])
    run = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/diffusion/mnist5k-consistency.yaml", f"teacher.path={tmp_path / 't' / 'teacher'}",
                           "teacher.steps=4", f"out={run}", "train.steps=2", "data.name=digits", *FAST, *SMALL_EVAL,
                           "methods.consistency.solver_steps=8", "methods.consistency.steps=2")
    assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "export", run, "--quantize", "int8", "--calibration", "32")
    assert code == 0, err
    block = json.loads((run / "metrics.json").read_text())["export"]["onnx"]
    assert block["sampler_parity"]["max_abs"] <= 1e-3 and block["sampler_parity"]["steps"] == 2
    assert block["quality"]["onnx_fp32"]["fid"] == pytest.approx(block["quality"]["pytorch"]["fid"], rel=1e-3)
    assert run_cli(monkeypatch, capsys, "sample", run / "student", "-n", "9", "--out", tmp_path / "pt.png")[0] == 0
    assert run_cli(monkeypatch, capsys, "sample", "--onnx", run / "export" / "student.onnx", "-n", "9", "--out", tmp_path / "ort.png")[0] == 0
    assert np.abs(_png(tmp_path / "pt.png") - _png(tmp_path / "ort.png")).max() <= 1
    code, _, err = run_cli(monkeypatch, capsys, "sample", "--onnx", run / "export" / "student.onnx", "--steps", "3")
    assert code == 2 and "runs its recorded 2 step(s)" in err


def test_classifier_exports_logits_and_keeps_its_accuracy(tmp_path, monkeypatch, capsys):
    from kdgen.api import distill, train_teacher

    train_teacher("configs/classifier/digits-teacher.yaml", [f"out={tmp_path / 't'}", "model={family: cnn, args: {widths: [8, 16]}}",
                                                             "train.steps=20", *FAST])
    run = distill("configs/classifier/digits-hinton.yaml", [f"teacher.path={tmp_path / 't' / 'teacher'}", f"out={tmp_path / 'run'}",
                                                            "train.steps=20", *FAST]).out
    code, out, err = run_cli(monkeypatch, capsys, "export", run, "--quantize", "int8", "--calibration", "64")
    assert code == 0, err
    q = json.loads((run / "metrics.json").read_text())["export"]["onnx"]["quality"]
    assert q["onnx_fp32"]["accuracy"] == q["pytorch"]["accuracy"] > 0.2
    assert abs(q["int8_static"]["accuracy"] - q["pytorch"]["accuracy"]) < 0.1
    code, _, err = run_cli(monkeypatch, capsys, "sample", "--onnx", run / "export" / "student.onnx")
    assert code == 2 and "exported classifier, which makes no images" in err


@pytest.mark.parametrize("args,message", [
    (["export", "{run}", "--format", "tflite"], "unknown export format 'tflite'; use one of onnx, torchscript"),
    (["export", "{run}", "--opset", "9"], "--opset 9 is outside what the installed exporter can write"),
    (["export", "{empty}"], "has no student/ to export; run `kdgen distill` into it first"),
    (["bench-latency", "{empty}"], "has no student/ to export"),
    (["sample", "--onnx", "{empty}/student.onnx"], "does not exist; export the run first"),
    (["sample"], "give either a model"),
])
def test_export_user_errors_are_one_sentence_exit_2(gan_run, tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(run=gan_run, empty=tmp_path / "empty") for a in args]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_bench_latency_before_export_says_what_to_run(tiny_teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    assert run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out, steps=1),
                   "eval.enabled=false")[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "bench-latency", out)
    assert code == 2 and f"run `kdgen export {out}` first" in err
