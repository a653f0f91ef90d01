"""Run an exported student with onnxruntime and numpy only: no PyTorch in the loop.

`kdgen export` writes `student.onnx` and, beside it, `sampler.json`: what the graph takes and, for a
diffusion student, the recorded step count with every per-step coefficient of its scheduler
(DDIM with trailing timesteps, or LCM for consistency students) precomputed from diffusers' own
scheduler. This module needs `numpy` and `onnxruntime` and nothing of kdgen's training stack, so it
can be copied next to the two files on a device:

    from kdgen.onnx_sampler import OnnxStudent
    student = OnnxStudent("RUN/export/student.onnx")
    images = student.sample(16, rng=np.random.default_rng(0))   # [16, C, H, W] in [-1, 1]

The step is diffusers' (eta = 0 DDIM; LCM with its boundary scalings and fresh noise between steps),
written out so that a device needs no diffusers: for prediction x0 and noise eps from the network
output (epsilon, sample or v parametrisation at alpha_t), clipped like the scheduler clips,
DDIM gives sqrt(a_prev) x0 + sqrt(1 - a_prev) eps and LCM gives
d = c_out x0 + c_skip x_t, then sqrt(a_prev) d + sqrt(1 - a_prev) noise (d itself at the last step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

try:
    from .errors import KdgenError
except ImportError:  # this file copied onto a device without kdgen
    class KdgenError(Exception):
        """A user error: one sentence naming the problem and the fix."""

SAMPLER_JSON = "sampler.json"


def _verify_checksum(path: Path) -> None:
    """The graph (and its external weights, NAME.data) against the NAME.sha256 `kdgen export` wrote beside each: kdgen.io's
    check without torch, so this file runs where kdgen is not installed. No sha256: unchecked."""
    import hashlib

    for f in (path, path.with_name(path.name + ".data")):
        side = f.with_name(f.name + ".sha256")
        if not side.is_file() or not f.is_file():
            continue
        try:
            recorded = side.read_text().split()[0].lower()
        except (OSError, UnicodeDecodeError, IndexError):
            raise KdgenError(f"the checksum file '{side}' is unreadable; export the run again") from None
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != recorded:
            raise KdgenError(f"'{f}' does not match the sha256 recorded in '{side.name}': the file is damaged (flipped bytes or a "
                             "partial copy); export the run again")

REQUIRED = {  # what each kind of sampler.json must hold
    "generator": ["inputs"],
    "classifier": ["inputs", "shape"],
    "image-to-image": ["inputs", "shape"],
    "diffusion": ["inputs", "shape", "steps", "scheduler", "prediction_type", "timesteps", "alpha_t", "alpha_prev"],
}


def session(path: str | Path, *, threads: int | None = None, spin: bool = True):
    """An onnxruntime CPU session (intra-op threads as given), or one sentence when onnxruntime is missing. `spin=False`:
    its idle worker threads sleep instead of spinning, for callers that run torch work or another session between calls
    (a spinning pool takes the cores that work needs: FIELD-NOTES.md)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdgenError("onnxruntime is not installed; install the export extra with `pip install 'kdgen[export]'`") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    _verify_checksum(Path(path))
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def read_sampler_json(onnx_path: str | Path) -> dict[str, Any]:
    """The sampler.json written beside an exported graph; one sentence when it is missing or unreadable."""
    path = Path(onnx_path).expanduser()
    if not path.is_file():
        raise KdgenError(f"'{path}' does not exist; export the run first (`kdgen export RUN`) and pass RUN/export/student.onnx")
    spec = path.parent / SAMPLER_JSON
    if not spec.is_file():
        raise KdgenError(f"'{spec}' is missing beside '{path.name}'; re-export the run with `kdgen export RUN` (it writes both files)")
    try:
        data = json.loads(spec.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KdgenError(f"'{spec}' is not valid JSON ({e}); re-export the run with `kdgen export RUN`") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in REQUIRED:
        raise KdgenError(f"'{spec}' is not a kdgen sampler.json (no kind generator, diffusion, classifier or image-to-image); re-export "
                         "the run with `kdgen export RUN`")
    need = REQUIRED[kind] + (["c_skip", "c_out"] if data.get("scheduler") == "LCMScheduler" else [])
    missing = [k for k in need if k not in data]
    if missing:
        raise KdgenError(f"'{spec}' lacks {', '.join(missing)} for a {kind}; re-export the run with `kdgen export RUN`")
    return data


class OnnxStudent:
    """An exported student: a generator (z -> image), a diffusion sampler (noise -> image, all recorded steps),
    a classifier (image -> logits) or an image-to-image network (image -> image), run in onnxruntime."""

    def __init__(self, onnx_path: str | Path, *, threads: int | None = None, spec: dict[str, Any] | None = None):
        self.path = Path(onnx_path).expanduser()
        self.spec = spec or read_sampler_json(self.path)
        self.kind = self.spec["kind"]
        self.session = session(self.path, threads=threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(self.spec["inputs"]):
            raise KdgenError(f"'{self.path.name}' takes inputs {names} but its sampler.json describes {self.spec['inputs']}; the two files "
                             "come from different exports - re-export the run with `kdgen export RUN`")
        self.batch_size = int(self.spec.get("batch_size", 500))

    # ------------------------------------------------------------------ shapes and noise
    @property
    def latent_shape(self) -> tuple[int, ...]:
        if self.kind == "generator":
            z = self.spec.get("z_shape") or [self.spec.get("z_dim")]
            if not all(isinstance(d, int) and d > 0 for d in z):
                raise KdgenError(f"{self.path.name}: sampler.json gives no z_shape (nor z_dim) for this generator; re-export the run")
            return tuple(int(d) for d in z)
        return tuple(self.spec["shape"])

    @property
    def steps(self) -> int:
        return int(self.spec.get("steps", 1))

    def _labels(self, n: int) -> np.ndarray | None:
        k = self.spec.get("num_classes")
        return (np.arange(n) % int(k)).astype(np.int64) if k else None

    # ------------------------------------------------------------------ running
    def logits(self, images: np.ndarray) -> np.ndarray:
        """A classifier's logits for images [n, C, H, W] (float32, in the range it was trained on)."""
        return self._images_in("classifier", "logits", images)

    def map(self, images: np.ndarray) -> np.ndarray:
        """An image-to-image network's outputs for images [n, *shape] in [-1, 1] (float32)."""
        return self._images_in("image-to-image", "map", images)

    def _images_in(self, kind: str, what: str, images: np.ndarray) -> np.ndarray:
        if self.kind != kind:
            raise ValueError(f"this export is a {self.kind}; {what}() is for {kind} exports")
        x = np.ascontiguousarray(images, dtype=np.float32)
        return np.concatenate([self.session.run(None, {"image": x[i : i + self.batch_size]})[0] for i in range(0, len(x), self.batch_size)])

    def sample(self, n: int, *, latents: np.ndarray | None = None, labels: np.ndarray | None = None,
               rng: np.random.Generator | None = None, step_noise: Callable[[tuple[int, ...]], np.ndarray] | None = None) -> np.ndarray:
        """n images [n, C, H, W] in [-1, 1]. `latents` (default: standard normal from `rng`) and, for multi-step
        LCM students, `step_noise(shape)` (default: from `rng`) give full control over the randomness."""
        if self.kind in ("classifier", "image-to-image"):
            raise ValueError(f"this export is a {self.kind}; use {'logits' if self.kind == 'classifier' else 'map'}()")
        rng = rng if rng is not None else np.random.default_rng(0)
        z = rng.standard_normal((n, *self.latent_shape), dtype=np.float32) if latents is None else np.asarray(latents, np.float32)
        if labels is None:
            labels = self._labels(n)
        noise = step_noise or (lambda shape: rng.standard_normal(shape, dtype=np.float32))
        out = []
        for i in range(0, n, self.batch_size):
            zi = np.ascontiguousarray(z[i : i + self.batch_size])
            if self.kind == "generator":
                out.append(self.session.run(None, {"z": zi})[0])
            else:
                yi = labels[i : i + self.batch_size] if labels is not None else None
                out.append(self.denoise(zi, yi, noise))
        return np.concatenate(out)

    def net(self, x: np.ndarray, t: int, labels: np.ndarray | None) -> np.ndarray:
        feeds = {"sample": x, "timestep": np.full((len(x),), t, dtype=np.int64)}
        if labels is not None:
            feeds["class_labels"] = labels.astype(np.int64)
        return self.session.run(None, feeds)[0]

    def denoise(self, x: np.ndarray, labels: np.ndarray | None, noise: Callable[[tuple[int, ...]], np.ndarray]) -> np.ndarray:
        """The recorded steps of DDIM (eta = 0) or LCM, from noise x to an image."""
        s = self.spec
        pred, clip = s["prediction_type"], s.get("clip_sample_range") if s.get("clip_sample") else None
        lcm = s["scheduler"] == "LCMScheduler"
        for i, t in enumerate(s["timesteps"]):
            out = self.net(x, int(t), labels).astype(np.float32)
            a, a_prev = np.float32(s["alpha_t"][i]), np.float32(s["alpha_prev"][i])
            sa, sb = np.sqrt(a), np.sqrt(np.float32(1) - a)
            if pred == "epsilon":
                x0, eps = (x - sb * out) / sa, out
            elif pred == "sample":
                x0 = out
                eps = (x - sa * x0) / sb
            else:  # v_prediction
                x0, eps = sa * x - sb * out, sa * out + sb * x
            if clip is not None:
                x0 = np.clip(x0, -clip, clip)
            if lcm:
                d = np.float32(s["c_out"][i]) * x0 + np.float32(s["c_skip"][i]) * x
                last = i == len(s["timesteps"]) - 1
                x = d if last else np.sqrt(a_prev) * d + np.sqrt(np.float32(1) - a_prev) * noise(x.shape).astype(np.float32)
            else:
                x = np.sqrt(a_prev) * x0 + np.sqrt(np.float32(1) - a_prev) * eps
        return np.clip(x, -1, 1)
