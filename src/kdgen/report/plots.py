"""Figures for the report page and for comparing runs: training curves and the quality-vs-cost Pareto plot.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global figure state and no GUI
backend) and come back as PNG bytes without the "Software" text chunk.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from ..io import atomic_write_bytes

CURVE_GROUPS = (("loss/", "losses"), ("d/", "discriminator outputs"))
PARETO_PANELS = (("macs", "MACs per image"), ("latency_b1", "latency, batch 1 (ms)"))
ROLE_STYLE = {"teacher": {"marker": "s", "color": "tab:blue"}, "student": {"marker": "o", "color": "tab:orange"}}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard folder as tag -> [(step, value), ...]; {} when there are no events."""
    if not tb_dir.is_dir() or not any(tb_dir.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def training_curves(tb_dir: Path) -> bytes | None:
    """PNG of every "loss/*" series (and "d/*" beside it) against step; None when nothing was logged."""
    series = read_scalars(Path(tb_dir))
    groups = [(title, {k: v for k, v in sorted(series.items()) if k.startswith(prefix)}) for prefix, title in CURVE_GROUPS]
    groups = [(title, curves) for title, curves in groups if curves]
    if not groups:
        return None
    fig = Figure(figsize=(6 * len(groups), 3.6), layout="constrained")
    for ax, (title, curves) in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups):
        for tag, points in curves.items():
            steps, values = zip(*points)
            ax.plot(steps, values, label=tag, marker="." if len(points) < 30 else None)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _png(fig)


def pareto_front(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower x and lower y are better), sorted by x."""
    front, best = [], math.inf
    for x, y in sorted(xy):
        if y < best:
            front.append((x, y))
            best = y
    return front


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as short plain numbers ("0.3", "2", "60k", "1M"); matplotlib still picks which ticks get one."""

    def __call__(self, x, pos=None):
        if not super().__call__(x, pos):
            return ""
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:g}{suffix}"
        return f"{x:g}"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _label_points(ax, points: list[dict], key: str, y: str = "fid") -> None:
    """One label per place, pointing inwards; the teacher points of runs that share one teacher (the same `teacher`
    path) get one label, "teacher PATH (n runs)" (their points differ only by timing noise)."""
    labels: dict[tuple[float, float], list[str]] = {}
    shared: dict[str, list[dict]] = {}
    for p in points:
        if p.get("role") == "teacher" and p.get("teacher"):
            shared.setdefault(p["teacher"], []).append(p)
    for p in points:
        same = shared.get(p.get("teacher"), []) if p.get("role") == "teacher" else []
        if len(same) > 1:
            if p is same[0]:
                labels.setdefault((p[key], p[y]), []).append(f"teacher {p['teacher']} ({len(same)} runs)")
            continue
        labels.setdefault((p[key], p[y]), []).append(str(p.get("label", "")))
    mid = math.sqrt(min(x for x, _ in labels) * max(x for x, _ in labels))
    for xy, names in labels.items():
        right = xy[0] > mid
        ax.annotate(", ".join(names), xy, textcoords="offset points", xytext=(-6 if right else 6, 4),
                    ha="right" if right else "left", fontsize=7)


Y_LABELS = {"fid": "FID", "error_pct": "test error %"}


def _pareto_panel(ax, points: list[dict], key: str, xlabel: str, y: str = "fid") -> None:
    usable = [p for p in points if _number(p.get(key)) and p[key] > 0 and _number(p.get(y))]
    ax.set(xlabel=f"{xlabel} (log)", ylabel=f"{Y_LABELS[y]} (lower is better)", title=f"{Y_LABELS[y]} vs {xlabel}")
    if not usable:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    for role, style in ROLE_STYLE.items():
        mine = [p for p in usable if p.get("role") == role]
        if mine:
            ax.scatter([p[key] for p in mine], [p[y] for p in mine], label=role, s=40, zorder=3, **style)
    _label_points(ax, usable, key, y)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLogFormatter())
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.margins(x=0.2, y=0.15)
    _draw_front(ax, pareto_front([(p[key], p[y]) for p in usable]))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")


def _draw_front(ax, front: list[tuple[float, float]]) -> None:
    """The front as a staircase, run out to the top and right edges so that one point still shows its region."""
    (x_lo, x_hi), (_, y_hi) = ax.get_xlim(), ax.get_ylim()
    xs = [front[0][0]] + [x for x, _ in front] + [x_hi]
    ys = [y_hi] + [y for _, y in front] + [front[-1][1]]
    ax.step(xs, ys, where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front", zorder=2)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(top=y_hi)


def pareto_png(points: list[dict]) -> bytes:
    """PNG bytes of the two Pareto panels (see `pareto`)."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    y = "error_pct" if points and all("error_pct" in p for p in points) else "fid"  # classifiers: test error
    for ax, (key, xlabel) in zip(fig.subplots(1, len(PARETO_PANELS)), PARETO_PANELS):
        _pareto_panel(ax, points, key, xlabel, y)
    return _png(fig)


def pareto(points: list[dict], path: Path) -> Path:
    """FID vs MACs per image and FID vs batch-1 latency, side by side, log x, with the Pareto front.

    `points`: [{"label", "role": "teacher" | "student", "fid", "macs", "latency_b1"}, ...]; a point
    missing a value is left out of that panel. Lower-left is better.
    """
    path = Path(path)
    atomic_write_bytes(path, pareto_png(points))
    return path


def run_points(label: str, metrics: dict) -> list[dict]:
    """The teacher and student of one run's metrics.json as Pareto points."""
    points = []
    for role in ("teacher", "student"):
        m = metrics.get(role) or {}
        point = {"label": f"{label} {role}".strip(), "role": role, "fid": m.get("fid"), "macs": m.get("macs"),
                 "latency_b1": (m.get("latency_ms") or {}).get("b1")}
        if m.get("accuracy") is not None:  # a classifier: its quality axis is the test error (%)
            point["error_pct"] = 100 * (1 - m["accuracy"])
        points.append(point)
    return points


def confusion_png(confusions: dict[str, list[list[int]]]) -> bytes:
    """PNG of one confusion matrix per model (rows: true class, columns: predicted), counts written in the cells."""
    fig = Figure(figsize=(4.2 * len(confusions), 4), layout="constrained")
    for ax, (name, matrix) in zip(fig.subplots(1, len(confusions), squeeze=False)[0], confusions.items()):
        k = len(matrix)
        ax.imshow(matrix, cmap="Blues")
        top = max(max(row) for row in matrix) or 1
        for i in range(k):
            for j in range(k):
                if matrix[i][j]:
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i][j] > top / 2 else "black")
        ax.set(title=name, xlabel="predicted", ylabel="true", xticks=range(k), yticks=range(k))
    return _png(fig)


def confusion(confusions: dict[str, list[list[int]]], path: Path) -> Path:
    """Write `confusion_png` to `path` atomically."""
    atomic_write_bytes(Path(path), confusion_png(confusions))
    return Path(path)
