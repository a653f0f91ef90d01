"""The CLI as a user runs it: tiny teacher, a few steps, the run-folder contract, resume, and every user error."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_overrides

from kdgen.cli import main
from kdgen.models.loading import load_model


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["kdgen", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny_run(tiny_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    proc = subprocess.run(
        [sys.executable, "-m", "kdgen.cli", "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out, steps=4)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout, json.loads((out / "metrics.json").read_text())


def test_distill_writes_the_run_folder_contract(tiny_run):
    out, stdout, _ = tiny_run
    assert "| FID |" in stdout and f"run folder: {out}" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for who in ("teacher", "student"):
        m = metrics[who]
        assert {"fid", "kid", "params", "macs", "latency_ms", "file_bytes"} <= set(m)
        assert set(m["latency_ms"]) == {"b1", "b64"} and m["latency_ms"]["b1"] > 0
    assert metrics["student"]["macs"] < metrics["teacher"]["macs"] / 2
    p = metrics["protocol"]
    assert p["reference_count"] == 500 and p["generated_count"] == 64 and p["seeds"] == [0] and len(p["feature_net"]["sha256"]) == 64
    assert (out / "config.yaml").is_file() and (out / "samples" / "teacher_vs_student.png").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    student = load_model(out / "student")
    assert student(torch.randn(2, 16)).shape == (2, 1, 28, 28)


def test_resume_continues_from_the_saved_step(tiny_run, tiny_teacher, monkeypatch, capsys):
    out, _, _ = tiny_run
    before = torch.load(out / "state" / "last.pt", weights_only=True)["step"]
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml",
                           *tiny_overrides(tiny_teacher, out, steps=6, **{"eval.enabled": "false"}), "--resume")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert before == 4 and metrics["train"]["resumed_from"] == 4 and metrics["train"]["steps"] == 6
    assert torch.load(out / "state" / "last.pt", weights_only=True)["step"] == 6


def test_demo_command_runs_the_builtin_recipe_at_tiny_size(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "demo", "--out", tmp_path / "demo", "train.steps=2", "data.batch_size=16",
                             "eval.num_samples=64", "eval.latency_repeats=2", "train.sample_every=1")
    assert code == 0, err
    assert "| MACs / image |" in out and (tmp_path / "demo" / "student" / "model.safetensors").is_file()
    m = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert m["teacher"]["macs"] / m["student"]["macs"] >= 14  # width 0.25 of the shipped teacher


def _pickled_teacher(tmp_path, tiny_teacher):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_teacher, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "weights": "model.pt"}))
    torch.save({"w": torch.nn.Linear(2, 2)}, folder / "model.pt")  # a pickled module, not a state dict
    return folder


def _odd_format_teacher(tmp_path, tiny_teacher):
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(tiny_teacher, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "weights": "model.bin"}))
    (folder / "model.bin").write_bytes(b"\x00" * 16)
    return folder


BAD = {
    "unknown dataset": (["data.name=mnist6k"], r"unknown dataset 'mnist6k'.*choose one of"),
    "unknown method": (["methods.magic.weight=1"], r"unknown method 'magic'.*choose one of: adversarial, attention, consistency, dkd, feature"),
    "missing teacher": (["teacher.path=/nonexistent/teacher"], r"teacher '/nonexistent/teacher' does not exist"),
    "pickle as weights": ("pickled", r"holds pickled objects.*never unpickles"),
    "unknown file format": ("odd", r"unknown weight format '.bin'"),
    "image size mismatch": (["data.image_size=32"], r"data.image_size=32 does not match the model's image_size 28"),
    "channel mismatch": (["data.channels=3"], r"data.channels=3 does not match the model's channels 1"),
    "unknown layer": (["methods.feature.layers=[blocks.9]"], r"no layer 'blocks.9'; nearest real names"),
    "negative rate": (["train.lr=-0.1"], r"'train.lr' must be > 0"),
    "non-numeric weight": (["methods.output.weight=lots"], r"'methods.output.weight' must be float"),
    "negative weight": (["methods.adversarial.weight=-1"], r"'methods.adversarial.weight' must be >= 0"),
    "teacher is not a generator": ("disc", r"is a 'dcgan-discriminator', not an image generator"),
    "no shipped discriminator": (["methods.adversarial.init=teacher", "teacher.path=builtin:featnet-mnist5k"], r"not an image generator"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_user_errors_are_one_sentence_exit_2_and_lose_nothing(case, tiny_teacher, tmp_path, monkeypatch, capsys):
    extra, pattern = BAD[case]
    teacher = tiny_teacher
    if extra == "pickled":
        teacher, extra = _pickled_teacher(tmp_path, tiny_teacher), []
    elif extra == "odd":
        teacher, extra = _odd_format_teacher(tmp_path, tiny_teacher), []
    elif extra == "disc":
        teacher, extra = tiny_teacher / "discriminator", []
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    (out / "state" / "last.pt").write_bytes(b"earlier checkpoint")
    (out / "config.yaml").write_text("earlier config")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml",
                           *tiny_overrides(teacher, out), *extra, "--overwrite")  # even a replacing run keeps it when it fails to start
    import re

    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(pattern, err), err
    assert (out / "state" / "last.pt").read_bytes() == b"earlier checkpoint"
    assert (out / "config.yaml").read_text() == "earlier config"


def test_resume_from_a_corrupt_checkpoint_is_a_sentence_and_keeps_it(tiny_teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    (out / "state" / "last.pt").write_bytes(b"earlier checkpoint")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out), "--resume")
    assert code == 2 and "is corrupt or unreadable" in err and "Traceback" not in err
    assert (out / "state" / "last.pt").read_bytes() == b"earlier checkpoint"


def test_a_recipe_that_fails_to_build_keeps_the_runs_config(tiny_teacher, tmp_path, monkeypatch, capsys):
    """The perceptual term fails while the method is built - after the teacher and data loaded fine."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("earlier config")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out),
                           "methods.perceptual.features=builtin:gan-mnist5k")
    assert code == 2 and "is not a feature network" in err
    assert (out / "config.yaml").read_text() == "earlier config"


@pytest.mark.parametrize("command", ["demo", "distill", "train-teacher", "train-features", "evaluate", "report", "compare", "methods"])
def test_every_command_has_help(command, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
    assert code == 0 and "Usage" in out


def test_methods_lists_one_line_each(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "methods")
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ["adversarial", "attention", "consistency", "dkd", "feature", "fitnet", "hinton", "onestep", "output", "perceptual", "progressive", "structural", "truth"]


def test_evaluate_remeasures_a_run_and_keeps_training_record(tiny_run, monkeypatch, capsys):
    out, _, _ = tiny_run
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", out)
    assert code == 0, err
    assert "| FID |" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert "train" in metrics and metrics["student"]["fid"] > 0


def test_evaluate_refuses_a_folder_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", tmp_path)
    assert code == 2 and "is neither a finished kdgen run folder" in err


def test_tensorboard_holds_losses_samples_and_final_metrics(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, metrics = tiny_run
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/output", "loss/student", "loss/discriminator"} <= set(tags["scalars"])
    assert "samples/student" in tags["images"]
    fid = acc.Scalars("final/student_fid")[-1].value
    assert abs(fid - metrics["student"]["fid"]) < 1e-3 * max(1.0, abs(fid))
    assert acc.PluginTagToContent("hparams")  # the HParams record is there


def test_evaluate_seeds_and_saved_features_reproduce_fid_independently(tiny_run, tmp_path, monkeypatch, capsys):
    """FID recomputed with numpy/scipy from --save-features equals kdgen's; the same seeds give the same scores."""
    import numpy as np
    from scipy import linalg

    out, _, _ = tiny_run
    npz = tmp_path / "feats.npz"
    args = ("evaluate", out, "eval.num_samples=300", "--seeds", "0,1", "--save-features", npz)
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "±" in stdout and "| precision |" in stdout
    first = json.loads((out / "metrics.json").read_text())
    f = np.load(npz)
    assert list(f["seeds"]) == [0, 1] and f["real"].shape == (500, 128) and f["student_seed1"].shape == (300, 128)
    for who in ("teacher", "student"):
        a, b = f["real"].astype(np.float64), f[f"{who}_seed0"].astype(np.float64)
        c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        fid = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real))
        assert abs(fid - first[who]["fid_per_seed"][0]) < 1e-3 * fid
        assert 0 <= first[who]["precision"] <= 1 and 0 <= first[who]["coverage"] <= 1
    assert len(first["student"]["fidelity"]["psnr_db_per_image"]) == 300
    code, _, err = run_cli(monkeypatch, capsys, *args[:-2])  # again, same seeds
    again = json.loads((out / "metrics.json").read_text())
    assert code == 0 and again["student"]["fid_per_seed"] == first["student"]["fid_per_seed"]
    assert again["student"]["recall"] == first["student"]["recall"]


def test_evaluate_refuses_training_overrides(tiny_run, monkeypatch, capsys):
    out, _, _ = tiny_run
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", out, "train.steps=5")
    assert code == 2 and "evaluate takes eval.* overrides and data.on_corrupt" in err and "train.steps=5" in err


def test_report_and_compare_commands(tiny_run, tmp_path, monkeypatch, capsys):
    out, _, _ = tiny_run
    assert (out / "report.html").is_file()  # distill wrote it
    (out / "report.html").unlink()
    code, stdout, err = run_cli(monkeypatch, capsys, "report", out)
    assert code == 0, err
    assert (out / "report.html").is_file() and "<table" in (out / "report.html").read_text()
    code, stdout, err = run_cli(monkeypatch, capsys, "compare", out, out, "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "| student |" in stdout or "student" in stdout
    assert (tmp_path / "cmp" / "pareto.png").is_file() and (tmp_path / "cmp" / "compare.csv").read_text().count("\n") >= 5
    code, _, err = run_cli(monkeypatch, capsys, "compare", tmp_path / "nothing", "--out", tmp_path / "cmp2")
    assert code == 2 and "error: " in err


def test_inception_space_offline_is_one_sentence(tiny_run, tmp_path, monkeypatch, capsys):
    out, _, _ = tiny_run
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", out, "--inception-weights", tmp_path / "missing.pth")
    assert code == 2 and "Inception weights file" in err and "https://" in err
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", out, "--inception-weights", tmp_path / "bad.pth")
    assert code == 2 and "is not a valid Inception weights file" in err


def test_evaluate_one_classifier_and_one_generator(tiny_teacher, tmp_path, monkeypatch, capsys):
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", "builtin:featnet-mnist5k", "--out", tmp_path / "c")
    assert code == 0, err
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())["model"]
    assert m["accuracy"] > 0.95 and 0.9 < m["macro_f1"] <= 1 and len(m["per_class_accuracy"]) == 10 and "accuracy" in stdout
    code, stdout, err = run_cli(monkeypatch, capsys, "evaluate", tiny_teacher, "--out", tmp_path / "g", "eval.num_samples=64",
                                "eval.latency_repeats=2")
    assert code == 0, err
    g = json.loads((tmp_path / "g" / "metrics.json").read_text())["model"]
    assert g["fid"] > 0 and g["macs"] > 0 and "fid" in stdout


def test_output_paths_blocked_by_files_are_sentences(tiny_run, tiny_teacher, tmp_path, monkeypatch, capsys):
    out, _, _ = tiny_run
    blocker = tmp_path / "afile.txt"
    blocker.write_text("x")
    cases = [("distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, blocker)),
             ("compare", out, "--out", blocker),
             ("evaluate", out, "--save-features", tmp_path),
             ("evaluate", "builtin:featnet-mnist5k", "--data", f"folder:{tmp_path}")]
    for args in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, (args, err)


def test_bad_feature_net_fails_before_training(tiny_teacher, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml",
                           *tiny_overrides(tiny_teacher, tmp_path / "r"), f"eval.features={tmp_path / 'nothing'}")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "r" / "state").exists()  # no training happened


@pytest.mark.parametrize("args, line", [
    ([], "Commands"),  # no command: the help
    (["bogus"], "No such command 'bogus'"),
    (["demo", "--bogus"], "No such option: --bogus"),
    (["sample", "-n", "abc"], "Invalid value for '-n'"),
    (["sample", "--seed", "1.5"], "Invalid value for '--seed'"),
    (["distill"], "Missing argument 'config'"),
    (["data", "install"], "Missing argument 'name'"),
])
def test_usage_errors_print_the_usage_and_one_line_and_exit_2(args, line):
    """A real process each: typer's bundled click raises its own exception classes, which the CLI must still catch."""
    proc = subprocess.run([sys.executable, "-m", "kdgen.cli", *args], capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and line in text and "Usage" in text and "Traceback" not in text, text
