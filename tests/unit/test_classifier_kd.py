"""Classic KD for classifiers: golden loss values, the frozen teacher, adapters, layer names, models, method mix."""

import math

import pytest
import torch

from kdgen.errors import KdgenError
from kdgen.methods import ClassifierContext, ClassifierDistiller, build_classifier_terms, check_method_mix
from kdgen.methods.attention import at_loss, attention_map
from kdgen.methods.dkd import dkd_loss
from kdgen.methods.fitnet import FitNetTerm
from kdgen.methods.hinton import hinton_loss, soft_kl
from kdgen.models.loading import build_model

S, T, Y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
KL_T1 = math.tanh(0.5)  # KL(softmax([0,1]) || softmax([1,0])) = (sigmoid(1) - sigmoid(-1)) * 1
KL_T2 = math.tanh(0.25) * 0.5  # the same logits divided by T = 2
CE = math.log(1 + math.exp(-1))  # -log softmax([1,0])[0]


def test_soft_term_matches_hand_values_with_t_squared_scaling():
    assert soft_kl(S, T, 1.0).item() == pytest.approx(KL_T1, rel=1e-5)
    assert soft_kl(S, T, 2.0).item() == pytest.approx(4 * KL_T2, rel=1e-5)  # T^2 = 4 times the KL at T = 2
    assert soft_kl(T, T, 3.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("alpha, want", [(0.0, 4 * KL_T2), (1.0, CE), (0.25, 0.25 * CE + 0.75 * 4 * KL_T2)])
def test_hinton_loss_alpha_mixes_hard_and_soft_terms(alpha, want):
    assert hinton_loss(S, T, Y, temperature=2.0, alpha=alpha).item() == pytest.approx(want, rel=1e-5)


def test_hinton_without_labels_is_teacher_only_and_alpha_needs_labels():
    assert hinton_loss(S, T, None, temperature=2.0, alpha=0.0).item() == pytest.approx(4 * KL_T2, rel=1e-5)
    with pytest.raises(KdgenError, match="needs labels"):
        hinton_loss(S, T, None, temperature=2.0, alpha=0.5)


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_dkd_matches_hand_values_and_decomposes_classic_kd():
    s, t, y, temp = [2.0, 0.5, -1.0], [1.0, 1.5, 0.0], 0, 2.0
    ps, pt = _softmax([v / temp for v in s]), _softmax([v / temp for v in t])
    tckd = _kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = _kl([v / (1 - pt[0]) for v in pt[1:]], [v / (1 - ps[0]) for v in ps[1:]])
    args = (torch.tensor([s]), torch.tensor([t]), torch.tensor([y]))
    got = dkd_loss(*args, temperature=temp, alpha=1.0, beta=8.0).item()
    assert got == pytest.approx(temp**2 * (tckd + 8 * nckd), rel=1e-4)
    # Zhao et al. eq. 5: classic KD = TCKD + (1 - p_t(y)) * NCKD
    kd = soft_kl(args[0], args[1], temp).item()
    assert dkd_loss(*args, temperature=temp, alpha=1.0, beta=1 - pt[0]).item() == pytest.approx(kd, rel=1e-4)


def test_dkd_warmup_ramps_the_kd_part_linearly_and_is_checkpointed():
    from kdgen.methods.classifier_base import ClsBatch
    from kdgen.methods.dkd import DKDTerm

    s, t, y = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[1.0, 1.5, 0.0]]), torch.tensor([0])
    ce = torch.nn.functional.cross_entropy(s, y).item()
    kd = dkd_loss(s, t, y, temperature=4.0, alpha=1.0, beta=8.0).item()
    ctx = ClassifierContext(student=torch.nn.Identity(), teacher=torch.nn.Identity(), example=torch.zeros(1, 1, 1, 1))
    term = DKDTerm(DKDTerm.Options(warmup=4), ctx).train()
    got = [term.loss(ClsBatch(s, t, y)).item() for _ in range(6)]
    assert got == pytest.approx([ce + r * kd for r in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)], rel=1e-5)
    term.eval()  # evaluation passes neither count nor change the ramp
    assert term.loss(ClsBatch(s, t, y)).item() == pytest.approx(ce + kd, rel=1e-5) and int(term.steps_seen) == 6
    fresh = DKDTerm(DKDTerm.Options(warmup=4), ctx).train()
    fresh.load_state_dict({"steps_seen": torch.tensor(1)})  # a resumed run continues the ramp from its checkpoint
    assert fresh.loss(ClsBatch(s, t, y)).item() == pytest.approx(ce + 0.5 * kd, rel=1e-5)
    no_ramp = DKDTerm(DKDTerm.Options(), ctx).train()
    assert no_ramp.loss(ClsBatch(s, t, y)).item() == pytest.approx(ce + kd, rel=1e-5)
    from kdgen.methods import parse_methods

    with pytest.raises(KdgenError, match=r"'methods.dkd.warmup' must be >= 0"):
        parse_methods({"dkd": {"warmup": -1}})


def test_attention_maps_are_unit_norm_and_resized():
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 8, 8)
    q = attention_map(b)
    assert q.shape == (2, 64) and torch.allclose(q.norm(dim=1), torch.ones(2))
    assert at_loss(a, b).item() > 0 and at_loss(b, b).item() == pytest.approx(0.0, abs=1e-7)


def _pair(teacher_family="cnn", student_family="cnn"):
    torch.manual_seed(0)
    teacher = build_model(teacher_family, {"image_size": 8, "widths": [16, 32]} if teacher_family == "cnn" else {"image_size": 8, "hidden": [32, 32]})
    student = build_model(student_family, {"image_size": 8, "widths": [4, 8]} if student_family == "cnn" else {"image_size": 8, "hidden": [16]})
    return teacher.eval().requires_grad_(False), student


def _distiller(raw, teacher, student, x):
    terms, weights = build_classifier_terms(raw, ClassifierContext(student=student, teacher=teacher, example=x))
    return ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x, shift=1)


def test_gradients_reach_student_and_adapters_only_and_teacher_stays_frozen():
    teacher, student = _pair()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    raw = {"hinton": {"temperature": 4.0, "alpha": 0.5}, "fitnet": {"student_layers": ["blocks.1"], "teacher_layers": ["blocks.1"]},
           "attention": {"student_layers": ["blocks.0"], "teacher_layers": ["blocks.0"]}, "dkd": {}}
    method = _distiller(raw, teacher, student, x).train()
    out = method({"image": x, "label": torch.arange(6) % 10}, "student")
    out.loss.backward()
    assert {"loss/hinton", "loss/fitnet", "loss/attention", "loss/dkd", "train/agreement"} <= set(out.logs)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.trainable("student"))
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not method.teacher.training and not method.teacher.module.training and method.student.training
    assert not any(k.startswith("teacher.") for k in method.checkpoint_state())
    assert int(method.checkpoint_state()["terms.dkd.steps_seen"]) == 1  # the DKD warm-up count travels with checkpoints


def test_teacher_only_distillation_runs_without_labels():
    teacher, student = _pair()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    terms, weights = build_classifier_terms({"hinton": {"alpha": 0.0, "temperature": 2.0}},
                                            ClassifierContext(student=student, teacher=teacher, example=x, has_labels=False))
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x).train()
    out = method({"image": x}, "student")
    want = soft_kl(student(x), teacher(x), 2.0)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5) and out.loss.item() > 0


def test_fitnet_adapters_for_mismatched_shapes_only():
    teacher, student = _pair()
    x = torch.zeros(2, 1, 8, 8)
    ctx = ClassifierContext(student=student, teacher=teacher, example=x)
    conv = FitNetTerm(FitNetTerm.Options(student_layers=["blocks.1"], teacher_layers=["blocks.1"]), ctx)
    assert isinstance(conv.adapters[0], torch.nn.Conv2d) and conv.adapters[0].weight.shape[:2] == (32, 8)
    same = FitNetTerm(FitNetTerm.Options(student_layers=["blocks.1"], teacher_layers=["blocks.1"]),
                      ClassifierContext(student=teacher, teacher=teacher, example=x))
    assert isinstance(same.adapters[0], torch.nn.Identity)
    t_mlp, s_mlp = _pair("mlp", "mlp")
    lin = FitNetTerm(FitNetTerm.Options(student_layers=["hidden.0"], teacher_layers=["hidden.1"]),
                     ClassifierContext(student=s_mlp, teacher=t_mlp, example=x))
    assert isinstance(lin.adapters[0], torch.nn.Linear) and lin.adapters[0].weight.shape == (32, 16)


@pytest.mark.parametrize("raw, pattern", [
    ({"fitnet": {"student_layers": ["blocks.7"], "teacher_layers": ["blocks.1"]}}, r"the student has no layer 'blocks.7'; nearest real names"),
    ({"attention": {"student_layers": ["blocks.0"], "teacher_layers": ["layer9"]}}, r"the teacher has no layer 'layer9'"),
    ({"fitnet": {"student_layers": ["blocks.0"], "teacher_layers": []}}, r"same, non-zero length"),
])
def test_bad_layer_names_fail_with_a_sentence(raw, pattern):
    teacher, student = _pair()
    with pytest.raises(KdgenError, match=pattern):
        build_classifier_terms(raw, ClassifierContext(student=student, teacher=teacher, example=torch.zeros(2, 1, 8, 8)))


def test_class_count_mismatch_and_unlabelled_data_fail_with_a_sentence():
    teacher, _ = _pair()
    student = build_model("mlp", {"image_size": 8, "hidden": [8], "num_classes": 5})
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(KdgenError, match="the student predicts 5 classes and the teacher 10"):
        _distiller({"hinton": {}}, teacher, student, x)
    with pytest.raises(KdgenError, match="alpha=0.1 needs labels"):
        build_classifier_terms({"hinton": {}}, ClassifierContext(student=student, teacher=teacher, example=x, has_labels=False))


@pytest.mark.parametrize("override, pattern", [
    ("methods.hinton.temperature=0", r"'methods.hinton.temperature' must be > 0"),
    ("methods.hinton.alpha=1.5", r"'methods.hinton.alpha' must be <= 1"),
])
def test_bad_temperature_and_alpha_are_config_errors(override, pattern):
    from kdgen.runs import task_config

    with pytest.raises(KdgenError, match=pattern):
        task_config("configs/classifier/digits-hinton.yaml", [override], "distill")


def test_method_kinds_do_not_mix():
    with pytest.raises(KdgenError, match="distil classifiers and .* GAN loss terms"):
        check_method_mix({"hinton": {}, "output": {}})
    with pytest.raises(KdgenError, match="distil classifiers and .* diffusion methods"):
        check_method_mix({"dkd": {}, "progressive": {}})
    with pytest.raises(KdgenError, match="the teacher makes images"):
        check_method_mix({"hinton": {}}, classifier_teacher=False)
    with pytest.raises(KdgenError, match="the teacher is a classifier"):
        check_method_mix({"output": {}}, classifier_teacher=True)
    check_method_mix({"hinton": {}, "fitnet": {}}, classifier_teacher=True)


@pytest.mark.parametrize("family, args, shape", [
    ("mlp", {"hidden": [1200, 1200], "dropout": 0.2}, (1, 28)),
    ("cnn", {"widths": [8, 16, 32]}, (3, 8)),
    ("resnet", {"arch": "resnet18", "channels": 1}, (1, 8)),
])
def test_classifier_families_give_logits(family, args, shape):
    ch, size = shape
    model = build_model(family, {"image_size": size, **({"channels": ch} if "channels" not in args else {}), **args}).eval()
    assert model(torch.zeros(2, ch, size, size)).shape == (2, 10)
    if family == "resnet":
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1


def test_bad_model_args_are_sentences():
    with pytest.raises(KdgenError, match="hidden must list at least one"):
        build_model("mlp", {"hidden": []})
    with pytest.raises(KdgenError, match="arch must be one of resnet18"):
        build_model("resnet", {"arch": "vgg"})


def test_transfer_images_join_the_batch_unlabelled_and_only_in_training():
    """Two pool images join four labelled ones: the hard-label part sees the four, the soft part all six."""
    teacher, student = _pair("mlp", "mlp")
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])
    pool = torch.rand(1, 1, 8, 8) * 2 - 1  # one image: every draw picks it, so the batch is known
    terms, weights = build_classifier_terms({"hinton": {"temperature": 2.0, "alpha": 0.5}},
                                            ClassifierContext(student=student, teacher=teacher, example=x, transfer=True))
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x,
                                 transfer=pool, transfer_batch=2).train()
    out = method({"image": x, "label": y}, "student")
    both = torch.cat([x, pool, pool])
    want = 0.5 * torch.nn.functional.cross_entropy(student(x), y) + 0.5 * soft_kl(student(both), teacher(both), 2.0)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    plain = hinton_loss(student(x), teacher(x), y, temperature=2.0, alpha=0.5)
    assert abs(out.loss.item() - plain.item()) > 1e-4  # the pool images changed the loss
    assert method.eval()({"image": x, "label": y}, "student").loss.item() == pytest.approx(plain.item(), rel=1e-5)
    state = method.checkpoint_state()
    assert int(state["transfer_seen"]) == 2 and not any(v.numel() > 1 for k, v in state.items() if "transfer" in k)  # no pool in checkpoints


def test_transfer_pool_is_seeded_generator_output_and_shapes_must_match():
    from kdgen.transfer import draw_transfer_pool, load_transfer_generator

    gen = load_transfer_generator("builtin:gan-mnist5k")
    a = draw_transfer_pool(gen, 7, image_size=28, channels=1, seed=3, batch=4)
    b = draw_transfer_pool(gen, 7, image_size=28, channels=1, seed=3, batch=7)
    assert a.shape == (7, 1, 28, 28) and a.min() >= -1 and a.max() <= 1 and a.std() > 0.1
    assert torch.allclose(a, b, atol=1e-5)  # the same latents whatever the batching
    assert not torch.allclose(a, draw_transfer_pool(gen, 7, image_size=28, channels=1, seed=4))
    with pytest.raises(KdgenError, match=r"makes 1x28x28 images but the teacher reads 1x8x8"):
        draw_transfer_pool(gen, 2, image_size=8, channels=1, seed=0)
    with pytest.raises(KdgenError, match=r"is a classifier, not a GAN generator"):
        load_transfer_generator("builtin:featnet-mnist5k")
    with pytest.raises(KdgenError, match=r"data.transfer 'nowhere/gen' does not exist"):
        load_transfer_generator("nowhere/gen")
    teacher, student = _pair()
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(KdgenError, match=r"data.transfer adds images without one"):
        build_classifier_terms({"dkd": {}}, ClassifierContext(student=student, teacher=teacher, example=x, transfer=True))
    terms, weights = build_classifier_terms({"dkd": {}}, ClassifierContext(student=student, teacher=teacher, example=x))
    with pytest.raises(KdgenError, match=r"methods \['dkd'\] split the teacher's output at the true class"):  # the Python API path
        ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x, transfer=torch.zeros(3, 1, 8, 8))


def test_transfer_images_without_labels_and_with_shifts():
    """Teacher-only distillation (no labels) with a pool and data.shift: all rows go through both networks."""
    teacher, student = _pair("mlp", "mlp")
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    terms, weights = build_classifier_terms({"hinton": {"alpha": 0.0}},
                                            ClassifierContext(student=student, teacher=teacher, example=x, has_labels=False, transfer=True))
    method = ClassifierDistiller(student=student, teacher=teacher, terms=terms, weights=weights, example=x, shift=1,
                                 transfer=torch.rand(5, 1, 8, 8) * 2 - 1).train()
    out = method({"image": x}, "student")
    assert torch.isfinite(out.loss) and out.loss.item() > 0 and int(method.transfer_seen) == 3  # None: as many as the batch
