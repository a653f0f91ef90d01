"""A few-step CLI run of every classifier method on digits: train-teacher, distill, evaluate, report."""

import json

import pytest

from kdgen.methods import METHODS, method_kind

from .test_cli import run_cli

FAST = ["train.steps=6", "train.log_every=2", "train.checkpoint_every=100", "eval.latency_repeats=1"]
CNN_STUDENT = "student={init: random, family: cnn, args: {widths: [4, 8]}}"
METHOD_ARGS = {
    "hinton": "methods={hinton: {temperature: 4.0, alpha: 0.5}}",
    "dkd": "methods={dkd: {temperature: 4.0, warmup: 3}}",
    "fitnet": "methods={hinton: {alpha: 0.5}, fitnet: {weight: 0.5, student_layers: [blocks.1], teacher_layers: [blocks.1]}}",
    "attention": "methods={attention: {student_layers: [blocks.0, blocks.1], teacher_layers: [blocks.0, blocks.1]}}",
}


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("cls") / "teacher"
    proc = subprocess.run([sys.executable, "-m", "kdgen.cli", "train-teacher", "configs/classifier/digits-teacher.yaml", f"out={out}",
                           "model={family: cnn, args: {widths: [8, 16]}}", "data.shift=1", *FAST], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_train_teacher_writes_a_measured_classifier(digits_teacher):
    metrics = json.loads((digits_teacher / "metrics.json").read_text())
    meta = json.loads((digits_teacher / "teacher" / "model.json").read_text())
    assert meta["family"] == "cnn" and meta["args"]["num_classes"] == 10 and meta["args"]["image_size"] == 8
    assert 0 <= metrics["teacher"]["accuracy"] <= 1 and len(metrics["teacher"]["confusion"]) == 10 and metrics["teacher"]["macs"] > 0


def test_every_classifier_method_has_a_cli_case():
    assert sorted(METHOD_ARGS) == sorted(n for n in METHODS.names() if method_kind(n) == "classifier")


@pytest.mark.parametrize("name", sorted(METHOD_ARGS))
def test_distill_each_method_on_digits(name, digits_teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / name
    code, stdout, err = run_cli(monkeypatch, capsys, "distill", "configs/classifier/digits-hinton.yaml", f"out={out}",
                                f"teacher.path={digits_teacher}/teacher", CNN_STUDENT, METHOD_ARGS[name], *FAST)
    assert code == 0, err
    assert "| test errors |" in stdout and "| agreement with teacher |" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["student"]["params"] < m["teacher"]["params"] and 0 <= m["student"]["agreement"] <= 1
    assert sum(map(sum, m["student"]["confusion"])) == m["protocol"]["reference_count"] == 360
    assert (out / "plots" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert 'alt="confusion matrices"' in (out / "report.html").read_text()


def test_evaluate_remeasures_a_classifier_run_and_one_model(digits_teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/classifier/digits-hinton.yaml", f"out={out}",
                           f"teacher.path={digits_teacher}/teacher", *FAST)
    assert code == 0, err
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", out)
    assert code == 0, err
    assert "| accuracy |" in stdout
    assert "train" in json.loads((out / "metrics.json").read_text())
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", out / "student", "--data", "digits", "--out", tmp_path / "one")
    assert code == 0, err
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["model"]["family"] == "mlp"
    code, stdout, err = run_cli(monkeypatch, capsys, "compare", out, "--out", tmp_path / "cmp")
    assert code == 0, err
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| test errors | accuracy |" in md and "| run | student |" in md and (tmp_path / "cmp" / "pareto.png").is_file()


@pytest.mark.parametrize("extra, pattern", [
    (["student.args={num_classes: 5}"], r"student.args.num_classes=5 but the teacher has 10 classes"),
    (["methods={hinton: {}, output: {}}"], r"distil classifiers and \['output'\] GAN loss terms"),
    (["methods={fitnet: {student_layers: [blocks.9], teacher_layers: [blocks.1]}}", CNN_STUDENT], r"no layer 'blocks.9'; nearest real names"),
    (["methods.hinton.temperature=-1"], r"'methods.hinton.temperature' must be > 0"),
])
def test_classifier_user_errors_are_one_sentence(extra, pattern, digits_teacher, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/classifier/digits-hinton.yaml", f"out={tmp_path / 'r'}",
                           f"teacher.path={digits_teacher}/teacher", *FAST, *extra)
    assert code == 2 and "Traceback" not in err
    import re

    assert re.search(pattern, err), err


def _teacher_then_student(run, tmp_path, dataset: str, teacher_model: str, steps: int, *distill_args: str) -> str:
    """train-teacher (configs/classifier/DATASET-teacher.yaml, TEACHER_MODEL) into tmp/t, then distill
    (DATASET-hinton.yaml) into tmp/s, a few steps each with batch 16; the distill run's stdout."""
    few = [f"train.steps={steps}", "data.batch_size=16", *FAST[1:]]
    code, _, err = run("train-teacher", f"configs/classifier/{dataset}-teacher.yaml", f"out={tmp_path / 't'}", teacher_model, *few)
    assert code == 0, err
    code, stdout, err = run("distill", f"configs/classifier/{dataset}-hinton.yaml", f"out={tmp_path / 's'}",
                            f"teacher.path={tmp_path / 't' / 'teacher'}", *few, *distill_args)
    assert code == 0, err
    return stdout


def test_resnet_teacher_distils_into_a_cnn_student_on_digits(tmp_path, monkeypatch, capsys):
    """A ResNet-18 teacher (train-teacher) into a small CNN student (hinton + attention on layer1/layer2), a few steps each."""
    stdout = _teacher_then_student(lambda *a: run_cli(monkeypatch, capsys, *a), tmp_path, "digits", "model={family: resnet, args: {arch: resnet18}}", 3,
                                   CNN_STUDENT, "methods={hinton: {alpha: 0.5}, attention: {student_layers: [blocks.0, blocks.1], teacher_layers: [layer1, layer2]}}")
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert json.loads((tmp_path / "t" / "teacher" / "model.json").read_text())["family"] == "resnet" and m["train"]["steps"] == 3
    assert m["student"]["params"] * 100 < m["teacher"]["params"] and sum(map(sum, m["student"]["confusion"])) == 360
    assert "| agreement with teacher |" in stdout and 0 <= m["student"]["agreement"] <= 1


def test_distill_with_a_generated_transfer_set_on_mnist5k(tmp_path, monkeypatch, capsys):
    """An mnist5k teacher distilled with builtin:gan-mnist5k's samples joining each batch; the pool's picture is written."""
    run = lambda *a: run_cli(monkeypatch, capsys, *a)  # noqa: E731
    _teacher_then_student(run, tmp_path, "mnist5k", "model.args={hidden: [32], dropout: 0.0}", 4, "student.args={hidden: [8, 8]}",
                          "data.transfer=builtin:gan-mnist5k", "data.transfer_images=40", "data.transfer_batch=8")
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert m["train"]["steps"] == 4 and sum(map(sum, m["student"]["confusion"])) == 500
    assert (tmp_path / "s" / "samples" / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    saved = (tmp_path / "s" / "config.yaml").read_text()
    assert "transfer: builtin:gan-mnist5k" in saved and "transfer_images: 40" in saved
    assert 'alt="transfer-set images"' in (tmp_path / "s" / "report.html").read_text()
    # the pool joined every training batch: 4 steps x 8 images
    assert m["train"]["transfer"] == {"generator": "builtin:gan-mnist5k", "pool": 40, "per_batch": 8, "images_seen": 32}
    # the same folder without a transfer set: no stale picture, no transfer section
    code, _, err = run("distill", "configs/classifier/mnist5k-hinton.yaml", f"out={tmp_path / 's'}", f"teacher.path={tmp_path / 't' / 'teacher'}",
                       "student.args={hidden: [8, 8]}", "train.steps=4", "data.batch_size=16", *FAST[1:], "--overwrite")
    assert code == 0, err
    assert not (tmp_path / "s" / "samples" / "transfer.png").exists() and "transfer" not in json.loads((tmp_path / "s" / "metrics.json").read_text())["train"]
    assert 'alt="transfer-set images"' not in (tmp_path / "s" / "report.html").read_text()


@pytest.mark.parametrize("cmd, extra, pattern", [
    ("distill", ["data.transfer=builtin:gan-mnist5k"], r"makes 1x28x28 images but the teacher reads 1x8x8"),
    ("distill", ["data.transfer=builtin:featnet-mnist5k"], r"is a classifier, not a GAN generator"),
    ("distill", ["data.transfer=/no/such/gen"], r"data.transfer '/no/such/gen' does not exist"),
    ("distill", ["data.transfer=builtin:gan-mnist5k/discriminator"], r"is a 'dcgan-discriminator', not a GAN generator"),
    ("distill", ["data.transfer=builtin:ddpm-mnist5k"], r"is a diffusion model, not a GAN generator"),
    ("distill", ["data.transfer=builtin:gan-mnist5k", "methods={dkd: {}}"], r"data.transfer adds images without one"),
    ("distill", ["data.transfer_images=100"], r"data.transfer names none; set data.transfer"),
    ("train-teacher", ["data.transfer=builtin:gan-mnist5k"], r"`train-teacher` trains on the dataset alone - remove data.transfer"),
])
def test_transfer_set_errors_are_one_sentence(cmd, extra, pattern, digits_teacher, tmp_path, monkeypatch, capsys):
    recipe = "configs/classifier/digits-hinton.yaml" if cmd == "distill" else "configs/classifier/digits-teacher.yaml"
    code, _, err = run_cli(monkeypatch, capsys, cmd, recipe, f"out={tmp_path / 'r'}", f"teacher.path={digits_teacher}/teacher", *FAST, *extra)
    assert code == 2 and "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_transfer_set_with_a_gan_teacher_is_refused(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", f"out={tmp_path / 'r'}",
                           "data.transfer=builtin:gan-mnist5k", *FAST)
    assert code == 2 and "this teacher makes images - remove data.transfer" in err
