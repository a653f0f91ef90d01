"""Diffusion core: the schedule maths against diffusers, the sampler against a plain diffusers loop,
diffusers folders in and out, students built from the teacher, cost counted over every step."""

import json

import pytest
import torch
from diffusion_fixtures import SCHED, tiny_diffusion

from kdgen.diffusion import Schedule
from kdgen.errors import KdgenError
from kdgen.metrics.cost import macs_per_image
from kdgen.models.loading import load_model
from kdgen.models.unet import DiffusionModel, build_diffusion_student, init_from_teacher, load_diffusion, save_diffusion
from kdgen.sampling import DiffusionSampler, make_sampler


def test_schedule_ddim_step_equals_diffusers_ddim():
    from diffusers import DDIMScheduler

    model = tiny_diffusion()
    sch = Schedule(model.scheduler_config)
    ref = DDIMScheduler.from_config({**SCHED, "timestep_spacing": "trailing", "clip_sample": True})
    ref.set_timesteps(8)
    assert sch.ddim_timesteps(8) == ref.timesteps.tolist()
    x = torch.randn(3, 1, 16, 16)
    for t in ref.timesteps[:3]:
        out = torch.randn_like(x) * 2  # large enough that x_0 gets clipped
        want = ref.step(out, t, x).prev_sample
        got = sch.ddim_step(out, x, torch.full((3,), int(t)), torch.full((3,), int(t) - sch.stride(8)))
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_schedule_round_trips_each_parametrisation(prediction):
    sch = Schedule({**SCHED, "prediction_type": prediction})
    x0, eps, t = torch.randn(4, 1, 8, 8).clamp(-1, 1), torch.randn(4, 1, 8, 8), torch.tensor([5, 200, 700, 1000])
    x_t = sch.add_noise(x0, eps, t)
    got_x0, got_eps = sch.to_x0_eps(sch.target(x0, eps, t), x_t, t)
    assert torch.allclose(got_x0, x0, atol=1e-3) and torch.allclose(got_eps, eps, atol=1e-3)
    assert torch.allclose(sch.to_x0_eps(sch.from_x0(x0, x_t, t), x_t, t)[0], x0, atol=1e-3)


def test_sampler_matches_a_plain_diffusers_ddim_loop(tmp_path):
    from diffusers import DDIMScheduler, UNet2DModel

    save_diffusion(tiny_diffusion(steps=4), tmp_path / "m")
    ours = DiffusionSampler(load_model(tmp_path / "m")).sample(5, seed=3)
    unet = UNet2DModel.from_pretrained(tmp_path / "m")
    sched = DDIMScheduler.from_pretrained(tmp_path / "m")
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    sched.set_timesteps(json.loads((tmp_path / "m" / "kdgen.json").read_text())["steps"])
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    assert torch.allclose(ours, x.clamp(-1, 1), atol=1e-5)


def test_sampler_cost_counts_every_step_and_guidance():
    m = tiny_diffusion(steps=4)
    one = macs_per_image(DiffusionSampler(m, steps=1))
    assert one > 0 and macs_per_image(DiffusionSampler(m, steps=4)) == 4 * one
    guided = tiny_diffusion(steps=4, num_classes=3, guidance_scale=2.0)
    s = DiffusionSampler(guided)
    assert s.steps == 8 and s.sampling_steps == 4  # two network calls per step with classifier-free guidance
    plain = macs_per_image(DiffusionSampler(tiny_diffusion(steps=4, num_classes=3, guidance_scale=1.0)))
    assert macs_per_image(s) == 2 * plain


def test_guidance_changes_the_images_and_scale_one_is_conditional():
    m = tiny_diffusion(steps=2, num_classes=3, guidance_scale=1.0)
    torch.nn.init.normal_(m.unet.class_embedding.weight, std=3.0)  # random weights: make labels matter
    x, t, y = torch.randn(3, 1, 16, 16), torch.tensor(500), torch.tensor([0, 1, 2])
    plain = m.guided(x, t, y)
    assert torch.allclose(plain, m(x, t, y))
    guided = m.guided(x, t, y, scale=3.0)
    uncond = m(x, t, torch.full_like(y, 3))
    assert torch.allclose(guided, uncond + 3.0 * (plain - uncond), atol=1e-5)


def test_save_load_round_trip_and_plain_diffusers_load(tmp_path):
    from diffusers import DDIMScheduler, UNet2DModel

    m = tiny_diffusion(steps=4)
    save_diffusion(m, tmp_path / "m", extra={"note": "x"})
    back = load_model(tmp_path / "m")
    assert isinstance(back, DiffusionModel) and back.steps == 4 and back.extra["note"] == "x"
    for a, b in zip(m.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    assert UNet2DModel.from_pretrained(tmp_path / "m").config.sample_size == 16
    assert DDIMScheduler.from_pretrained(tmp_path / "m").config.timestep_spacing == "trailing"


def test_pipeline_folder_loads_as_teacher(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    m = tiny_diffusion()
    DDPMPipeline(unet=m.unet, scheduler=DDPMScheduler.from_config(SCHED)).save_pretrained(tmp_path / "pipe")
    back = load_model(tmp_path / "pipe")
    assert isinstance(back, DiffusionModel) and back.num_train_timesteps == 1024


def test_folder_that_is_not_a_diffusers_model_is_a_sentence(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(KdgenError, match="no weights"):  # without a scheduler config it would get the default DDPM schedule
        load_diffusion(tmp_path / "x")
    (tmp_path / "x" / "scheduler_config.json").write_text(json.dumps(SCHED))
    with pytest.raises(KdgenError, match="no weights"):
        load_diffusion(tmp_path / "x")
    (tmp_path / "y").mkdir()
    with pytest.raises(KdgenError, match="not a kdgen model folder"):
        load_model(tmp_path / "y")


def test_scheduler_kdgen_cannot_use_is_a_sentence(tmp_path):
    m = tiny_diffusion()
    save_diffusion(m, tmp_path / "m")
    (tmp_path / "m" / "scheduler_config.json").write_text(json.dumps({"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000}))
    with pytest.raises(KdgenError, match="ScoreSdeVeScheduler.*not the discrete DDPM"):
        load_model(tmp_path / "m")


def test_hub_id_offline_is_a_sentence(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):  # what snapshot_download raises with HF_HUB_OFFLINE=1 or no network
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(KdgenError, match="needs internet"):
        load_model("google/ddpm-cifar10-32")


def test_structural_student_is_smaller_and_starts_from_the_teacher():
    teacher = tiny_diffusion()
    student, counts = build_diffusion_student(teacher, width=0.5, layers_per_block=1, attention=False, init="prune", seed=0)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(student) < n(teacher) / 2.5
    assert "Attn" not in "".join(student.unet.config.down_block_types)
    assert counts["copied"] + counts["sliced"] > counts["fresh"]
    w_s, w_t = student.unet.conv_in.weight, teacher.unet.conv_in.weight
    assert torch.equal(w_s, w_t[: w_s.shape[0]])
    same, _ = build_diffusion_student(teacher, width=1.0, layers_per_block=None, attention=True, init="prune", seed=0)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor(300)
    assert torch.allclose(same(x, t), teacher(x, t))  # full width: an exact copy


def test_init_from_teacher_slices_leading_channels():
    a, b = torch.nn.Conv2d(4, 8, 3), torch.nn.Conv2d(2, 4, 3)
    counts = init_from_teacher(b, a)
    assert counts == {"copied": 0, "sliced": 2, "fresh": 0} and torch.equal(b.weight, a.weight[:4, :2])


def test_make_sampler_refuses_steps_for_a_gan(tiny_teacher):
    with pytest.raises(KdgenError, match="diffusion models"):
        make_sampler(load_model(tiny_teacher), steps=4)


@pytest.mark.parametrize("steps", [0, 2000])
def test_step_count_out_of_range_is_a_sentence(steps):
    with pytest.raises(KdgenError, match="outside what this model can take"):
        DiffusionSampler(tiny_diffusion(), steps=steps)


def test_a_teacher_saved_with_leading_spacing_is_sampled_on_the_trailing_grid(tmp_path):
    from diffusers import DDIMScheduler

    m = tiny_diffusion(steps=4)
    m.unet.save_pretrained(tmp_path / "t")
    DDIMScheduler.from_config({**SCHED, "timestep_spacing": "leading"}).save_pretrained(tmp_path / "t")
    teacher = load_model(tmp_path / "t")
    sched = teacher.make_scheduler()
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == Schedule(teacher.scheduler_config).ddim_timesteps(4) == [1023, 767, 511, 255]


def test_unsupported_conditioning_and_thresholding_are_sentences():
    from diffusers import UNet2DModel
    from diffusion_fixtures import tiny_unet_args

    unet = UNet2DModel(**{**tiny_unet_args(), "class_embed_type": "timestep"})
    with pytest.raises(KdgenError, match="class_embed_type='timestep'"):
        DiffusionModel(unet, SCHED)
    with pytest.raises(KdgenError, match="dynamic thresholding"):
        DiffusionModel(tiny_diffusion().unet, {**SCHED, "thresholding": True})


def test_consistency_boundary_scalings_are_lcm_schedulers():
    from diffusers import LCMScheduler

    from kdgen.methods.consistency import boundary_scalings

    ref = LCMScheduler.from_config(SCHED)
    t = torch.tensor([0, 15, 511, 1023])
    c_skip, c_out = boundary_scalings(t, torch.zeros(4, 1, 2, 2))
    for i, ti in enumerate(t.tolist()):
        want = ref.get_scalings_for_boundary_condition_discrete(ti)
        assert abs(float(c_skip[i]) - want[0]) < 1e-6 and abs(float(c_out[i]) - want[1]) < 1e-6
