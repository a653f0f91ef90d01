"""Integrity and the OS: every weights file and checkpoint kdgen writes carries a sha256 that every load checks; OS errors
a user can cause are sentences with exit 2; killed writes leave nothing behind on the next run; a moved run resumes where
it is; the train record sums every segment."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import tiny_overrides
from test_cli import run_cli

import kdgen
from kdgen.errors import KdgenError
from kdgen.io import checksum_path, file_sha256

FAST = {"eval.enabled": "false"}


def _flip_a_tensor_byte(path):
    """Change one byte well inside the tensor data (past the header), as a bad disk or a torn copy would."""
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def run(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=2, **FAST))
    return out


def test_every_weights_file_and_checkpoint_has_a_sha256_that_sha256sum_reads(run, tiny_teacher):
    for path in (run / "student" / "model.safetensors", run / "state" / "last.pt", tiny_teacher / "model.safetensors"):
        line = checksum_path(path).read_text()
        assert line == f"{file_sha256(path)}  {path.name}\n"
        assert subprocess.run(["sha256sum", "-c", checksum_path(path).name], cwd=path.parent, capture_output=True).returncode == 0


def test_flipped_bytes_in_a_student_or_a_checkpoint_are_a_sentence(run, tiny_teacher, monkeypatch, capsys):
    weights = run / "student" / "model.safetensors"
    _flip_a_tensor_byte(weights)
    with pytest.raises(KdgenError, match=r"model.safetensors' does not match the sha256 recorded in 'model.safetensors.sha256': "
                                         r"the file is damaged"):
        kdgen.load_model(run / "student")
    code, _, err = run_cli(monkeypatch, capsys, "sample", str(run / "student"), "-n", "4", "--out", str(run / "s.png"))
    assert code == 2 and "does not match the sha256" in err and not (run / "s.png").exists()
    _flip_a_tensor_byte(run / "state" / "last.pt")
    with pytest.raises(KdgenError, match=r"last.pt' does not match the sha256"):
        kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, run, steps=4, **FAST), resume=True)


def test_a_damaged_diffusion_model_and_onnx_graph_are_sentences(tmp_path):
    from diffusion_fixtures import tiny_diffusion

    from kdgen.models.unet import save_diffusion

    folder = save_diffusion(tiny_diffusion(steps=2), tmp_path / "ddpm")
    assert kdgen.load_model(folder) is not None  # it matches as written
    _flip_a_tensor_byte(folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(KdgenError, match="diffusion_pytorch_model.safetensors' does not match the sha256"):
        kdgen.load_model(folder)

    from kdgen.onnx_sampler import session

    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"not really a graph")
    checksum_path(graph).write_text(f"{'0' * 64}  g.onnx\n")
    with pytest.raises(KdgenError, match=r"g.onnx' does not match the sha256 .* export the run again"):
        session(graph)


def test_a_files_without_a_recorded_sha256_loads_unchecked(run):
    checksum_path(run / "student" / "model.safetensors").unlink()  # e.g. a user's own folder: nothing to check against
    assert kdgen.load_model(run / "student") is not None


@pytest.mark.parametrize("code, sentence", [(errno.ENOSPC, "the disk is full writing"),
                                            (errno.EROFS, "is on a read-only file system; give an out="),
                                            (errno.EACCES, "no permission to use")])
def test_os_errors_are_sentences_and_leave_the_run_as_it_was(run, tiny_teacher, monkeypatch, capsys, code, sentence):
    """A write that fails (kdgen runs as root here, so the OS's refusal is injected at fsync) ends in a sentence, exit 2, no
    traceback, and the run folder keeps its files whole: no temp file, the old checkpoint still matching its sha256."""
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".kdgen.lock"}

    def refuse(fd):
        raise OSError(code, os.strerror(code), str(run / "state" / "last.pt"))

    monkeypatch.setattr(os, "fsync", refuse)
    args = ["distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, run, steps=4, **FAST), "--resume"]
    exit_code, _, err = run_cli(monkeypatch, capsys, *args)
    assert exit_code == 2 and sentence in err and f"{run}/config.yaml" in err and "Traceback" not in err  # the first write: named
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".kdgen.lock"}
    assert after == before  # every file whole and unchanged, no temp file beside them


def test_a_folder_where_a_file_should_go_is_a_sentence(run, monkeypatch, capsys):
    (run / "grid.png").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "sample", str(run / "student"), "-n", "4", "--out", str(run / "grid.png"))
    assert code == 2 and "Traceback" not in err and "grid.png" in err and "folder" in err


def test_temp_files_of_killed_writes_are_cleaned_and_a_moved_run_resumes_where_it_is(run, tiny_teacher, tmp_path):
    (run / "state" / ".last.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    (run / ".student.x8a1.tmp").mkdir()
    (run / ".student.x8a1.tmp" / "model.safetensors").write_bytes(b"half")
    moved = tmp_path / "elsewhere"
    shutil.move(run, moved)
    res = kdgen.distill(str(moved / "config.yaml"), ["train.steps=4"], resume=True)  # the recipe it wrote names the old path
    assert res.out == moved and not run.exists()
    assert not list(moved.rglob("*.tmp"))
    train = json.loads((moved / "metrics.json").read_text())["train"]
    assert train["steps"] == 4 and train["resumed_from"] == 2
    assert [(s["from"], s["to"]) for s in train["segments"]] == [(0, 2), (2, 4)]  # every segment, summed
    assert train["seconds"] == pytest.approx(sum(s["seconds"] for s in train["segments"]), abs=0.11) and train["seconds"] > 0
    assert kdgen.load_model(moved / "student") is not None and torch.load(moved / "state" / "last.pt", weights_only=True)["step"] == 4
