"""Registry-driven: every registered method builds on a tiny teacher, runs forward/backward, and trains all its parts."""

import pytest
import torch

from kdgen.errors import KdgenError
from kdgen.methods import METHODS, GeneratorDistiller, TermContext, build_terms, method_kind
from kdgen.models import build_student
from kdgen.models.loading import load_model


def _method(tiny_teacher, raw):
    teacher = load_model(tiny_teacher)
    student, _ = build_student(teacher, width=0.5, init="prune")
    ctx = TermContext(student=student, teacher=teacher, teacher_path=tiny_teacher, z_shape=(16,))
    return GeneratorDistiller(student=student, teacher=teacher, terms=build_terms(raw, ctx), z_shape=(16,))


@pytest.mark.parametrize("name", [n for n in METHODS.names() if method_kind(n) == "gan"  # GAN loss terms (on a noise -> image
                                  and not getattr(METHODS.get(n), "paired_only", False)])  # generator; truth: test_image_to_image)
def test_every_method_trains_every_part(tiny_teacher, name):
    torch.manual_seed(0)
    method = _method(tiny_teacher, {name: {"weight": 1.0}}).train()
    batch = {"image": torch.rand(8, 1, 28, 28) * 2 - 1}
    for phase in method.phases:
        method.zero_grad(set_to_none=True)
        out = method(batch, phase)
        assert torch.isfinite(out.loss) and out.logs
        out.loss.backward()
        own = [p for t in method.terms.values() for p in t.trainable(phase)]  # adapters, discriminator
        student = list(method.student.parameters()) if phase == "student" else []
        assert set(map(id, own + student)) == set(map(id, method.trainable(phase)))
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
        if student:  # every student layer the term reaches (a feature-only term never reaches the last conv)
            assert sum(p.grad is not None for p in student) >= len(student) - 2
    assert all(not p.requires_grad and p.grad is None for p in method.teacher.parameters())  # the teacher is frozen
    assert not method.teacher.training


def test_teacher_stays_frozen_and_out_of_checkpoints(tiny_teacher):
    method = _method(tiny_teacher, {"output": {}, "adversarial": {}})
    method.train()
    assert not method.teacher.module.training
    assert not any(k.startswith("teacher.") for k in method.checkpoint_state())
    assert any(k.startswith("terms.adversarial.discriminator.") for k in method.checkpoint_state())
    assert method.phases == ("discriminator", "student")


def test_output_loss_falls_on_a_fixed_batch(tiny_teacher):
    torch.manual_seed(0)
    method = _method(tiny_teacher, {"output": {"weight": 1.0}, "feature": {"weight": 1.0}}).train()
    opt = torch.optim.Adam(method.trainable("student"), lr=3e-3)
    batch = {"image": torch.zeros(16, 1, 28, 28)}
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # same z every step
        out = method(batch, "student")
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.logs["loss/output"])
    assert losses[-1] < 0.7 * losses[0]


def test_feature_adapters_map_student_to_teacher_channels(tiny_teacher):
    method = _method(tiny_teacher, {"feature": {"layers": ["blocks.1", "blocks.2"]}})
    a = method.terms["feature"].adapters[0]  # blocks.1
    assert (a.in_channels, a.out_channels) == (8, 16)


def test_feature_unknown_layer_names_nearest(tiny_teacher):
    with pytest.raises(KdgenError, match=r"no layer 'block.1'; nearest real names: blocks.1"):
        _method(tiny_teacher, {"feature": {"layers": ["block.1"]}})


def test_adversarial_init_from_teacher_discriminator(tiny_teacher):
    method = _method(tiny_teacher, {"adversarial": {"init": "teacher"}})
    shipped = load_model(tiny_teacher / "discriminator")
    d = method.terms["adversarial"].discriminator
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), shipped.state_dict().values()))


def test_methods_needing_a_teacher_refuse_none(tiny_teacher):
    teacher = load_model(tiny_teacher)
    terms = build_terms({"output": {}}, TermContext(student=teacher, teacher=teacher, z_shape=(16,)))
    with pytest.raises(KdgenError, match="need a teacher"):
        GeneratorDistiller(student=teacher, teacher=None, terms=terms, z_shape=(16,))


def test_a_term_of_weight_zero_is_off(tiny_teacher):
    teacher = load_model(tiny_teacher)
    ctx = TermContext(student=teacher, teacher=teacher, teacher_path=tiny_teacher, z_shape=(16,))
    terms = build_terms({"output": {"weight": 1.0}, "adversarial": {"weight": 0}}, ctx)
    assert list(terms) == ["output"]  # no discriminator is built, none is trained
    with pytest.raises(KdgenError, match="every method's weight is 0"):
        build_terms({"output": {"weight": 0}, "adversarial": {"weight": 0.0}}, ctx)


# every kind, from the registry: a method added later is covered here without a new test (its options default to {})
OPTIONS = {
    "fitnet": {"student_layers": ["blocks.1"], "teacher_layers": ["blocks.1"]},
    "attention": {"student_layers": ["blocks.0"], "teacher_layers": ["blocks.0"]},
    "progressive": {"from_steps": 8, "to_steps": 4},
    "consistency": {"solver_steps": 8, "steps": 2},
    "onestep": {"teacher_steps": 2, "cache_size": 8},
}


def _classifier_method(name):
    from kdgen.methods import ClassifierContext, ClassifierDistiller, build_classifier_terms
    from kdgen.models.loading import build_model

    torch.manual_seed(0)
    teacher = build_model("cnn", {"image_size": 8, "widths": [16, 32]}).eval().requires_grad_(False)
    student = build_model("cnn", {"image_size": 8, "widths": [4, 8]})
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    terms, weights = build_classifier_terms({name: OPTIONS.get(name, {})}, ClassifierContext(student=student, teacher=teacher, example=x))
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x)
    return method, {"image": x, "label": torch.arange(6) % 10}


def _diffusion_method(name, tmp_path):
    from diffusion_fixtures import tiny_diffusion

    from kdgen.methods import parse_methods
    from kdgen.models.unet import build_diffusion_student

    teacher = tiny_diffusion()
    cls = METHODS.get(name)
    options = parse_methods({name: OPTIONS.get(name, {})})[name]
    width = 0.5 if name == "structural" else 1.0
    student = build_diffusion_student(teacher, width=width, layers_per_block=None, attention=True, init="prune", seed=0)[0]
    method = cls(options, student=student.train().requires_grad_(True), teacher=teacher, round=cls.plan(options, teacher)[0])
    data = method.prepare_data(torch.utils.data.TensorDataset(), tmp_path) if name == "onestep" else None
    if data is not None:
        return method, {k: torch.stack([data[i][k] for i in range(4)]) for k in ("noise", "image")}
    return method, {"image": torch.rand(4, 1, 16, 16) * 2 - 1}


@pytest.mark.parametrize("name", [n for n in METHODS.names() if method_kind(n) != "gan"])
def test_every_classifier_and_diffusion_method_trains_its_student_and_leaves_the_teacher(name, tmp_path):
    method, batch = (_classifier_method(name) if method_kind(name) == "classifier" else _diffusion_method(name, tmp_path))
    method.train()
    for phase in method.phases:
        method.zero_grad(set_to_none=True)
        out = method(batch, phase)
        assert torch.isfinite(out.loss) and out.logs
        out.loss.backward()
        student = {id(p) for p in method.student.parameters()}
        own = [p for p in method.trainable(phase) if id(p) not in student]  # adapters and the like: always reached
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
        reached = [p for p in method.student.parameters() if p.grad is not None]  # a feature term reaches the layers up to its tap
        assert reached and all(torch.isfinite(p.grad).all() for p in reached)
    teacher = method.teacher.module
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters()) and not teacher.training
    assert not any(k.startswith("teacher.") for k in method.checkpoint_state())


def test_simclr_views_and_loss():
    """Augmented views stay in range and differ per image; NT-Xent is low when pairs match and high when they do not."""
    from kdgen.methods.contrastive import augment, nt_xent

    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    a, b = augment(x, crop=0.5, flip=True, jitter=0.4), augment(x, crop=0.5, flip=True, jitter=0.4)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1 and not torch.allclose(a, b)
    assert not torch.allclose(augment(x, crop=1.0, flip=False, jitter=0.0), x[:1].expand_as(x))
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    matched, acc = nt_xent(torch.cat([z, z]), 0.1)
    shuffled, _ = nt_xent(torch.cat([z, z[torch.randperm(8)]]), 0.1)
    assert acc == 1.0 and matched < shuffled
    grey = augment(x[:, :1], crop=0.5, flip=False, jitter=0.4)
    assert grey.shape == (8, 1, 16, 16)
