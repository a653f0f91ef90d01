"""Run folders: one writer at a time (a lock naming the holder), stale locks taken over, refused resumes that name the keys."""

import json
import socket
import subprocess
import sys

import pytest
from conftest import tiny_overrides

import kdgen
from kdgen.errors import KdgenError
from kdgen.runs import LOCK


def test_a_second_writer_is_refused_naming_the_first(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "2026-12-01 10:00:00"}))
        with pytest.raises(KdgenError, match=rf"run folder '.*run' is in use by process {other.pid} on .* wait for it to finish"):
            kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=1, **{"eval.enabled": "false"}))
        assert not (out / "config.yaml").exists() and not (out / "state").exists()  # nothing written
    finally:
        other.kill()
        other.wait()
    # its process is gone: the lock is stale, the run goes ahead and leaves no lock behind
    kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=1, **{"eval.enabled": "false"}))
    assert (out / "student" / "model.json").is_file() and not (out / LOCK).exists()
    # export and video write into the run folder too: they wait their turn like training does
    from kdgen.video import video

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "2026-12-01 10:00:00"}))
        (tmp_path / "clip.mp4").write_bytes(b"x")
        for call in (lambda: kdgen.export(out, measure_quality=False), lambda: video(out, tmp_path / "clip.mp4")):
            with pytest.raises(KdgenError, match=rf"is in use by process {other.pid}"):
                call()
        assert not (out / "export").exists() and not (out / "video").exists()
    finally:
        other.kill()
        other.wait()


def test_a_refused_resume_names_the_keys_that_differ(tiny_teacher, tmp_path):
    out = tmp_path / "run"
    kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=2, **{"eval.enabled": "false"}))
    with pytest.raises(KdgenError, match=r"differs from .* beyond train.\* and eval.\*: student.init \(prune -> random\), "
                                         r"student.width \(0.25 -> 0.5\); resume with the same recipe"):
        kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=4, **{"eval.enabled": "false",
                      "student.width": 0.5, "student.init": "random"}), resume=True)
    assert not (out / LOCK).exists()  # a refusal releases the lock too


def test_a_finished_run_is_never_overwritten_without_overwrite(tiny_teacher, tmp_path, monkeypatch, capsys):
    from test_cli import run_cli

    out = tmp_path / "run"
    args = ["distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, out, steps=2, **{"eval.enabled": "false"})]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(monkeypatch, capsys, *args[:-1], "student.width=0.5")
    assert code == 2 and "already holds a finished run (student, state, metrics.json)" in err and "--overwrite to replace it" in err
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # untouched
    code, _, err = run_cli(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    assert before.keys() & {p.relative_to(out) for p in out.rglob("*") if p.is_file()}  # replaced: same layout, new files
    assert all(p.stat().st_mtime_ns != before[p.relative_to(out)] for p in (out / "student").iterdir())
    teacher = ["configs/gan/mnist5k-teacher.yaml", [f"out={tmp_path / 't'}", "train.steps=1", "data.batch_size=16", "model.args.base_width=8"]]
    kdgen.train_teacher(*teacher)
    with pytest.raises(KdgenError, match=r"already holds a finished run \(teacher, state, metrics.json\); pass resume to continue it"):
        kdgen.train_teacher(*teacher)  # the Python API names parameters, not flags
    assert kdgen.train_teacher(*teacher, overwrite=True).out == tmp_path / "t"
