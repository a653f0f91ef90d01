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

Classifier methods (classic knowledge distillation) are loss terms too, weighted and summed against a
classifier teacher:

    methods:
      hinton: {temperature: 4, alpha: 0.1}
      fitnet: {weight: 0.5, student_layers: [hidden.1], teacher_layers: [hidden.1]}
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import from_dict
from ..errors import KdgenError
from . import adversarial, attention, consistency, dkd, feature, fitnet, hinton, onestep, output, perceptual, progressive, structural  # noqa: F401  (registration of every method)
from .base import DistillationMethod, GenBatch, LossTerm, StepOutput, TermContext
from .classifier_base import ClassifierContext, ClassifierDistiller, ClassifierTerm, refuse_true_class_terms
from .generator import GeneratorDistiller
from .registry import METHODS

log = logging.getLogger("kdgen")


def parse_methods(raw: dict[str, Any]) -> dict[str, Any]:
    """{name: Options} for the recipe's `methods` section; unknown names/options fail with a sentence."""
    return {name: from_dict(METHODS.get(name).Options, opts, f"methods.{name}") for name, opts in raw.items()}


def is_diffusion_method(name: str) -> bool:
    from .diffusion_base import DiffusionMethod

    return isinstance(METHODS.get(name), type) and issubclass(METHODS.get(name), DiffusionMethod)


def is_classifier_method(name: str) -> bool:
    return isinstance(METHODS.get(name), type) and issubclass(METHODS.get(name), ClassifierTerm)


def method_kind(name: str) -> str:
    """'diffusion', 'classifier' or 'gan' (generator loss terms)."""
    return "diffusion" if is_diffusion_method(name) else "classifier" if is_classifier_method(name) else "gan"


def check_method_mix(raw: dict[str, Any], *, diffusion_teacher: bool | None = None, classifier_teacher: bool | None = None) -> None:
    """One kind of method per recipe (GAN loss terms, diffusion methods or classifier terms), fitting the teacher;
    a diffusion recipe names at most one step method."""
    from .diffusion_base import STEP_METHODS

    kinds = {k: [n for n in raw if method_kind(n) == k] for k in ("gan", "diffusion", "classifier")}
    diff, gan, cls = kinds["diffusion"], kinds["gan"], kinds["classifier"]
    if cls and (gan or diff):
        raise KdgenError(f"methods {cls} distil classifiers and {gan or diff} {'GAN loss terms' if gan else 'diffusion methods'}; "
                         "a recipe uses one kind (see `kdgen methods`)")
    if diff and gan:
        raise KdgenError(f"methods {gan} are GAN loss terms and {diff} diffusion methods; a recipe uses one kind (see `kdgen methods`)")
    steps = [n for n in diff if n in STEP_METHODS]
    if len(steps) > 1:
        raise KdgenError(f"methods {steps} each set the student's sampling steps; name one of them (structural may join it)")
    if classifier_teacher is True and (gan or diff):
        raise KdgenError(f"the teacher is a classifier, not an image generator, but methods {gan or diff} distil generators; use hinton, dkd, fitnet or attention")
    if classifier_teacher is False and cls:
        raise KdgenError(f"methods {cls} distil classifiers, but the teacher makes images; use output, feature, perceptual or adversarial "
                         "(GAN) or progressive, consistency, onestep or structural (diffusion)")
    if diffusion_teacher is True and gan:
        raise KdgenError(f"the teacher is a diffusion model, but methods {gan} distil GAN generators; use progressive, consistency, onestep or structural")
    if diffusion_teacher is False and diff:
        raise KdgenError(f"methods {diff} distil diffusion models, but the teacher is a one-call generator; use output, feature, perceptual or adversarial")


def build_classifier_terms(raw: dict[str, Any], ctx: ClassifierContext) -> tuple[dict[str, ClassifierTerm], dict[str, float]]:
    """The recipe's classifier terms, built, and their weights."""
    opts = parse_methods(raw)
    terms = {name: METHODS.get(name)(o, ctx) for name, o in opts.items()}
    if ctx.transfer:  # refused before the pool is drawn
        refuse_true_class_terms(terms)
    return terms, {name: o.weight for name, o in opts.items()}


def measurement_caveats(raw: dict[str, Any], eval_features: str) -> list[str]:
    """What a recipe's methods mean for the evaluation protocol, in words for metrics.json."""
    from ..io import resolve_path

    notes = []
    opts = raw.get("perceptual")
    if opts is not None and resolve_path(opts.get("features", "builtin:featnet-mnist5k")) == resolve_path(eval_features):
        notes.append("the perceptual loss trained the student in the same feature space FID/KID are measured in")
    return notes


def build_terms(raw: dict[str, Any], ctx: TermContext) -> dict[str, LossTerm]:
    """The recipe's loss terms, built; a term of weight 0 is off and costs nothing (no discriminator, no teacher features)."""
    opts = parse_methods(raw)
    on = {name: o for name, o in opts.items() if getattr(o, "weight", 1.0) != 0}
    if opts and not on:
        raise KdgenError(f"every method's weight is 0 ({', '.join(opts)}), so nothing would train the student; give one a weight above 0")
    for name in opts.keys() - on.keys():
        log.info("methods.%s.weight is 0: the term is off", name)
    return {name: METHODS.get(name)(o, ctx) for name, o in on.items()}


__all__ = [
    "METHODS", "DistillationMethod", "GeneratorDistiller", "GenBatch", "LossTerm", "StepOutput", "TermContext",
    "build_terms", "check_method_mix", "is_diffusion_method", "measurement_caveats", "parse_methods",
    "ClassifierContext", "ClassifierDistiller", "ClassifierTerm", "build_classifier_terms", "is_classifier_method", "method_kind",
]
