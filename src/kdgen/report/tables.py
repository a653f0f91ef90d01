"""The teacher-vs-student table and side-by-side sample grids."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from ..io import atomic_write_bytes

ROWS = [
    ("test errors", ("errors",), "{:,}"),
    ("accuracy", ("accuracy",), "{:.4f}"),
    ("macro-F1", ("macro_f1",), "{:.4f}"),
    ("agreement with teacher", ("agreement",), "{:.4f}"),
    ("PSNR vs ground truth (dB)", ("psnr",), "{:.2f}"),
    ("SSIM vs ground truth", ("ssim",), "{:.4f}"),
    ("LPIPS vs ground truth", ("lpips",), "{:.4f}"),
    ("FID", ("fid",), "{:.2f}"),
    ("KID x1000", ("kid",), "{:.2f}"),
    ("precision", ("precision",), "{:.3f}"),
    ("recall", ("recall",), "{:.3f}"),
    ("density", ("density",), "{:.3f}"),
    ("coverage", ("coverage",), "{:.3f}"),
    ("sampling steps", ("sampling_steps",), "{:,}"),
    ("network evals / image", ("network_evals",), "{:,}"),
    ("params", ("params",), "{:,}"),
    ("MACs / image", ("macs",), "{:,}"),
    ("latency b1 (ms)", ("latency_ms", "b1"), "{:.2f}"),
    ("latency b64 (ms)", ("latency_ms", "b64"), "{:.2f}"),
    ("file (KB)", ("file_bytes",), "{:.0f}"),
]


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _cell(block: dict, path: tuple[str, ...], value, fmt: str, scale: float) -> str:
    """`value` formatted, with `± std` when the metric was measured over several seeds."""
    if value is None:
        return "-"
    text = fmt.format(value * scale)
    std = block.get(f"{path[0]}_std") if len(path) == 1 else None
    if std and len(block.get("fid_per_seed", [])) > 1:
        text += " ± " + fmt.format(std * scale)
    return text


def format_table(metrics: dict) -> str:
    """A markdown table: metric | teacher | student | student / teacher."""
    lines = ["| metric | teacher | student | student / teacher |", "|---|---:|---:|---:|"]
    for label, path, fmt in ROWS:
        t, s = _get(metrics.get("teacher", {}), path), _get(metrics.get("student", {}), path)
        if t is None and s is None:
            continue
        scale = 1000 if path == ("kid",) else (1 / 1024 if path == ("file_bytes",) else 1)
        ts, ss = (_cell(metrics.get(who, {}), path, v, fmt, scale) for who, v in (("teacher", t), ("student", s)))
        ratio = f"{s / t:.3f}x" if t not in (None, 0) and s is not None else "-"
        lines.append(f"| {label} | {ts} | {ss} | {ratio} |")
    near = metrics.get("student", {}).get("vs_teacher")
    if near:
        lpips = f" / LPIPS {near['lpips']:.4f}" if near.get("lpips") is not None else ""
        lines.append(f"| PSNR / SSIM to the teacher | - | {near['psnr']:.2f} dB / {near['ssim']:.4f}{lpips} | - |")
    floor = metrics.get("input")
    if floor:
        lpips = f" / LPIPS {floor['lpips']:.4f}" if floor.get("lpips") is not None else ""
        lines.append(f"| the degraded input itself | {floor['psnr']:.2f} dB / {floor['ssim']:.4f}{lpips} | - | - |")
    fid = metrics.get("student", {}).get("fidelity")
    if fid:
        lines.append(f"| fidelity to teacher (PSNR dB) | - | {fid['psnr_db']:.2f} | - |")
    return "\n".join(lines)


def to_pil(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    from torchvision.utils import make_grid  # here, not at import: torchvision takes ~1.5 s to load

    grid = make_grid(images.float().cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 or (arr[:, :, 0] == arr[:, :, 1]).all() else arr)


def _save_png(image: Image.Image, path: Path) -> Path:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return path


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    return _save_png(to_pil(images, nrow), path)


def save_side_by_side(panels: dict[str, torch.Tensor], path: Path, nrow: int = 8) -> Path:
    """Grids side by side (e.g. teacher | student from the same seeds), a blank gutter between."""
    grids = [to_pil(x, nrow).convert("RGB") for x in panels.values()]
    gap = 12
    w = sum(g.width for g in grids) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (w, max(g.height for g in grids)), "white")
    x = 0
    for g in grids:
        canvas.paste(g, (x, 0))
        x += g.width + gap
    return _save_png(canvas, path)


LATENCY_ROWS = {
    "teacher_eager": "teacher, PyTorch eager", "student_eager": "student, PyTorch eager", "student_torchscript": "student, TorchScript",
    "student_onnx_fp32": "student, onnxruntime fp32", "student_onnx_int8_dynamic": "student, onnxruntime int8 dynamic",
    "student_onnx_int8_static": "student, onnxruntime int8 static",
}
EXPORT_VARIANTS = {"pytorch": "PyTorch (fp32)", "onnx_fp32": "onnxruntime fp32", "int8_dynamic": "onnxruntime int8 dynamic",
                   "int8_static": "onnxruntime int8 static"}


def export_table(block: dict) -> str:
    """Markdown: each exported file with its parity, and (when measured) each variant's quality against PyTorch's."""
    lines = ["| export | file | KB | max abs error vs PyTorch | max rel error |", "|---|---|---:|---:|---:|"]
    for fmt, rec in block.items():
        if not isinstance(rec, dict) or "parity" not in rec:
            continue
        p = rec["parity"]
        lines.append(f"| {fmt} | {rec['file']} | {rec['bytes'] / 1024:.0f} | {p['max_abs']:.2e} (tol {p['tolerance']:.0e}) | {p['max_rel']:.2e} |")
        for kind, q in (rec.get("int8") or {}).items():
            if isinstance(q, dict):
                v = q["vs_pytorch"]
                lines.append(f"| {fmt} int8 {kind} | {q['file']} | {q['bytes'] / 1024:.0f} | {v['max_abs']:.2e} | {v['max_rel']:.2e} |")
        if "sampler_parity" in rec:
            sp = rec["sampler_parity"]
            lines.append(f"| onnx sampler, {sp['steps']} steps, {sp['n']} images | - | - | {sp['max_abs']:.2e} (tol {sp['tolerance']:.0e}) | - |")
    quality = (block.get("onnx") or {}).get("quality")
    if quality:
        first = quality.get("pytorch", {})
        key = next((k for k in ("accuracy", "psnr") if k in first), "fid")
        third = {"fid": " KID x1000 |", "psnr": " SSIM | dB below PyTorch |"}.get(key, " errors |")
        lines += ["", f"| variant | {key} | {key} / PyTorch's |" + third, "|---|---:|---:|---:|" + ("---:|" if key == "psnr" else "")]
        for name, q in quality.items():
            tail = {"fid": lambda: f"{q['kid'] * 1000:.2f}", "psnr": lambda: f"{q['ssim']:.4f} | {q['psnr_drop_db']:.2f}"}.get(
                key, lambda: f"{q.get('errors', '-')}")()
            lines.append(f"| {EXPORT_VARIANTS.get(name, name)} | {q[key]:.4g} | {q[f'{key}_vs_pytorch']:.3f} | {tail} |")
    return "\n".join(lines)


def latency_table(result: dict) -> str:
    """Markdown: every latency row at every batch size, and its speed-up over the teacher in PyTorch eager."""
    batches = list(next(iter(result["rows"].values())).keys()) if result.get("rows") else []
    head = "| runtime | " + " | ".join(f"{b} ms | {b} img/s" for b in batches) + " | speed-up vs teacher " + ", ".join(batches) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(batches) + 1)]
    speed = result.get("speedup_vs_teacher_eager", {})
    for name, row in result.get("rows", {}).items():
        cells = " | ".join(f"{row[b]['ms']:.3f} | {row[b]['images_per_s']:,.0f}" for b in batches)
        up = ", ".join(f"{speed[name][b]:.1f}×" for b in batches) if name in speed else "-"
        lines.append(f"| {LATENCY_ROWS.get(name, name)} | {cells} | {up} |")
    lines.append("")
    lines.append(f"{result.get('threads')} thread(s), {result.get('device')}; median of up to {result.get('repeats')} repeats after warm-up; "
                 "a sampler's row includes every sampling step.")
    return "\n".join(lines)
