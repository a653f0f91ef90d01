"""What is exported (the Graph of a generator, classifier or diffusion student) and its parity with PyTorch."""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import KdgenError
from ..faces import face_of
from .common import PARITY_BATCHES, PARITY_TOL, _first_line

log = logging.getLogger("kdgen")


def student_kind(model: nn.Module) -> str:
    """What the graph is, from the model's face."""

    kind = face_of(model).kind
    if kind not in ("generator", "diffusion", "classifier", "image-to-image"):
        raise KdgenError(f"kdgen cannot export a {kind} yet; it exports generators, image-to-image networks, diffusion students "
                         "and classifiers")
    return kind


class _GuidedNet(nn.Module):
    """One guided network call of a diffusion model: what the ONNX sampler calls once per step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.guided(sample, timestep, class_labels)


class Graph:
    """The module that is exported, its input names and a maker of fresh random inputs at any batch size."""

    size_multiple: int | None = None  # image-to-image graphs exported with free H and W: they must be a multiple of this

    def __init__(self, model: nn.Module):
        self.kind = student_kind(model)
        self.model = model.eval()
        if self.kind == "generator":
            self.z_shape = face_of(model).z_shape
            self.module, self.inputs, self.outputs = model, ["z"], ["image"]
        elif self.kind == "classifier":
            from ..evaluation import classifier_shape

            size, ch = classifier_shape(model)
            self.shape = (ch, size, size)
            self.module, self.inputs, self.outputs = model, ["image"], ["logits"]
        elif self.kind == "image-to-image":
            from ..models.img2img import size_multiple

            self.shape = face_of(model).input_shape
            self.module, self.inputs, self.outputs = model, ["image"], ["output"]
            # a fully convolutional family is exported with free H and W (a video frame runs whole, not tiled); parity is
            # then also checked at another size, a multiple of it
            self.size_multiple = size_multiple(model)
        else:
            self.shape = (model.channels, model.image_size, model.image_size)
            self.module, self.outputs = _GuidedNet(model), ["model_output"]
            self.inputs = ["sample", "timestep"] + (["class_labels"] if model.num_classes is not None else [])

    def other_size(self) -> int | None:
        """The second H = W that parity checks a free-size graph at: twice the training size plus one multiple."""
        if not self.size_multiple:
            return None
        return 2 * self.shape[-1] + self.size_multiple

    def random_inputs(self, batch: int, gen: torch.Generator, size: int | None = None) -> tuple[torch.Tensor, ...]:
        if self.kind == "generator":
            return (torch.randn(batch, *self.z_shape, generator=gen),)
        shape = self.shape if size is None else (*self.shape[:-2], size, size)
        x = torch.randn(batch, *shape, generator=gen)
        if self.kind == "classifier":
            return (x,)
        if self.kind == "image-to-image":
            return (x.clamp(-1, 1),)  # images, in the range they come in
        t = torch.randint(0, self.model.num_train_timesteps, (batch,), generator=gen)
        if self.model.num_classes is None:
            return x, t
        return x, t, torch.randint(0, self.model.num_classes, (batch,), generator=gen)

    @torch.no_grad()
    def reference(self, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
        device = next(self.module.parameters()).device
        return self.module(*(i.to(device) for i in inputs)).float().cpu().numpy()

    def feeds(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        return {name: t.numpy() for name, t in zip(self.inputs, inputs)}


def parity(graph: Graph, run: Callable[[tuple[torch.Tensor, ...]], np.ndarray], *, seed: int = 1234,
           free_size: bool = False) -> dict[str, Any]:
    """max |exported - PyTorch| and that over max |PyTorch| at each of PARITY_BATCHES, on fresh random inputs; `free_size`
    (an image-to-image graph exported with free H and W): also at batch 1 of graph.other_size() px."""
    gen = torch.Generator().manual_seed(seed)
    per_batch, worst_abs, worst_rel, scale = {}, 0.0, 0.0, 1.0
    checks = [(b, None) for b in PARITY_BATCHES] + ([(1, graph.other_size())] if free_size and graph.other_size() else [])
    for b, size in checks:
        inputs = graph.random_inputs(b, gen, size)
        try:
            got = np.asarray(run(inputs))
        except Exception as e:
            at = f"batch {b}" + (f" at {size} px" if size else "")
            raise KdgenError(f"the exported student fails at {at} ({_first_line(e)}); nothing was kept - try --format torchscript "
                             "or another --opset") from None
        ref = graph.reference(inputs)
        scale = max(scale, float(np.abs(ref).max()))
        if got.shape != ref.shape:
            raise KdgenError(f"the exported student gives shape {list(got.shape)} at batch {b} where PyTorch gives {list(ref.shape)}; "
                             "the export is broken - report it with the run's config.yaml")
        err = float(np.abs(got - ref).max())
        rel = err / max(float(np.abs(ref).max()), 1e-12)
        per_batch[f"b{b}" + (f"@{size}px" if size else "")] = {"max_abs": err, "max_rel": rel}
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
    return {"max_abs": worst_abs, "max_rel": worst_rel, "batches": per_batch, "seed": seed, "tolerance": PARITY_TOL * scale}


def _check_parity(what: str, result: dict) -> None:
    if not result["max_abs"] <= result["tolerance"]:
        raise KdgenError(f"the {what} export does not match PyTorch (max abs error {result['max_abs']:.3g} > {result['tolerance']:.3g}); "
                         "it was not kept - try another --opset or --format torchscript, and report the model if it persists")
