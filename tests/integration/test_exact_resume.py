"""Kill -9 a run (the trainer SIGKILLs itself at a chosen step), resume it, and the student is bit-identical to an
uninterrupted run: GAN, diffusion (inside a round and between rounds) and classifier runs."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from kdgen.train import KILL_AT_STEP

SLOW = ["train.checkpoint_every=2", "train.log_every=1", "train.sample_every=3", "eval.enabled=false"]


def _cli(args, kill_at=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_AT_STEP, None)
    if kill_at is not None:
        env[KILL_AT_STEP] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "kdgen.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600)


def _weights(folder):
    files = [f for f in ("model.safetensors", "diffusion_pytorch_model.safetensors") if (folder / f).is_file()]
    return load_file(str(folder / files[0]))


def _killed_then_resumed(args, out, kills):
    """Run into `out`, SIGKILLed at each step in `kills` in turn (each time resuming), then resume to the end."""
    for i, step in enumerate(kills):
        proc = _cli([*args, f"out={out}", *(["--resume"] if i else [])], kill_at=step)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    proc = _cli([*args, f"out={out}", "--resume"])
    assert proc.returncode == 0, proc.stderr[-2000:]


def _assert_identical(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "resumed student differs"


def test_a_gan_run_killed_twice_resumes_bit_identical(tiny_teacher, tmp_path):
    args = ["distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, tmp_path / "x", steps=8), *SLOW]
    args = [a for a in args if not a.startswith("out=")]
    assert _cli([*args, f"out={tmp_path / 'ref'}"]).returncode == 0
    _killed_then_resumed(args, tmp_path / "cut", kills=[3, 6])  # step 3 (mid-interval, checkpoint 2); step 6 (right after its checkpoint)
    _assert_identical(tmp_path / "ref" / "student", tmp_path / "cut" / "student")
    train = json.loads((tmp_path / "cut" / "metrics.json").read_text())["train"]  # the record sums the three segments
    assert [(g["from"], g["to"]) for g in train["segments"]] == [(0, 2), (2, 6), (6, 8)] and train["resumed_from"] == 6


def test_a_diffusion_run_killed_inside_and_at_the_end_of_a_round_resumes_bit_identical(tmp_path):
    from diffusion_fixtures import tiny_diffusion

    from kdgen.models.unet import save_diffusion

    save_diffusion(tiny_diffusion(steps=4), tmp_path / "teacher")
    args = ["distill", "configs/diffusion/mnist5k-progressive.yaml", f"teacher.path={tmp_path / 'teacher'}", "teacher.steps=4",
            "train.steps=4", "data.name=digits", "data.image_size=16", "data.batch_size=16", "methods.progressive.from_steps=4",
            "methods.progressive.to_steps=1", *SLOW]
    assert _cli([*args, f"out={tmp_path / 'ref'}"]).returncode == 0
    _killed_then_resumed(args, tmp_path / "cut", kills=[3, 4])  # inside round 1; then at round 1's last step, before its student
    _assert_identical(tmp_path / "ref" / "student", tmp_path / "cut" / "student")


@pytest.mark.parametrize("recipe", ["configs/classifier/digits-hinton.yaml"])
def test_a_classifier_run_killed_resumes_bit_identical(recipe, tmp_path):
    teacher = tmp_path / "t"
    assert _cli(["train-teacher", "configs/classifier/digits-teacher.yaml", f"out={teacher}", "train.steps=4"]).returncode == 0
    args = ["distill", recipe, f"teacher.path={teacher / 'teacher'}", "train.steps=6", "data.batch_size=32", *SLOW]
    assert _cli([*args, f"out={tmp_path / 'ref'}"]).returncode == 0
    _killed_then_resumed(args, tmp_path / "cut", kills=[3])
    _assert_identical(tmp_path / "ref" / "student", tmp_path / "cut" / "student")


@pytest.mark.slow  # ~20 s; the same resume path as the classifier test above, plus the transfer set's generator state
def test_a_classifier_run_on_a_generated_transfer_set_killed_resumes_bit_identical(tmp_path):
    """The transfer pool is drawn again from its seed, and the pool images each batch carries follow the restored streams."""
    teacher = tmp_path / "t"
    few = ["data.batch_size=16", "model.args={hidden: [16], dropout: 0.0}"]
    assert _cli(["train-teacher", "configs/classifier/mnist5k-teacher.yaml", f"out={teacher}", "train.steps=2", *few, *SLOW]).returncode == 0
    args = ["distill", "configs/classifier/mnist5k-hinton.yaml", f"teacher.path={teacher / 'teacher'}", "train.steps=6",
            "data.batch_size=16", "student.args={hidden: [8]}", "data.transfer=builtin:gan-mnist5k", "data.transfer_images=48",
            "data.transfer_batch=8", *SLOW]
    assert _cli([*args, f"out={tmp_path / 'ref'}"]).returncode == 0
    _killed_then_resumed(args, tmp_path / "cut", kills=[3])
    _assert_identical(tmp_path / "ref" / "student", tmp_path / "cut" / "student")
