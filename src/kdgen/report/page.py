"""RUN/report.html: one self-contained page (images inlined as data: URIs, no network) built from a run folder."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from ..errors import KdgenError
from ..io import atomic_write_text
from .plots import pareto_png, run_points, training_curves
from .tables import ROWS, _get

SCALE = {("kid",): 1000, ("file_bytes",): 1 / 1024}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
.note { color: #777; font-style: italic; }
dt { font-weight: 600; margin-top: 0.4rem; }
code { word-break: break-all; }
"""


def _well_formed(metrics: dict) -> bool:
    """Sections are mappings and the numbers the page and compare read are numbers (or absent)."""
    for section in ("teacher", "student", "protocol", "train"):
        if section in metrics and not isinstance(metrics[section], dict):
            return False
    for who in ("teacher", "student"):
        block = metrics.get(who, {})
        for key in ("fid", "fid_std", "kid", "params", "macs", "file_bytes"):
            if block.get(key) is not None and not isinstance(block[key], (int, float)):
                return False
        if "latency_ms" in block and not isinstance(block["latency_ms"], dict):
            return False
    floor = metrics.get("protocol", {}).get("real_train_vs_reference")
    return floor is None or (isinstance(floor, dict) and {"fid", "kid"} <= set(floor))


def read_metrics(run: Path) -> dict:
    """A run folder's metrics.json; KdgenError (one sentence) when the folder or the file is missing or broken."""
    run = Path(run)
    if not run.is_dir():
        raise KdgenError(f"'{run}' is not a folder; give a run folder written by `kdgen distill`")
    path = run / "metrics.json"
    if not path.is_file():
        raise KdgenError(f"'{run}' has no metrics.json; run `kdgen distill` or `kdgen evaluate` on it first")
    try:
        metrics = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise KdgenError(f"'{path}' is not UTF-8 JSON; re-run `kdgen evaluate {run}` to rewrite it") from None
    except json.JSONDecodeError as e:
        raise KdgenError(f"'{path}' is not valid JSON ({e.msg}); re-run `kdgen evaluate {run}` to rewrite it") from e
    if not isinstance(metrics, dict) or not _well_formed(metrics):
        raise KdgenError(f"'{path}' is not a kdgen metrics file (wrong structure); re-run `kdgen evaluate {run}` to rewrite it")
    return metrics


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def _fmt(block: dict, path: tuple[str, ...], fmt: str) -> str:
    value = _get(block, path)
    if value is None:
        return "-"
    text = fmt.format(value * SCALE.get(path, 1))
    std = block.get(f"{path[0]}_std") if len(path) == 1 else None
    if std and len(block.get("fid_per_seed", [])) > 1:
        text += " ± " + fmt.format(std * SCALE.get(path, 1))
    return text


def _ratio(t, s) -> str:
    return f"{s / t:.3f}x" if isinstance(t, (int, float)) and t != 0 and isinstance(s, (int, float)) else "-"


def metrics_table(metrics: dict) -> str:
    """An HTML table: metric | teacher | student | student / teacher (what `format_table` shows as markdown)."""
    teacher, student = metrics.get("teacher") or {}, metrics.get("student") or {}
    rows = []
    for label, path, fmt in ROWS:
        t, s = _get(teacher, path), _get(student, path)
        if t is not None or s is not None:
            rows.append((label, _fmt(teacher, path, fmt), _fmt(student, path, fmt), _ratio(t, s)))
    psnr = _get(student, ("fidelity", "psnr_db"))
    if psnr is not None:
        rows.append(("fidelity to teacher (PSNR dB)", "-", f"{psnr:.2f}", "-"))
    body = "".join(f"<tr><th>{escape(r[0])}</th>" + "".join(f'<td class="num">{escape(c)}</td>' for c in r[1:]) + "</tr>"
                   for r in rows)
    head = "<tr><th>metric</th><th>teacher</th><th>student</th><th>student / teacher</th></tr>"
    return f'<table id="metrics"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _measured(metrics: dict) -> bool:
    return bool(metrics.get("teacher")) and bool(metrics.get("student"))


def _summary(run: Path, metrics: dict) -> str:
    train = metrics.get("train") or {}
    parts = [f"run folder: {run.resolve()}"]
    if train:
        parts.append(f"{train.get('steps', '?')} steps in {train.get('seconds', '?')} s"
                     + (f" (resumed from step {train['resumed_from']})" if train.get("resumed_from") else ""))
    return "<p>" + " &middot; ".join(escape(p) for p in parts) + "</p>"


def _metrics_section(metrics: dict) -> str:
    if not _measured(metrics):
        return _note("No teacher/student measurements in metrics.json (evaluation was disabled); run `kdgen evaluate` on this folder.")
    return metrics_table(metrics)


def _samples_section(run: Path) -> str:
    grid = run / "samples" / "teacher_vs_student.png"
    if not grid.is_file():
        return _note("No samples/teacher_vs_student.png in this run.")
    return "<p>teacher (left) | student (right), the same seeds</p>" + _img(grid.read_bytes(), "teacher | student samples")


def _confusion_section(run: Path) -> str:
    png = run / "plots" / "confusion.png"
    if not png.is_file():
        return _note("No plots/confusion.png in this run (evaluation was disabled); run `kdgen evaluate` on this folder.")
    return "<p>teacher (left) | student (right), rows: true class, columns: predicted</p>" + _img(png.read_bytes(), "confusion matrices")


def _transfer_section(run: Path) -> str:
    png = run / "samples" / "transfer.png"
    return ("<p>64 of the generated, unlabelled images (<code>data.transfer</code>) that joined the training batches; "
            "the student learned the teacher's soft labels on them</p>" + _img(png.read_bytes(), "transfer-set images"))


def _classifier_protocol(metrics: dict) -> str:
    p = metrics.get("protocol") or {}
    items = [("reference", f"{p.get('reference', '?')} ({p.get('reference_count', '?')} images)"),
             ("images", f"{p.get('image_size', '?')} px, {p.get('channels', '?')} channel(s)"), ("classes", str(p.get("num_classes", "?")))]
    dl = "".join(f"<dt>{escape(k)}</dt><dd><code>{escape(v)}</code></dd>" for k, v in items)
    caveats = "".join(f"<li>{escape(str(c))}</li>" for c in p.get("caveats") or [])
    return f"<dl>{dl}</dl>" + (f"<h3>caveats</h3><ul>{caveats}</ul>" if caveats else "")


def _curves_section(run: Path) -> str:
    png = training_curves(run / "tb")
    return _img(png, "training curves") if png else _note("No TensorBoard scalars in tb/; no training curves to show.")


def _pareto_section(run: Path, metrics: dict) -> str:
    if not _measured(metrics):
        return _note("No teacher/student measurements; no Pareto plot.")
    return _img(pareto_png(run_points(run.name, metrics)), "FID vs cost, teacher and student")


def _protocol_items(p: dict) -> list[tuple[str, str]]:
    feat = p.get("feature_net") or {}
    floor = p.get("real_train_vs_reference")
    floor_text = (f"FID {floor['fid']:.2f}, KID x1000 {floor['kid'] * 1000:.2f} ({floor['count']} real training images vs the reference)"
                  if floor else "not measured (no real set independent of the reference)")
    return [
        ("reference", f"{p.get('reference', '?')} ({p.get('reference_count', '?')} images)"),
        ("generated per model and seed", str(p.get("generated_count", "?"))),
        ("seeds", ", ".join(map(str, p.get("seeds", [])))),
        ("feature net", f"{feat.get('path', '?')}, layer {feat.get('layer', '?')}, {feat.get('num_features', '?')} features"),
        ("feature net sha256", str(feat.get("sha256", "?"))),
        ("images", f"{p.get('image_size', '?')} px, {p.get('channels', '?')} channel(s), values in {p.get('value_range', '?')}"),
        ("KID subset size", str(p.get("kid_subset_size", "?"))),
        ("floor (real vs reference)", floor_text),
    ]


def _protocol_section(metrics: dict) -> str:
    p = metrics.get("protocol")
    if not p:
        return _note("No protocol recorded in metrics.json.")
    items = "".join(f"<dt>{escape(k)}</dt><dd><code>{escape(v)}</code></dd>" for k, v in _protocol_items(p))
    caveats = p.get("caveats") or []
    caveat_html = ("<ul>" + "".join(f"<li>{escape(str(c))}</li>" for c in caveats) + "</ul>") if caveats else _note("none")
    return f"<dl>{items}</dl><h3>caveats</h3>{caveat_html}"


def _markdown_tables(md: str) -> str:
    """The few markdown tables export_table / latency_table write, as HTML (other lines become paragraphs)."""
    html, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], [r for r in rows[2:]]
            html.append("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in head) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            flush()
            if line.strip():
                html.append(f"<p>{escape(line)}</p>")
    flush()
    return "".join(html)


def _deployment_section(run: Path, metrics: dict) -> str:
    from .tables import EXPORT_VARIANTS, export_table, latency_table

    parts = []
    if metrics.get("export"):
        parts.append("<h3>exported files (parity on fresh random inputs; int8 quality measured like the student)</h3>"
                     + _markdown_tables(export_table(metrics["export"])))
        grid = (metrics["export"].get("onnx") or {}).get("samples")
        if grid and (run / grid["file"]).is_file():
            names = " | ".join(EXPORT_VARIANTS.get(p, p) for p in grid["panels"])
            same = f"the same noise (seed {grid['seed']})" if "seed" in grid else "the same inputs"
            parts.append(f"<p>{escape(names)}, {same}</p>" + _img((run / grid["file"]).read_bytes(), "export variants"))
    if (metrics.get("latency") or {}).get("rows"):
        parts.append("<h3>latency where it runs</h3>" + _markdown_tables(latency_table(metrics["latency"])))
    return "".join(parts)


def _config_section(run: Path) -> str:
    cfg = run / "config.yaml"
    return f"<details><summary>config.yaml</summary><pre>{escape(cfg.read_text())}</pre></details>" if cfg.is_file() else ""


def render(run: Path, metrics: dict) -> str:
    """The page's HTML for a run folder and its metrics."""
    title = f"kdgen report: {run.resolve().name}"
    classifier = (metrics.get("protocol") or {}).get("kind") == "classifier"
    sections = [
        ("teacher vs student", _metrics_section(metrics)),
        ("confusion matrices", _confusion_section(run)),
        ("training curves", _curves_section(run)),
        ("test error vs cost", _pareto_section(run, metrics)),
        ("evaluation protocol", _classifier_protocol(metrics)),
    ] if classifier else [
        ("teacher vs student", _metrics_section(metrics)),
        ("samples", _samples_section(run)),
        ("training curves", _curves_section(run)),
        ("quality vs cost", _pareto_section(run, metrics)),
        ("evaluation protocol", _protocol_section(metrics)),
    ]
    if classifier and (metrics.get("train") or {}).get("transfer") and (run / "samples" / "transfer.png").is_file():
        sections.insert(2, ("transfer set", _transfer_section(run)))
    if metrics.get("export") or metrics.get("latency"):
        sections.insert(1, ("deployment: export, int8, latency", _deployment_section(run, metrics)))
    body = "".join(f"<section><h2>{escape(h)}</h2>{html}</section>" for h, html in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{escape(title)}</h1>{_summary(run, metrics)}{body}"
            f"{_config_section(run)}</body></html>\n")


def build_report(run: Path) -> Path:
    """Write RUN/report.html from the run folder's metrics.json, samples and TensorBoard events; returns its path.

    Missing pieces (no tb events, no samples, an eval-disabled run) get a short note; no metrics.json is a KdgenError.
    """
    run = Path(run).expanduser()
    metrics = read_metrics(run)
    path = run / "report.html"
    atomic_write_text(path, render(run, metrics))
    return path
