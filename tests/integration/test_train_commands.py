"""train-teacher and train-features through the CLI at tiny size; their outputs feed distill."""

import json
import sys

from test_cli import run_cli

from kdgen.models.loading import load_model


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
    assert code == 0, err
    assert (tmp_path / "d" / "student" / "model.json").is_file()


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


def test_two_process_torchrun_distill(tiny_teacher, tmp_path):
    """The same trainer under torchrun (gloo, 2 CPU processes): both ranks train, rank 0 saves."""
    import subprocess

    from conftest import tiny_overrides

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdgen.cli", "distill",
           "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out, steps=4, **{"eval.enabled": "false"})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "terminate called" not in proc.stderr, proc.stderr[-3000:]
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["steps"] == 4 and train["processes"] == 2  # one gloo group, not two lone runs
    assert load_model(out / "student") is not None


def test_distill_on_a_folder_of_images(tiny_teacher, tmp_path, monkeypatch, capsys, caplog):
    """folder:PATH data is read at the teacher's 28x28 grey (kdgen says so); FID uses the folder's seeded held-out split, in a
    feature space the user must name for a folder (here the digit net, allowed with a caveat)."""
    import numpy as np
    from conftest import tiny_overrides
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / f"{i}.png")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml",
                           *tiny_overrides(tiny_teacher, tmp_path / "run", steps=2), f"data.name=folder:{tmp_path / 'imgs'}",
                           "data.test_fraction=0.25", "eval.features=builtin:featnet-mnist5k", "eval.allow_feature_mismatch=true")
    assert code == 0, err
    assert "the folder's images are 36 px with 3 channel(s); the teacher takes 28 px with 1" in caplog.text
    p = json.loads((tmp_path / "run" / "metrics.json").read_text())["protocol"]
    assert p["reference"].endswith("test split") and p["reference_count"] + p["split"]["train_count"] == 40 and p["reference_count"] > 5
    assert any("trained on mnist5k, not on the measured data folder:" in c for c in p["caveats"])


def test_train_teacher_bad_model_args_are_sentences(tmp_path, monkeypatch, capsys):
    for arg, pattern in (("data.image_size=30", "cannot build a 'dcgan-generator'"), ("model.args.z_dim=-1", "z_dim must be > 0")):
        code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path}", arg)
        assert code == 2 and pattern in err and "Traceback" not in err


def test_train_features_channel_mismatch_is_a_sentence(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/mnist5k.yaml", f"out={tmp_path}", "model.args.channels=3")
    assert code == 2 and "model.args.channels=3" in err


def test_the_cli_closes_a_process_group_before_exit(tmp_path, monkeypatch, capsys):
    """A torchrun rank that leaves its gloo group open at exit can abort (SIGABRT, "terminate called without an active
    exception"); every command closes it, on success and on error."""
    import torch.distributed as dist
    from test_cli import run_cli

    for i, args in enumerate((["methods"], ["distill", str(tmp_path / "missing.yaml")])):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'pg{i}'}", rank=0, world_size=1)
        code, _, _ = run_cli(monkeypatch, capsys, *args)
        assert code == (0 if i == 0 else 2) and not dist.is_initialized()
