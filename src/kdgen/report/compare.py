"""Several run folders side by side: compare.md, compare.csv and pareto.png in one output folder."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ..errors import KdgenError
from ..io import atomic_write_text, ensure_dir
from .page import read_metrics
from .plots import pareto, run_points

# (markdown header, csv header): the CSV keeps raw numbers, FID and its std in two columns
COLUMNS = [
    ("run", "run"), ("role", "role"), ("teacher", "teacher"), ("FID ± std", "fid"), (None, "fid_std"), ("KID x1000", "kid"),
    ("params", "params"), ("MACs / image", "macs"), ("latency b1 (ms)", "latency_b1_ms"),
    ("latency b64 (ms)", "latency_b64_ms"), ("FID / teacher", "fid_vs_teacher"), ("MACs / teacher", "macs_vs_teacher"),
]


def _load(run: Path) -> dict:
    """metrics.json of a run folder that has teacher and student measurements; KdgenError naming the path otherwise."""
    run = Path(run).expanduser()
    if not (run / "metrics.json").is_file():
        raise KdgenError(f"'{run}' is not a kdgen run folder (no metrics.json); give folders written by `kdgen distill`")
    metrics = read_metrics(run)
    if not metrics.get("teacher") or not metrics.get("student"):
        raise KdgenError(f"'{run}' has no teacher/student measurements (evaluation was disabled); run `kdgen evaluate {run}` first")
    return metrics


def _labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [r.resolve().name for r in runs]
    return [name if names.count(name) == 1 else str(r) for name, r in zip(names, runs)]


def _ratio(value, base):
    return value / base if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base else None


def _record(label: str, role: str, m: dict, teacher: dict) -> dict:
    lat = m.get("latency_ms") or {}
    return {"run": label, "role": role, "fid": m.get("fid"), "fid_std": m.get("fid_std"),
            "n_seeds": len(m.get("fid_per_seed") or []), "kid": m.get("kid"),
            "params": m.get("params"), "macs": m.get("macs"), "latency_b1_ms": lat.get("b1"), "latency_b64_ms": lat.get("b64"),
            "fid_vs_teacher": _ratio(m.get("fid"), teacher.get("fid")), "macs_vs_teacher": _ratio(m.get("macs"), teacher.get("macs"))}


def _md_cells(r: dict) -> list[str]:
    def num(v, fmt):
        return "-" if v is None else fmt.format(v)

    fid = num(r["fid"], "{:.2f}") + (f" ± {r['fid_std']:.2f}" if r["fid_std"] is not None and r["n_seeds"] > 1 else "")
    return [r["run"].replace("|", "\\|"), r["role"], r.get("teacher", "-").replace("|", "\\|"), fid,
            num(None if r["kid"] is None else r["kid"] * 1000, "{:.2f}"),
            num(r["params"], "{:,}"), num(r["macs"], "{:,}"), num(r["latency_b1_ms"], "{:.2f}"),
            num(r["latency_b64_ms"], "{:.2f}"), num(r["fid_vs_teacher"], "{:.3f}x"), num(r["macs_vs_teacher"], "{:.3f}x")]


CLASSIFIER_COLUMNS = [
    ("run", "run"), ("role", "role"), ("teacher", "teacher"), ("test errors", "errors"), ("accuracy", "accuracy"), ("macro-F1", "macro_f1"),
    ("agreement", "agreement"), ("params", "params"), ("MACs / image", "macs"), ("latency b1 (ms)", "latency_b1_ms"),
    ("latency b64 (ms)", "latency_b64_ms"), ("errors / teacher", "errors_vs_teacher"), ("MACs / teacher", "macs_vs_teacher"),
]
CLASSIFIER_FORMATS = {"errors": "{:,}", "accuracy": "{:.4f}", "macro_f1": "{:.4f}", "agreement": "{:.4f}", "params": "{:,}",
                      "macs": "{:,}", "latency_b1_ms": "{:.2f}", "latency_b64_ms": "{:.2f}", "errors_vs_teacher": "{:.3f}x",
                      "macs_vs_teacher": "{:.3f}x"}


def is_classifier_run(metrics: dict) -> bool:
    return (metrics.get("protocol") or {}).get("kind") == "classifier"


def _classifier_record(label: str, role: str, m: dict, teacher: dict) -> dict:
    lat = m.get("latency_ms") or {}
    return {"run": label, "role": role, "errors": m.get("errors"), "accuracy": m.get("accuracy"), "macro_f1": m.get("macro_f1"),
            "agreement": m.get("agreement"), "params": m.get("params"), "macs": m.get("macs"), "latency_b1_ms": lat.get("b1"),
            "latency_b64_ms": lat.get("b64"), "errors_vs_teacher": _ratio(m.get("errors"), teacher.get("errors")),
            "macs_vs_teacher": _ratio(m.get("macs"), teacher.get("macs"))}


def classifier_markdown(records: list[dict]) -> str:
    lines = ["| " + " | ".join(md for md, _ in CLASSIFIER_COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(CLASSIFIER_COLUMNS) - 3)]
    for r in records:
        cells = [r["run"].replace("|", "\\|"), r["role"], r.get("teacher", "-").replace("|", "\\|")]
        cells += ["-" if r[key] is None else CLASSIFIER_FORMATS[key].format(r[key]) for _, key in CLASSIFIER_COLUMNS[3:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(records: list[dict]) -> str:
    headers = [md for md, _ in COLUMNS if md]
    lines = ["| " + " | ".join(headers) + " |", "|---|---|---|" + "---:|" * (len(headers) - 3)]
    lines += ["| " + " | ".join(_md_cells(r)) + " |" for r in records]
    return "\n".join(lines)


def to_csv(records: list[dict], columns: list[tuple] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[key for _, key in columns], lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    return buf.getvalue()


def space_of(metrics: dict) -> str:
    """Where a run's numbers live: the feature net (by sha256) and the reference set; runs in different spaces do not compare."""
    p = metrics.get("protocol") or {}
    split = (p.get("split") or {}).get("test_files_sha256")
    where = f"{p.get('reference', '?')} ({p.get('reference_count', '?')} images{', split ' + split[:12] if split else ''})"
    if is_classifier_run(metrics):
        return f"accuracy on {where}"
    f = p.get("feature_net") or {}  # the net by its sha256 (one file reached by two paths is one space); FID's bias grows as N shrinks
    return (f"features sha256 {str(f.get('sha256', '?'))[:12]} ({f.get('path', '?')}), reference {where}, "
            f"{p.get('generated_count', '?')} generated, {p.get('image_size', '?')} px")


def teacher_of(run: Path) -> str:
    """The teacher a run distilled, as its config.yaml names it (path or class), for labels."""
    import yaml

    try:
        t = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("teacher") or {}
    except (OSError, yaml.YAMLError):
        return "?"
    return str(t.get("path") or t.get("class") or "?")


def compare_runs(runs: list[Path], out: Path, *, separate: bool = False) -> dict:
    """A row per run's teacher and per run's student (ratios vs that run's teacher), and one Pareto plot of them all.

    Runs measured in different feature spaces or against different references are refused, or with `separate`, put in
    one table and one Pareto plot per space. Teachers are labelled by their path.
    Writes out/compare.md, out/compare.csv and out/pareto.png (pareto-2.png, ... for further spaces); returns
    {"markdown", "csv", "pareto", "spaces"}.
    """
    if not runs:
        raise KdgenError("compare needs at least one run folder; give the folders `kdgen distill` wrote")
    # 1. every run's metrics, checked before anything is written
    runs = [Path(r).expanduser() for r in runs]
    all_metrics = [_load(r) for r in runs]
    kinds = {is_classifier_run(m) for m in all_metrics}
    if len(kinds) > 1:
        raise KdgenError("compare got classifier runs and image-generator runs; their quality is measured differently - compare each kind on its own")
    classifier = kinds == {True}
    spaces: dict[str, list[int]] = {}
    keys: dict[str, str] = {}  # grouping key (path left out) -> the label of the first run's space
    for i, m in enumerate(all_metrics):
        label = space_of(m)
        key = re.sub(r" \([^()]*\), reference", ", reference", label, count=1) if not is_classifier_run(m) else label
        spaces.setdefault(keys.setdefault(key, label), []).append(i)
    labels = _labels(runs)
    if len(spaces) > 1 and not separate:
        groups = "; ".join(f"{', '.join(labels[i] for i in idx)}: {space}" for space, idx in spaces.items())
        raise KdgenError(f"these runs were measured in {len(spaces)} different spaces, so their numbers do not compare ({groups}); "
                         "re-measure them alike (kdgen evaluate RUN eval.features=...), or pass --separate for one table per space")
    # 2. per space: a teacher row and a student row per run, one Pareto plot
    out = ensure_dir(Path(out).expanduser())
    record = _classifier_record if classifier else _record
    sections, all_records, plots = [], [], []
    for n, (space, idx) in enumerate(spaces.items(), 1):
        records, points = [], []
        for i in idx:
            metrics, teacher = all_metrics[i], teacher_of(runs[i])
            records += [{**record(labels[i], role, metrics[role], metrics["teacher"]), "teacher": teacher} for role in ("teacher", "student")]
            points += [{**p, "teacher": teacher} for p in run_points(labels[i], metrics)]
        table = classifier_markdown(records) if classifier else to_markdown(records)
        sections.append(table if len(spaces) == 1 else f"### Space {n}: {space}\n\n{table}")
        plots.append(pareto(points, out / ("pareto.png" if n == 1 else f"pareto-{n}.png")))
        all_records += [{**r, "space": space} for r in records]
    # 3. the files
    markdown = "\n\n".join(sections)
    atomic_write_text(out / "compare.md", markdown + "\n")
    columns = (CLASSIFIER_COLUMNS if classifier else COLUMNS) + [("space", "space")]
    atomic_write_text(out / "compare.csv", to_csv(all_records, columns))
    return {"markdown": markdown, "csv": out / "compare.csv", "pareto": plots[0], "pareto_all": plots, "spaces": list(spaces)}
