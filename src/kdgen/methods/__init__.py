"""Registered distillation methods. Every method file is imported here, explicitly.

Generator methods are loss terms combined with weights in the recipe:

    methods:
      output: {weight: 1.0, distance: l1}
      feature: {weight: 1.0}
      adversarial: {weight: 0.01}
"""

from __future__ import annotations

from typing import Any

from ..config import from_dict
from . import adversarial, feature, output, perceptual  # noqa: F401  (registration)
from .base import DistillationMethod, GenBatch, LossTerm, StepOutput, TermContext
from .generator import GeneratorDistiller
from .registry import METHODS


def parse_methods(raw: dict[str, Any]) -> dict[str, Any]:
    """{name: Options} for the recipe's `methods` section; unknown names/options fail with a sentence."""
    return {name: from_dict(METHODS.get(name).Options, opts, f"methods.{name}") for name, opts in raw.items()}


def build_terms(raw: dict[str, Any], ctx: TermContext) -> dict[str, LossTerm]:
    return {name: METHODS.get(name)(opts, ctx) for name, opts in parse_methods(raw).items()}


__all__ = [
    "METHODS", "DistillationMethod", "GeneratorDistiller", "GenBatch", "LossTerm", "StepOutput", "TermContext",
    "build_terms", "parse_methods",
]
