"""Final metrics into TensorBoard: as scalars under final/ and as an hparams record (HParams tab)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def flat_hparams(config: dict[str, Any]) -> dict[str, float | str | bool]:
    """The recipe's scalar settings as flat 'section.key' -> value (lists and dicts of lists skipped)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node

    walk("", {k: config[k] for k in ("student", "methods", "train", "teacher") if k in config})
    return flat


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for who in ("teacher", "student"):
        m = metrics.get(who) or {}
        for key in ("fid", "kid", "params", "macs"):
            if m.get(key) is not None:
                out[f"final/{who}_{key}"] = float(m[key])
        if m.get("latency_ms"):
            out[f"final/{who}_latency_b1_ms"] = float(m["latency_ms"]["b1"])
    if "final/teacher_fid" in out and "final/student_fid" in out:
        out["final/fid_ratio"] = out["final/student_fid"] / out["final/teacher_fid"]
        out["final/macs_reduction"] = out["final/teacher_macs"] / out["final/student_macs"]
    return out


def log_final_metrics(tb_dir: Path, config: dict[str, Any], metrics: dict[str, Any], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    scalars = final_scalars(metrics)
    if not scalars:
        return
    with SummaryWriter(str(tb_dir)) as w:
        for k, v in scalars.items():
            w.add_scalar(k, v, step)
        # the hparams record in the same run folder (add_hparams would make a sub-run per call)
        for summary in hparams(flat_hparams(config), scalars):
            w.file_writer.add_summary(summary)
