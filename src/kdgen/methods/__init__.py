"""Registered distillation methods. Every method file is imported here, explicitly.

Generator (GAN) methods are loss terms combined with weights in the recipe:

    methods:
      output: {weight: 1.0, distance: l1}
      feature: {weight: 1.0}
      adversarial: {weight: 0.01}

Diffusion methods are whole methods: at most one step method (progressive, consistency, onestep),
optionally after `structural` (a smaller UNet first, then fewer steps):

    methods:
      progressive: {from_steps: 64, to_steps: 4}
"""

from __future__ import annotations

from typing import Any

from ..config import from_dict
from ..errors import KdgenError
from . import adversarial, consistency, feature, onestep, output, perceptual, progressive, structural  # noqa: F401  (registration)
from .base import DistillationMethod, GenBatch, LossTerm, StepOutput, TermContext
from .generator import GeneratorDistiller
from .registry import METHODS


def parse_methods(raw: dict[str, Any]) -> dict[str, Any]:
    """{name: Options} for the recipe's `methods` section; unknown names/options fail with a sentence."""
    return {name: from_dict(METHODS.get(name).Options, opts, f"methods.{name}") for name, opts in raw.items()}


def is_diffusion_method(name: str) -> bool:
    from .diffusion_base import DiffusionMethod

    return isinstance(METHODS.get(name), type) and issubclass(METHODS.get(name), DiffusionMethod)


def check_method_mix(raw: dict[str, Any], *, diffusion_teacher: bool | None = None) -> None:
    """GAN loss terms and diffusion methods do not mix; a diffusion recipe names at most one step method."""
    from .diffusion_base import STEP_METHODS

    diff = [n for n in raw if is_diffusion_method(n)]
    gan = [n for n in raw if not is_diffusion_method(n)]
    if diff and gan:
        raise KdgenError(f"methods {gan} are GAN loss terms and {diff} diffusion methods; a recipe uses one kind (see `kdgen methods`)")
    steps = [n for n in diff if n in STEP_METHODS]
    if len(steps) > 1:
        raise KdgenError(f"methods {steps} each set the student's sampling steps; name one of them (structural may join it)")
    if diffusion_teacher is True and gan:
        raise KdgenError(f"the teacher is a diffusion model, but methods {gan} distil GAN generators; use progressive, consistency, onestep or structural")
    if diffusion_teacher is False and diff:
        raise KdgenError(f"methods {diff} distil diffusion models, but the teacher is a one-call generator; use output, feature, perceptual or adversarial")


def build_terms(raw: dict[str, Any], ctx: TermContext) -> dict[str, LossTerm]:
    return {name: METHODS.get(name)(opts, ctx) for name, opts in parse_methods(raw).items()}


__all__ = [
    "METHODS", "DistillationMethod", "GeneratorDistiller", "GenBatch", "LossTerm", "StepOutput", "TermContext",
    "build_terms", "check_method_mix", "is_diffusion_method", "parse_methods",
]
