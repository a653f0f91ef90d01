"""Speed and scale settings, through accelerate: bf16 autocast, gradient accumulation, several processes under torchrun
(2 CPU processes, gloo), a resume at another world size, compile and channels_last. Equivalences are measured on a
classifier run (Hinton KD on digits: no random draws, an MLP without batch statistics), whose steps at the same global
batch differ only by float rounding however the batch is split."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import kdgen
from kdgen.errors import KdgenError

QUIET = ["train.checkpoint_every=2", "train.log_every=1", "train.sample_every=100", "eval.enabled=false"]


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "t"
    kdgen.train_teacher("configs/classifier/digits-teacher.yaml", [f"out={out}", "train.steps=3", "data.batch_size=32",
                                                                    "model.args={hidden: [32], dropout: 0.0}", *QUIET])
    return out / "teacher"


def _distill_args(teacher, out, batch, *extra):
    return ["configs/classifier/digits-hinton.yaml", [f"teacher.path={teacher}", f"out={out}", f"data.batch_size={batch}",
                                                      "student.args={hidden: [16], dropout: 0.0}", *QUIET, *extra]]


def _torchrun(teacher, out, batch, *extra, resume=False):
    recipe, overrides = _distill_args(teacher, out, batch, *extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdgen.cli", "distill", recipe,
           *overrides, *(["--resume"] if resume else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())["train"]


def _weights(run):
    return load_file(str(run / "student" / "model.safetensors"))


def _max_diff(a, b):
    wa, wb = _weights(a), _weights(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_the_same_global_batch_trains_the_same_student_however_it_is_split(digits_teacher, tmp_path):
    """One process at batch 32; one at 16 x grad_accum 2; two processes at 16 each (torchrun). The two-process run's
    ranks hold identical parameters, and its record says how it ran."""
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "one", 32, "train.steps=4"))
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "accum", 16, "train.steps=4", "train.grad_accum=2"))
    train = _torchrun(digits_teacher, tmp_path / "ddp", 16, "train.steps=4")
    assert train["processes"] == 2 and train["ranks_max_abs_diff"] == 0.0 and train["threads"] == 1
    assert json.loads((tmp_path / "accum" / "metrics.json").read_text())["train"]["grad_accum"] == 2
    assert _max_diff(tmp_path / "one", tmp_path / "accum") < 1e-5
    assert _max_diff(tmp_path / "one", tmp_path / "ddp") < 1e-5


def test_a_run_resumes_at_another_world_size_where_it_stopped(digits_teacher, tmp_path):
    """Two processes for 2 steps, then one process for 2 more, equals one process throughout at the same global batches
    (grad_accum 2, then 1): the checkpoint's data position is in images, not in one world size's batches."""
    _torchrun(digits_teacher, tmp_path / "cut", 16, "train.steps=2")
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "cut", 16, "train.steps=4"), resume=True)
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "ref", 16, "train.steps=2", "train.grad_accum=2"))
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "ref", 16, "train.steps=4", "train.grad_accum=1"), resume=True)
    train = json.loads((tmp_path / "cut" / "metrics.json").read_text())["train"]
    assert [(s["from"], s["to"], s["processes"]) for s in train["segments"]] == [(0, 2, 2), (2, 4, 1)]
    assert _max_diff(tmp_path / "cut", tmp_path / "ref") < 1e-5


def test_bf16_on_cpu_trains_and_fp16_needs_a_gpu(digits_teacher, tmp_path):
    kdgen.distill(*_distill_args(digits_teacher, tmp_path / "fp32", 32, "train.steps=3"))
    res = kdgen.distill(*_distill_args(digits_teacher, tmp_path / "bf16", 32, "train.steps=3", "train.mixed_precision=bf16"))
    assert res.metrics["train"]["mixed_precision"] == "bf16"
    w = _weights(tmp_path / "bf16")
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in w.values())  # fp32 weights, bf16 arithmetic
    assert 0 < _max_diff(tmp_path / "fp32", tmp_path / "bf16") < 0.05  # rounding moved it a little, not a lot
    if not torch.cuda.is_available():
        with pytest.raises(KdgenError, match="train.mixed_precision=fp16 needs a GPU"):
            kdgen.distill(*_distill_args(digits_teacher, tmp_path / "fp16", 32, "train.steps=1", "train.mixed_precision=fp16"))


@pytest.mark.slow  # ~50 s of compiling on CPU; tests/integration/test_gpu_bench.py compiles a classifier run in the main suite
def test_channels_last_and_compile_change_speed_not_the_saved_model(tiny_teacher, tmp_path):
    """A GAN run with channels_last and torch.compile saves a student with the same tensor names, reloadable as usual."""
    from conftest import tiny_overrides

    res = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, tmp_path / "c", steps=2, **{
        "eval.enabled": "false", "train.channels_last": "true", "train.compile": "true"}))
    plain = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, tmp_path / "p", steps=2, **{"eval.enabled": "false"}))
    assert res.metrics["train"]["compile"] is True and res.metrics["train"]["channels_last"] is True
    assert _weights(tmp_path / "c").keys() == _weights(tmp_path / "p").keys()
    assert kdgen.load_model(tmp_path / "c" / "student") is not None
    assert plain.metrics["train"]["compile"] is False


def test_channels_last_trains_and_saves_an_ordinary_student(tiny_teacher, tmp_path):
    from conftest import tiny_overrides

    res = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, tmp_path / "c", steps=2, **{
        "eval.enabled": "false", "train.channels_last": "true"}))
    assert res.metrics["train"]["channels_last"] is True
    convs = [p for p in res.model.parameters() if p.dim() == 4 and p.shape[2] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)  # trained so
    student = kdgen.load_model(tmp_path / "c" / "student")
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), res.model.state_dict().values()))  # saved whole
