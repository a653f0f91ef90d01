"""The four diffusion methods on a tiny random UNet: each lowers its own loss on a fixed batch, the
progressive round makes one student step match two teacher steps, bad settings are sentences."""

import copy

import pytest
import torch
from diffusion_fixtures import tiny_diffusion

from kdgen.errors import KdgenError
from kdgen.methods import METHODS, parse_methods
from kdgen.methods.diffusion_base import Round
from kdgen.models.unet import build_diffusion_student
from kdgen.sampling import DiffusionSampler


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # blobs in [-1, 1]: structured enough to learn, cheap to make
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centres = torch.rand(n, 2, generator=g) - 0.5
    d = (xx[None] - centres[:, 0, None, None]).square() + (yy[None] - centres[:, 1, None, None]).square()
    return {"image": (torch.exp(-d / 0.08) * 2 - 1)[:, None], "label": torch.arange(n) % 3}


def method_for(name, teacher, student=None, **opts):
    cls = METHODS.get(name)
    options = parse_methods({name: opts})[name]
    rnd = cls.plan(options, teacher)[0]
    student = student or build_diffusion_student(teacher, width=1.0, layers_per_block=None, attention=True, init="prune", seed=0)[0]
    return cls(options, student=student.train().requires_grad_(True), teacher=teacher, round=rnd)


def loss_at(method, b, seed=123):
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(method(b, "student").loss)


def fit(method, b, steps, lr=2e-3):
    opt = torch.optim.Adam(list(method.trainable("student")), lr=lr)
    method.train()
    for i in range(steps):
        torch.manual_seed(1000 + i)
        out = method(b, "student")
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    method.eval()


@pytest.mark.parametrize("name,opts", [
    ("progressive", {"from_steps": 8, "to_steps": 4}),
    ("consistency", {"solver_steps": 8, "steps": 2, "ema": 0.5}),
    ("structural", {}),
])
def test_each_method_lowers_its_loss_on_a_fixed_batch(name, opts):
    teacher = tiny_diffusion()
    student = None
    if name == "structural":
        student, _ = build_diffusion_student(teacher, width=0.5, layers_per_block=None, attention=False, init="random", seed=0)
    m = method_for(name, teacher, student, **opts)
    b = batch()
    before = loss_at(m, b)
    fit(m, b, 25)
    after = loss_at(m, b)
    assert after < 0.8 * before, (before, after)
    # the teacher never moved and stayed in eval mode
    assert not m.teacher.training and all(not p.requires_grad for p in m.teacher.parameters())


def test_onestep_lowers_its_loss_and_writes_a_resumable_cache(tmp_path):
    teacher = tiny_diffusion()
    m = method_for("onestep", teacher, teacher_steps=4, cache_size=300)
    data = m.prepare_data(None, tmp_path)
    parts = sorted((tmp_path / "cache").glob("part-*.safetensors"))
    assert len(data) == 300 and len(parts) == 2
    stamps = [p.stat().st_mtime_ns for p in parts]
    parts[1].unlink()  # an interrupted cache: only the missing part is sampled again
    again = m.prepare_data(None, tmp_path)
    assert parts[0].stat().st_mtime_ns == stamps[0] and parts[1].is_file()
    assert torch.equal(again[5]["image"], data[5]["image"]) and torch.equal(again[290]["noise"], data[290]["noise"])
    # data.teacher_cache: a folder shared by runs of this teacher - a second method (another run) draws nothing
    shared = method_for("onestep", teacher, teacher_steps=4, cache_size=300)
    shared.cache_root = str(tmp_path / "shared")
    assert torch.equal(shared.prepare_data(None, tmp_path / "run1")[7]["image"], data[7]["image"]) and shared.cache_made == 2
    other = method_for("onestep", teacher, teacher_steps=4, cache_size=300)
    other.cache_root = str(tmp_path / "shared")
    other.prepare_data(None, tmp_path / "run2")
    assert other.cache_made == 0 and other.cache_folder == shared.cache_folder and not (tmp_path / "run2" / "cache").exists()
    # the cached targets are the teacher's 4-step DDIM images of the cached noise
    z = torch.stack([data[i]["noise"] for i in range(3)])
    want = DiffusionSampler(teacher, steps=4).sample(3, seed=0, latents=z)
    assert torch.allclose(torch.stack([data[i]["image"] for i in range(3)]), want, atol=1e-5)
    b = {k: torch.stack([data[i][k] for i in range(32)]) for k in ("noise", "image")}
    before = loss_at(m, b)
    fit(m, b, 25)
    assert loss_at(m, b) < 0.8 * before


def test_one_progressive_round_makes_one_student_step_match_two_teacher_steps():
    teacher = tiny_diffusion()
    m = method_for("progressive", teacher, from_steps=2, to_steps=1)
    z = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    target = DiffusionSampler(teacher, steps=2).sample(32, seed=0, latents=z)

    def gap():
        return float((DiffusionSampler(m.student, steps=1).sample(32, seed=0, latents=z) - target).square().mean())

    before = gap()
    fit(m, batch(64), 60)
    assert gap() < 0.7 * before


def test_consistency_student_samples_like_plain_diffusers_lcm(tmp_path):
    from diffusers import LCMScheduler, UNet2DModel

    from kdgen.models.loading import load_model
    from kdgen.models.unet import save_diffusion

    m = method_for("consistency", tiny_diffusion(), solver_steps=8, steps=2)
    save_diffusion(m.student, tmp_path / "s")
    ours = DiffusionSampler(load_model(tmp_path / "s")).sample(4, seed=5)
    unet, sched = UNet2DModel.from_pretrained(tmp_path / "s"), LCMScheduler.from_pretrained(tmp_path / "s")
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(6)  # kdgen's step noise: seed + 1
    sched.set_timesteps(2)
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, generator=g).prev_sample
    assert torch.allclose(ours, x.clamp(-1, 1), atol=1e-5)


def test_consistency_target_is_an_ema_of_the_student():
    m = method_for("consistency", tiny_diffusion(), solver_steps=8, ema=0.5)
    start = copy.deepcopy(m.target.state_dict())
    fit(m, batch(), 2)
    m.train()
    m(batch(), "student")  # applies the EMA of the last step
    moved = [not torch.equal(start[k], v) for k, v in m.target.state_dict().items() if v.is_floating_point()]
    assert any(moved) and not any(p.requires_grad for p in m.target.parameters())


@pytest.mark.parametrize("name,opts,match", [
    ("progressive", {"from_steps": 8, "to_steps": 3}, "not a power of two"),
    ("progressive", {"from_steps": 4, "to_steps": 8}, "not below from_steps"),
    ("progressive", {"from_steps": 2048, "to_steps": 1}, "exceeds the teacher's 1024 timesteps"),
    ("consistency", {"solver_steps": 8, "steps": 16}, "cannot take more steps"),
    ("consistency", {"solver_steps": 48}, "must divide"),
])
def test_unreachable_step_counts_are_sentences(name, opts, match):
    with pytest.raises(KdgenError, match=match):
        METHODS.get(name).plan(parse_methods({name: opts})[name], tiny_diffusion())


def test_progressive_plan_halves_each_round():
    rounds = METHODS.get("progressive").plan(parse_methods({"progressive": {"from_steps": 16, "to_steps": 2}})["progressive"], tiny_diffusion())
    assert [(r.teacher_steps, r.student_steps) for r in rounds] == [(16, 8), (8, 4), (4, 2)]


def test_teacher_and_student_of_different_shapes_is_a_sentence():
    with pytest.raises(KdgenError, match="build the student from this teacher"):
        METHODS.get("progressive")(parse_methods({"progressive": {}})["progressive"], student=tiny_diffusion(size=32),
                                   teacher=tiny_diffusion(size=16), round=Round("x", 2, 1))


def test_structural_unknown_block_is_a_sentence_with_nearest_names():
    teacher = tiny_diffusion()
    student, _ = build_diffusion_student(teacher, width=0.5, layers_per_block=None, attention=True, init="random", seed=0)
    with pytest.raises(KdgenError, match="no layer 'mid_blok'.*mid_block"):
        method_for("structural", teacher, student, layers=["mid_blok"])
    m = method_for("structural", teacher, student, layers=["down_blocks.1", "mid_block"])
    assert isinstance(m.features.adapters["mid_block"], torch.nn.Conv2d)  # 8 student channels -> 16 teacher channels


def test_class_conditional_teacher_is_distilled_with_labels():
    teacher = tiny_diffusion(num_classes=3, guidance_scale=2.0)
    torch.nn.init.normal_(teacher.unet.class_embedding.weight, std=3.0)
    m = method_for("progressive", teacher, from_steps=4, to_steps=2)
    b = batch()
    assert torch.isfinite(m(b, "student").loss)
    # the targets carry the teacher's guidance, so the student is sampled unguided (one call per step)
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor(700), torch.tensor([0, 1, 2])
    assert torch.allclose(m.teacher_out(x, t, y), teacher.guided(x, t, y, scale=2.0))
    assert not torch.allclose(m.teacher_out(x, t, y), teacher(x, t, y))
    assert m.student.guidance_scale == 1.0 and DiffusionSampler(m.student).steps == 2
    with pytest.raises(KdgenError, match="no labels"):
        m({"image": b["image"]}, "student")


@pytest.mark.parametrize("name,opts", [
    ("progressive", {"from_steps": 8, "to_steps": 4}),
    ("consistency", {"solver_steps": 8, "steps": 2, "ema": 0.5}),
    ("onestep", {"teacher_steps": 2, "cache_size": 16}),
])
def test_epsilon_teacher_students_learn_and_handle_the_low_snr_end(name, opts, tmp_path):
    """Near pure noise an epsilon net's x_0 = (x - s eps) / a blows up. A progressive student keeps the teacher's epsilon
    output and weights its error in epsilon space; consistency and one-step students predict v (Salimans & Ho 2022)."""
    from kdgen.models.unet import DEFAULT_DDPM_SCHEDULE

    teacher = tiny_diffusion()
    teacher.scheduler_config = dict(DEFAULT_DDPM_SCHEDULE)  # 1000 linear betas: sqrt(alpha_cumprod) ends at 0.0064
    m = method_for(name, teacher, **opts)
    want = "epsilon" if name == "progressive" else "v_prediction"
    assert teacher.prediction_type == "epsilon" and m.student.prediction_type == want
    assert m.student_schedule.prediction_type == want and m.schedule.prediction_type == "epsilon"
    b = batch()
    if name == "onestep":
        data = m.prepare_data(None, tmp_path)
        b = {k: torch.stack([data[i][k] for i in range(16)]) for k in ("noise", "image")}
    before = loss_at(m, b)
    fit(m, b, 30)
    assert torch.isfinite(torch.tensor(before)) and loss_at(m, b) < before
    other = "epsilon" if want == "v_prediction" else "v_prediction"
    forced = method_for(name, teacher, **opts, student_prediction=other)  # asked for: kept
    assert forced.student.prediction_type == other

def test_a_student_that_changes_parameterisation_first_gets_a_conversion_round():
    """An epsilon teacher's consistency student predicts v; before its own round it learns the teacher's (clipped)
    denoiser as v, at every timestep, and that round does not replace the teacher."""
    from kdgen.models.unet import DEFAULT_DDPM_SCHEDULE

    teacher = tiny_diffusion()
    teacher.scheduler_config = dict(DEFAULT_DDPM_SCHEDULE)
    cls = METHODS.get("consistency")
    options = parse_methods({"consistency": {"solver_steps": 8, "steps": 2}})["consistency"]
    convert, main = cls.rounds(options, teacher, train_steps=40)
    assert convert.convert and convert.train_steps == 20 and convert.name == "convert-v_prediction"
    assert not main.convert and main.train_steps is None and main.student_steps == 2
    assert len(cls.rounds(parse_methods({"consistency": {"solver_steps": 8, "convert_steps": 0}})["consistency"], teacher, 40)) == 1
    # progressive keeps epsilon by default (no conversion); asked for v, it converts first
    prog = METHODS.get("progressive")
    assert [r.convert for r in prog.rounds(parse_methods({"progressive": {"from_steps": 8, "to_steps": 4}})["progressive"], teacher, 40)] == [False]
    asked = parse_methods({"progressive": {"from_steps": 8, "to_steps": 4, "student_prediction": "v_prediction", "convert_steps": 7}})
    assert [(r.convert, r.train_steps) for r in prog.rounds(asked["progressive"], teacher, 40)] == [(True, 7), (False, None)]
    # a v-prediction teacher needs none
    assert len(cls.rounds(options, tiny_diffusion(), 40)) == 1

    student = build_diffusion_student(teacher, width=1.0, layers_per_block=None, attention=True, init="prune", seed=0)[0]
    m = cls(options, student=student.train().requires_grad_(True), teacher=teacher, round=convert)
    assert m.student.prediction_type == "v_prediction"
    b = batch()
    before = loss_at(m, b)
    fit(m, b, 30)
    assert loss_at(m, b) < before
    # what it learns: the teacher's x_0, clipped as its sampler clips it; near pure noise the epsilon output read as v is far off
    x0 = b["image"]
    for t in (999, 900):
        tt = torch.full((16,), t)
        x_t = m.schedule.add_noise(x0, torch.randn_like(x0), tt)
        with torch.no_grad():
            want = m.schedule.to_x0_eps(teacher(x_t, tt), x_t, tt)[0].clamp(-1, 1)
            got = m.student_schedule.to_x0_eps(m.student(x_t, tt), x_t, tt)[0]
            untrained = m.student_schedule.to_x0_eps(teacher(x_t, tt), x_t, tt)[0]  # the epsilon output read as v
        assert (got - want).square().mean() < (untrained - want).square().mean()


def test_bad_convert_steps_is_a_sentence():
    with pytest.raises(KdgenError, match="convert_steps"):
        parse_methods({"consistency": {"convert_steps": -1}})
    with pytest.raises(KdgenError, match="convert_steps"):
        parse_methods({"consistency": {"convert_steps": "often"}})
