"""A student for a model kdgen has never seen: the teacher, structurally pruned to `width` of its channels.

torch-pruning's dependency graph (DepGraph, Fang et al., CVPR 2023) finds which layers' channels must go
together — through residual additions, skip concatenations, group norms — and removes the lowest-L1
channels of every such group (Li et al. 2017, "Pruning filters for efficient convnets"), so the
student starts as a sub-network of the teacher with the teacher's weights. A fraction `width` of the
channels is kept in every group (MACs fall by about width²). The layer that makes the model's output
(the last weighted layer the forward pass runs) keeps its output channels, so images and logits keep
their shape.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import KdgenError
from ..faces import Face, set_face

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def example_input(face: Face, batch: int = 2) -> torch.Tensor:
    if face.kind == "generator":
        return torch.randn(batch, *face.z_shape, generator=torch.Generator().manual_seed(0))
    if face.kind == "classifier":
        return torch.randn(batch, *face._shape(), generator=torch.Generator().manual_seed(0))
    if face.kind == "image-to-image":
        return torch.randn(batch, *face.input_shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    raise KdgenError(f"kdgen derives pruned students of generators and classifiers; a {face.kind} student comes from its own "
                     "family (student.width for diffusers UNets) or is given")


@torch.no_grad()
def output_layers(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The last weighted layer the forward pass runs: it makes the output, so it keeps its output channels."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if hasattr(m, "out_channels") else m.out_features


def prune_student(teacher: nn.Module, face: Face, *, width: float, seed: int = 0, keep: dict[str, int] | None = None) -> nn.Module:
    """A copy of `teacher` with `width` of the channels of every dependency group kept (largest L1 first).

    `keep` names layers whose output channels must end at exactly that count (torch-pruning floors `width` x channels;
    kdgen's own families round their widths, and their students must match their args)."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise KdgenError("deriving a student from a model kdgen does not define needs torch-pruning; pip install torch-pruning") from None
    if not 0 < width <= 1:
        raise KdgenError(f"student.width must be in (0, 1], got {width}")
    student = copy.deepcopy(teacher).cpu().eval().requires_grad_(True)
    x = example_input(face)
    with torch.no_grad():
        want = student(x).shape
    if width < 1 or keep:
        torch.manual_seed(seed)
        try:
            modules = dict(student.named_modules())
            # tp keeps int(C x (1 - ratio)) channels: aim half a channel above the count so the floor lands on it
            ratios = {modules[n]: 0.0 if k >= _out_channels(modules[n]) else 1.0 - (k + 0.5) / _out_channels(modules[n])
                      for n, k in (keep or {}).items()}
            pruner = tp.pruner.MetaPruner(student, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=1.0 - width,
                                          pruning_ratio_dict=ratios, ignored_layers=output_layers(student, x))
            pruner.step()
            for m in student.modules():  # torch-pruning shrinks an InstanceNorm's affine weights but not its num_features
                if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.weight is not None:
                    m.num_features = m.weight.numel()
        except KdgenError:
            raise
        except Exception as e:  # torch-pruning could not trace or split this graph
            raise KdgenError(f"torch-pruning could not prune {type(teacher).__name__} ({type(e).__name__}: {e}); give a student "
                             "(student.class / student=) instead") from None
        with torch.no_grad():
            got = student(x).shape
        if sum(p.numel() for p in student.parameters()) >= sum(p.numel() for p in teacher.parameters()):
            raise KdgenError(f"torch-pruning removed no channel from {type(teacher).__name__} at student.width={width}; give a "
                             "student (student.class / student=) instead")
        if got != want:
            raise KdgenError(f"pruning changed {type(teacher).__name__}'s output from {tuple(want)} to {tuple(got)}; give a student "
                             "(student.class / student=) instead")
    for attr in ("kdgen_class", "kdgen_args"):  # the student is rebuilt from the teacher's class and args + its structure
        if hasattr(teacher, attr):
            object.__setattr__(student, attr, getattr(teacher, attr))
    for attr in ("kdgen_meta", "kdgen_path", "kdgen_weights"):
        student.__dict__.pop(attr, None)
    set_face(student, face)
    return student.train()
