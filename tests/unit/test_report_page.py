"""report.html and compare_runs on real tiny run folders: self-contained page, missing pieces, CSV/markdown/Pareto."""

import base64
import csv
import io
import json
import re
import shutil

import pytest
from conftest import tiny_overrides
from PIL import Image

import kdgen
from kdgen.errors import KdgenError
from kdgen.report.compare import compare_runs
from kdgen.report.page import build_report
from kdgen.report.plots import pareto_front

DATA_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def runs(tiny_teacher, tmp_path_factory):
    """Two tiny distill runs: 4 steps at the demo width, 2 steps at width 0.5."""
    root = tmp_path_factory.mktemp("report")
    a = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, root / "a", steps=4)).out
    b = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, root / "b", steps=2, **{"student.width": 0.5})).out
    return a, b


def _copy(run, tmp_path):
    dst = tmp_path / run.name
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("state", "report.html"))
    return dst


def test_report_is_one_self_contained_page(runs):
    path = build_report(runs[0])
    html = path.read_text()
    assert path == runs[0] / "report.html"
    assert f"<title>kdgen report: {runs[0].name}</title>" in html
    assert '<table id="metrics">' in html and "<tr><th>FID</th>" in html and "student / teacher" in html
    assert "fidelity to teacher (PSNR dB)" in html
    images = DATA_IMG.findall(html)
    assert len(images) >= 3  # samples, training curves, Pareto
    for b64 in images:
        assert Image.open(io.BytesIO(base64.b64decode(b64))).width > 0
    assert "http://" not in html and "https://" not in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing loaded from anywhere else
    sha = json.loads((runs[0] / "metrics.json").read_text())["protocol"]["feature_net"]["sha256"]
    assert sha in html and "mnist5k test split" in html


def test_report_escapes_text(runs, tmp_path):
    run = _copy(runs[0], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["protocol"]["caveats"] = ["<script>alert(1)</script> & more"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = build_report(run).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_report_notes_missing_pieces_instead_of_failing(runs, tmp_path):
    run = _copy(runs[0], tmp_path)
    train = json.loads((run / "metrics.json").read_text())["train"]
    (run / "metrics.json").write_text(json.dumps({"train": train}))  # what an eval.enabled=false run writes
    shutil.rmtree(run / "tb")
    shutil.rmtree(run / "samples")
    html = build_report(run).read_text()
    assert "evaluation was disabled" in html and "No TensorBoard scalars" in html and "No samples/" in html
    assert "<table" not in html and not DATA_IMG.search(html)


def test_report_without_metrics_says_what_to_run(tmp_path):
    with pytest.raises(KdgenError, match="run `kdgen distill` or `kdgen evaluate`"):
        build_report(tmp_path)
    with pytest.raises(KdgenError, match="not a folder"):
        build_report(tmp_path / "missing")


def test_compare_two_runs(runs, tmp_path):
    result = compare_runs(list(runs), tmp_path / "cmp")
    rows = list(csv.DictReader(result["csv"].open()))
    assert len(rows) == 4
    assert [(r["run"], r["role"]) for r in rows] == [("a", "teacher"), ("a", "student"), ("b", "teacher"), ("b", "student")]
    assert all(float(r["fid_vs_teacher"]) == 1.0 for r in rows if r["role"] == "teacher")
    assert float(rows[1]["macs_vs_teacher"]) < float(rows[3]["macs_vs_teacher"]) < 1  # width 0.25 < width 0.5 < teacher
    md = result["markdown"]
    assert md == (tmp_path / "cmp" / "compare.md").read_text().strip()
    assert md.count("\n") == 5 and "| FID ± std |" in md and "| a | student |" in md
    assert {r["teacher"] for r in rows} == {str(runs[0].parent.parent / "teacher0" / "teacher")} or len({r["teacher"] for r in rows}) == 1
    assert "teacher" in rows[0]["teacher"] and rows[0]["space"].startswith("features sha256 ") and "(builtin:featnet-mnist5k)" in rows[0]["space"]
    with Image.open(result["pareto"]) as im:
        assert im.format == "PNG" and im.width > im.height


def test_compare_keeps_feature_spaces_apart(runs, tmp_path):
    """Runs measured in two feature spaces are refused (the sentence names both), or with separate=True kept in a table each."""
    other = _copy(runs[1], tmp_path)
    m = json.loads((other / "metrics.json").read_text())
    m["protocol"]["feature_net"] = {**m["protocol"]["feature_net"], "path": "inception:w.pth", "sha256": "ab" * 32}
    (other / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(KdgenError, match=r"measured in 2 different spaces.*inception:w.pth.*pass separate for one table"):
        compare_runs([runs[0], other], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    result = compare_runs([runs[0], other], tmp_path / "cmp", separate=True)
    assert result["markdown"].count("### Space") == 2 and len(result["pareto_all"]) == 2
    assert all(p.is_file() for p in result["pareto_all"])


def test_compare_refuses_a_folder_that_is_not_a_run(runs, tmp_path):
    with pytest.raises(KdgenError, match=re.escape(str(tmp_path / "nope"))):
        compare_runs([runs[0], tmp_path / "nope"], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()  # checked before anything is written


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 5.0), (1, 9.0), (3, 9.5), (5, 4.0), (5, 6.0), (20, 4.0)]
    assert pareto_front(pts) == [(1, 9.0), (5, 4.0)]
