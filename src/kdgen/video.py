"""`kdgen video RUN INPUT.mp4`: an image-to-image run's teacher and student over every frame of a video, side by side.

Frames are decoded and encoded with PyAV (FFmpeg). Each frame becomes the model's input as the run's task defines it:
sr4 - the frame is the low-resolution one, enlarged 4x (bicubic) as in training, so the output is 4x the frame; colorize -
its luma; denoise / none - the frame itself. The output video shows input | teacher | student, left to right.

Frames of another size than the training size run
  fully convolutionally (kdgen's U-Net / ResNet families, in torch, and in onnx / int8 where `kdgen export` wrote the graph
      with free H and W): the frame padded (reflect) to a multiple of the network's stride, run whole, cropped back;
  tiled (users' own modules, and graphs of a fixed size): the padded frame cut into training-size tiles, run as one
      batch, stitched (tiles do not overlap, so seams may show);
and the run records which. Frames per second are measured per model at batch 1 (one frame at a time, tiling included),
with decoding and encoding timed apart. In the onnx / int8 runtimes the teacher runs its own graph, exported (and
quantized) by this command into RUN/video/teacher-graph/, so both models are timed in the same runtime.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import KdgenError
from .faces import face_of
from .runs import holding_run_lock, lock_run

RUNTIMES = ("torch", "onnx", "int8")
CHUNK = 16  # frames each model runs in a row: the other model's memory traffic and thread pool do not sit between its frames
CHUNK_BYTES = 1 << 30  # fewer frames a chunk when 16 of them (float input and outputs) would take more memory than this


def _av():
    try:
        import av
    except ImportError:
        raise KdgenError("kdgen video needs PyAV; install it with `pip install av`") from None
    return av


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int) -> torch.Tensor:
    """`run` over the tile x tile pieces of x [1, C, H, W] (padded to a multiple of the tile), stitched back, cropped."""
    xp, h, w = _pad_to(x, tile)
    c, hp, wp = xp.shape[1:]
    tiles = xp.unfold(2, tile, tile).unfold(3, tile, tile)  # [1, C, nh, nw, t, t]
    nh, nw = tiles.shape[2:4]
    batch = tiles.permute(0, 2, 3, 1, 4, 5).reshape(nh * nw, c, tile, tile)
    out = run(batch)
    co = out.shape[1]
    out = out.reshape(1, nh, nw, co, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(1, co, hp, wp)
    return out[..., :h, :w]


class _Runner:
    """One model in one runtime: frame tensor [1, C, H, W] -> output [1, C', H, W] (CPU tensors), and how it runs.
    `whole`: run frames whole (padded to the family's multiple) - in torch for kdgen's families, in onnx / int8 when both
    graphs were exported with free H and W; otherwise tiled at the training size."""

    def __init__(self, model: nn.Module, runtime: str, graph: Path | None, whole: bool, threads: int | None = None):
        from .models.img2img import size_multiple

        self.model, self.runtime, self.face = model.eval(), runtime, face_of(model)
        self.tile = self.face.image_size
        self.stride = size_multiple(model) if whole else None
        self.mode = ("fully convolutional" if self.stride else f"tiled {self.tile}x{self.tile}")
        if runtime != "torch":
            from .onnx_sampler import session

            self.session = session(graph, threads=threads, spin=False)  # torch work and the other model run between calls

    def _run(self, b: torch.Tensor) -> torch.Tensor:
        if self.runtime == "torch":
            return self.model(b)
        return torch.from_numpy(self.session.run(None, {"image": np.ascontiguousarray(b.numpy(), np.float32)})[0])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride:
            xp, h, w = _pad_to(x, self.stride)
            return self._run(xp)[..., :h, :w]
        return tiled(self._run, x, self.tile)


def _graphs(run_dir: Path, teacher: nn.Module, runtime: str) -> tuple[Path | None, Path | None, bool]:
    """(teacher graph, student graph, whether both take frames whole) for onnx / int8: the student's from `kdgen export`,
    the teacher's made here once, with free H and W when the student's has them; torch: (None, None, True). int8 is the
    static (QDQ) graph of each, calibrated on the run's training inputs: onnxruntime runs the dynamic one's ConvInteger
    5-7x slower than fp32 for these convs (FIELD-NOTES.md)."""
    if runtime == "torch":
        return None, None, True
    from .export.common import INT8_FILES, ONNX_FILE

    name = ONNX_FILE if runtime == "onnx" else INT8_FILES["static"]
    student = run_dir / "export" / name
    if not student.is_file():
        raise KdgenError(f"'{student}' is missing; run `kdgen export {run_dir}{' --quantize int8' if runtime == 'int8' else ''}` first")
    from .export.runtime import free_size
    from .io import checksum_path, swapped_folder, verify_checksum, write_checksum

    folder = run_dir / "video" / "teacher-graph"
    fp32 = folder / ONNX_FILE
    whole = free_size(student)
    made = all(checksum_path(folder / f).is_file() for f in (ONNX_FILE, INT8_FILES["static"]))
    if made:
        verify_checksum(fp32)
        made = free_size(fp32) == whole  # a fixed-size graph from an older kdgen: re-made like the student's
    if not made:
        from .export.graph import Graph, _check_parity, parity
        from .export.int8 import quantize_int8
        from .export.runtime import _ort_runner, export_onnx

        with swapped_folder(folder) as stage:  # built and checked aside, swapped in whole: never a half-made graph reused
            graph = Graph(teacher)
            export_onnx(graph, stage / ONNX_FILE)
            _check_parity("teacher ONNX", parity(graph, _ort_runner(graph, stage / ONNX_FILE), free_size=free_size(stage / ONNX_FILE)))
            root = logging.getLogger()
            level, root.level = root.level, logging.ERROR  # onnxruntime's advice to pre-process, logged on the root logger
            try:
                quantize_int8(stage / ONNX_FILE, graph, run_dir)
            finally:
                root.setLevel(level)
            for f in (ONNX_FILE, *INT8_FILES.values()):
                write_checksum(stage / f)
    return folder / name, student, whole  # their sessions verify the checksums on opening


def _model_input(frame: torch.Tensor, task: str, in_channels: int) -> torch.Tensor:
    """A decoded RGB frame [1, 3, H, W] in [-1, 1] as the model's input for the run's task."""
    from .data.paired import degrade

    if task == "sr4":
        frame = F.interpolate(frame, scale_factor=4, mode="bicubic", align_corners=False).clamp(-1, 1)
    elif task == "colorize":
        return degrade(frame, "colorize")
    if in_channels == 1:
        return degrade(frame, "colorize")  # a grey model: the frame's luma
    return frame


def _chunks(decoder, src: Path, to_input: Callable[[torch.Tensor], torch.Tensor], max_frames: int | None):
    """(the first frame's [H, W], model inputs) for up to CHUNK decoded frames at a time - fewer when CHUNK of them, with
    their two outputs, would pass CHUNK_BYTES - until the video or max_frames ends."""
    import av

    done, limit, first = 0, CHUNK, None
    while max_frames is None or done < max_frames:
        chunk = []
        while len(chunk) < limit and (max_frames is None or done + len(chunk) < max_frames):
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                raise KdgenError(f"'{src}' could not be decoded at frame {done + len(chunk)} ({str(e)[:120]}); re-encode it") from None
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float() / 127.5 - 1
            chunk.append(to_input(rgb))
            if first is None:
                first = [int(rgb.shape[2]), int(rgb.shape[3])]
                limit = max(1, min(CHUNK, CHUNK_BYTES // (chunk[0].numel() * 4 * 3)))  # its input and two outputs, float32
        if not chunk:
            return
        done += len(chunk)
        yield first, chunk


def _shown(t: torch.Tensor) -> np.ndarray:
    """[1, C, H, W] in [-1, 1] -> H x W x 3 uint8."""
    x = t[0].float().clamp(-1, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def video(run: str | Path, input: str | Path, *, out: str | Path | None = None, runtime: str = "torch", max_frames: int | None = None,
          threads: int | None = None) -> dict[str, Any]:
    """Teacher and student of an image-to-image run over every frame of `input`; writes the side-by-side video and
    metrics.json["video"][runtime]; returns that record. `threads`: torch's and onnxruntime's, for this call only."""
    before = torch.get_num_threads()
    try:
        return _video(run, input, out=out, runtime=runtime, max_frames=max_frames, threads=threads)
    finally:
        torch.set_num_threads(before)


@holding_run_lock
def _video(run: str | Path, input: str | Path, *, out: str | Path | None, runtime: str, max_frames: int | None,
           threads: int | None) -> dict[str, Any]:
    from .config import load_run_config
    from .models.loading import load_model
    from .models.resolve import resolve_teacher

    av = _av()
    if runtime not in RUNTIMES:
        raise KdgenError(f"unknown --runtime '{runtime}'; use one of {', '.join(RUNTIMES)}")
    if max_frames is not None and max_frames < 1:
        raise KdgenError(f"--max-frames must be at least 1, got {max_frames}")
    run_dir, src = Path(run).expanduser(), Path(input).expanduser()
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "student").is_dir():
        raise KdgenError(f"'{run_dir}' is not a finished run folder (config.yaml and student/); give the folder `kdgen distill` wrote")
    if not src.is_file():
        raise KdgenError(f"video '{src}' does not exist; check the path")
    lock_run(run_dir)  # it writes RUN/video and metrics.json: no training or export of this run meanwhile
    if threads:
        torch.set_num_threads(int(threads))
    threads = torch.get_num_threads()  # onnxruntime gets the same count as torch
    cfg = load_run_config(run_dir / "config.yaml")
    student = load_model(run_dir / "student")
    if face_of(student).kind != "image-to-image":
        raise KdgenError(f"kdgen video runs image-to-image students; '{run_dir}' holds a {face_of(student).kind}")
    teacher = resolve_teacher(cfg.teacher, None).cpu().eval()
    t_graph, s_graph, whole = _graphs(run_dir, teacher, runtime)  # both whole or both tiled: the same work for each
    models = {"teacher": _Runner(teacher, runtime, t_graph, whole, threads), "student": _Runner(student, runtime, s_graph, whole, threads)}
    task = cfg.data.task or "none"
    dest = Path(out).expanduser() if out is not None else run_dir / "video" / f"{src.stem}-{runtime}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError) as e:
        raise KdgenError(f"'{src}' is not a video PyAV can read ({str(e).splitlines()[0][:120]}); give an .mp4, .mkv, .avi or .webm") from None
    if not container.streams.video:
        raise KdgenError(f"'{src}' holds no video stream; give a video file")
    stream = container.streams.video[0]
    rate = stream.average_rate or 25
    seconds = {"decode": 0.0, "encode": 0.0, "teacher": 0.0, "student": 0.0}
    fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(dest.suffix.lower())
    if fmt is None:
        raise KdgenError(f"--out '{dest}' has no video suffix kdgen writes; use .mp4, .mkv, .mov, .webm or .avi")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")  # the name clean_temp_files removes if this process is killed
    writer, vstream, frames, sizes, done = av.open(str(tmp), mode="w", format=fmt), None, 0, {}, False
    try:
        chunks = _chunks(container.decode(stream), src, lambda rgb: _model_input(rgb, task, face_of(student).input_shape[0]),
                         max_frames)
        while True:
            t0 = time.perf_counter()
            hw, chunk = next(chunks, (None, []))
            seconds["decode"] += time.perf_counter() - t0
            if not chunk:
                break
            if not frames:  # one untimed call each at the frame size: allocation and first-call costs are not frames/s
                for runner in models.values():
                    runner(chunk[0])
            outs, out_hw = {}, None
            for name, runner in models.items():
                t0 = time.perf_counter()
                ys = [runner(x) for x in chunk]
                seconds[name] += time.perf_counter() - t0
                out_hw = [int(ys[0].shape[2]), int(ys[0].shape[3])]
                outs[name] = [_shown(y) for y in ys]  # kept as 8-bit panels: a chunk of big frames stays small
                del ys
            t0 = time.perf_counter()
            for i, x in enumerate(chunk):
                panel = np.concatenate([_shown(x), outs["teacher"][i], outs["student"][i]], axis=1)
                h, w = panel.shape[:2]
                panel = np.pad(panel, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # yuv420p needs even sides
                if vstream is None:
                    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                    vstream = writer.add_stream(codec, rate=rate)
                    vstream.width, vstream.height, vstream.pix_fmt = panel.shape[1], panel.shape[0], "yuv420p"
                    sizes = {"frame": hw, "model_input": [int(x.shape[2]), int(x.shape[3])], "output_size": out_hw, "codec": codec}
                for packet in vstream.encode(av.VideoFrame.from_ndarray(panel, format="rgb24")):
                    writer.mux(packet)
            seconds["encode"] += time.perf_counter() - t0
            frames += len(chunk)
        if vstream is not None:
            t0 = time.perf_counter()
            for packet in vstream.encode():
                writer.mux(packet)
            seconds["encode"] += time.perf_counter() - t0
        done = True
    finally:
        writer.close()
        container.close()
        if not done or not frames:
            tmp.unlink(missing_ok=True)
    if not frames:
        raise KdgenError(f"'{src}' has no frames kdgen could decode; give another video")
    tmp.replace(dest)
    fps = {k: frames / max(seconds[k], 1e-9) for k in ("teacher", "student")}
    record = {"input": str(src), "output": str(dest), "runtime": runtime, "frames": frames, "fps_of_video": float(rate), "task": task,
              **sizes, "mode": {k: r.mode for k, r in models.items()}, "threads": threads,
              "timing": f"after one untimed call each; each model runs up to {CHUNK} frames in a row",
              "fps": {k: round(v, 2) for k, v in fps.items()}, "student_vs_teacher_fps": round(fps["student"] / fps["teacher"], 2),
              "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    _record(run_dir, runtime, record)
    return record


def _record(run_dir: Path, runtime: str, record: dict) -> None:
    from .io import atomic_write_text

    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.setdefault("video", {})[runtime] = record
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
