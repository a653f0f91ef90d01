"""train-teacher and train-features through the CLI at tiny size; their outputs feed distill."""

import json
import sys

from kdgen.io import load_model

from test_cli import run_cli


def test_train_teacher_then_distill_from_it(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 't'}",
                             "train.steps=3", "data.batch_size=16", "model.args.base_width=8", "model.args.z_dim=16")
    assert code == 0, err
    teacher = tmp_path / "t" / "teacher"
    assert load_model(teacher).z_dim == 16 and load_model(teacher / "discriminator") is not None
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["train"]["steps"] == 3
    code, out, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", f"teacher.path={teacher}",
                             f"out={tmp_path / 'd'}", "train.steps=2", "data.batch_size=16", "eval.enabled=false",
                             "methods.adversarial.init=teacher")
    assert code == 0, err and (tmp_path / "d" / "student" / "model.json").is_file()


def test_train_features_reports_accuracy(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/mnist5k.yaml", f"out={tmp_path / 'f'}",
                             "data.name=digits", "train.steps=30", "data.batch_size=32", "model.args.width=8")
    assert code == 0, err
    acc = json.loads((tmp_path / "f" / "metrics.json").read_text())["test_accuracy"]
    assert "test accuracy" in out and acc > 0.2  # 30 steps on digits: well above chance (0.1)
    assert load_model(tmp_path / "f" / "featnet").channels == 1


def test_recipe_for_another_task_is_refused(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path}")
    assert code == 2 and "run `kdgen train-teacher` with it" in err
