"""Diffusion through the CLI at tiny size: train-teacher makes a diffusers folder, each distill recipe
runs on it, the student loads in plain diffusers, evaluate --steps measures any step count."""

import json

import pytest
from test_cli import run_cli

from kdgen.models.loading import load_model

TINY_UNET = ("model.args.unet={block_out_channels: [8, 16], layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D], "
             "up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4, attention_head_dim: 4}")
FAST = ["train.checkpoint_every=2", "train.log_every=1", "train.sample_every=2", "data.batch_size=16"]
SMALL_EVAL = ["eval.num_samples=48", "eval.batch_size=48", "eval.latency_repeats=1"]


@pytest.fixture(scope="module")
def ddpm_teacher(tmp_path_factory):
    """A 3-step DDPM teacher trained by the CLI on digits, 16x16 (random-ish, but a real diffusers folder)."""
    from kdgen.api import train_teacher

    out = tmp_path_factory.mktemp("ddpm")
    train_teacher("configs/diffusion/mnist5k-ddpm.yaml", [f"out={out}", "train.steps=3", "data.name=digits", "data.image_size=16",
                                                          TINY_UNET, "model.args.steps=4", *FAST])
    return out / "teacher"


def test_train_teacher_writes_a_diffusers_folder(ddpm_teacher):
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(ddpm_teacher)
    assert unet.config.sample_size == 16 and DDIMScheduler.from_pretrained(ddpm_teacher).config.prediction_type == "v_prediction"
    meta = json.loads((ddpm_teacher / "kdgen.json").read_text())
    assert meta["steps"] == 4 and meta["train_steps"] == 3 and meta["trained_on"] == "digits"
    assert (ddpm_teacher.parent / "samples" / "teacher.png").is_file()


@pytest.mark.parametrize("method,opts,steps", [
    ("progressive", ["methods.progressive.from_steps=4", "methods.progressive.to_steps=1"], 1),
    ("consistency", ["methods.consistency.solver_steps=8", "methods.consistency.steps=2"], 2),
    ("onestep", ["methods.onestep.teacher_steps=2", "methods.onestep.cache_size=64"], 1),
    ("structural", ["student.width=0.5", "student.attention=false"], 4),
])
def test_each_diffusion_recipe_runs_and_saves_a_plain_diffusers_student(ddpm_teacher, tmp_path, monkeypatch, capsys, method, opts, steps):
    from diffusers import UNet2DModel

    recipe = f"configs/diffusion/mnist5k-{method}.yaml"
    code, out, err = run_cli(monkeypatch, capsys, "distill", recipe, f"teacher.path={ddpm_teacher}", "teacher.steps=4", f"out={tmp_path}",
                             "train.steps=2", "data.name=digits", *FAST, "eval.enabled=false", *opts)
    assert code == 0, err
    assert UNet2DModel.from_pretrained(tmp_path / "student").config.sample_size == 16
    meta = json.loads((tmp_path / "student" / "kdgen.json").read_text())
    assert meta["steps"] == steps
    assert (tmp_path / "student" / "scheduler_config.json").is_file()


def test_progressive_run_measures_both_and_resumes_by_round(ddpm_teacher, tmp_path, monkeypatch, capsys):
    args = ["distill", "configs/diffusion/mnist5k-progressive.yaml", f"teacher.path={ddpm_teacher}", "teacher.steps=4", f"out={tmp_path}",
            "train.steps=2", "data.name=digits", *FAST, *SMALL_EVAL, "methods.progressive.from_steps=4", "methods.progressive.to_steps=1"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["teacher"]["sampling_steps"] == 4 and m["student"]["sampling_steps"] == 1
    assert m["student"]["macs"] * 4 == m["teacher"]["macs"]  # same UNet, 1 call instead of 4
    assert [r["round"] for r in m["train"]["rounds"]] == ["steps-2", "steps-1"]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "samples" / "teacher_vs_student.png").is_file()
    # a resume skips finished rounds (their students are on disk) instead of training them again
    stamp = (tmp_path / "rounds" / "steps-2" / "student" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    code, _, err = run_cli(monkeypatch, capsys, *args, "eval.enabled=false", "--resume")
    assert code == 0, err
    assert (tmp_path / "rounds" / "steps-2" / "student" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_evaluate_a_diffusion_folder_at_any_step_count(ddpm_teacher, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "evaluate", str(ddpm_teacher), *SMALL_EVAL, "--steps", "2", "--data", "digits",
                             "--out", str(tmp_path))
    assert code == 0, err
    m = json.loads((tmp_path / "metrics.json").read_text())["model"]
    assert m["sampling_steps"] == 2 and m["family"] == "diffusion" and m["fid"] > 0


def test_gan_terms_on_a_diffusion_teacher_is_a_sentence(ddpm_teacher, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", f"teacher.path={ddpm_teacher}", f"out={tmp_path}")
    assert code == 2 and "teacher is a diffusion model" in err


def test_not_a_diffusers_folder_as_teacher_is_a_sentence(tmp_path, monkeypatch, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/diffusion/mnist5k-progressive.yaml", f"teacher.path={tmp_path / 't'}",
                           f"out={tmp_path / 'o'}")
    assert code == 2 and "no weights" in err and not (tmp_path / "o" / "config.yaml").exists()


def test_structural_then_progressive_compose_in_one_recipe(ddpm_teacher, tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "distill", "configs/diffusion/mnist5k-structural.yaml", f"teacher.path={ddpm_teacher}",
                             "teacher.steps=4", f"out={tmp_path}", "train.steps=2", "data.name=digits", *FAST, "eval.enabled=false",
                             "methods.progressive.from_steps=4", "methods.progressive.to_steps=2")
    assert code == 0, err
    rounds = sorted(p.name for p in (tmp_path / "rounds").iterdir())
    assert rounds == ["steps-2", "structural-steps-4"]
    student, teacher = load_model(tmp_path / "student"), load_model(ddpm_teacher)
    assert student.steps == 2 and student.unet.config.block_out_channels[0] * 2 == teacher.unet.config.block_out_channels[0]
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters()) / 2


@pytest.fixture(scope="module")
def bare_epsilon_unet(tmp_path_factory):
    """A UNet saved by save_pretrained alone: no scheduler config, so kdgen assumes DDPM's epsilon schedule."""
    import torch
    from diffusers import UNet2DModel
    from diffusion_fixtures import tiny_unet_args

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bare") / "unet"
    UNet2DModel(**tiny_unet_args(16)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method,opts", [
    ("progressive", ["methods.progressive.from_steps=8", "methods.progressive.to_steps=4"]),
    ("consistency", ["methods.consistency.solver_steps=8", "methods.consistency.steps=2"]),
    ("onestep", ["methods.onestep.teacher_steps=4", "methods.onestep.cache_size=32"]),
])
def test_bare_epsilon_unet_through_every_step_method(bare_epsilon_unet, method, opts, tmp_path, monkeypatch, capsys, caplog):
    code, out, err = run_cli(monkeypatch, capsys, "distill", f"configs/diffusion/mnist5k-{method}.yaml", f"teacher.path={bare_epsilon_unet}",
                             "teacher.steps=4", f"out={tmp_path}", "train.steps=2", "data.name=digits", *FAST, *SMALL_EVAL, *opts)
    assert code == 0, err
    assert "no scheduler config" in caplog.text and "default DDPM schedule" in caplog.text
    student = load_model(tmp_path / "student")
    want = "epsilon" if method == "progressive" else "v_prediction"  # measured best per method (benchmarks/RESULTS.md)
    assert student.prediction_type == want and student.num_train_timesteps == 1000  # on the teacher's betas
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["teacher"]["sampling_steps"] == 4 and m["student"]["fid"] > 0
    # the consistency student first learns the teacher as a v model (train.steps // 2 steps), then distils
    converts = [r for r in m["train"]["rounds"] if r["round"].startswith("convert-")]
    assert [(r["round"], r["train_steps"]) for r in converts] == ([("convert-v_prediction", 1)] if method == "consistency" else [])


def test_torch_pruned_unet_student_trains_reloads_and_exports(ddpm_teacher, tmp_path, monkeypatch, capsys):
    """student.structure=pruned: the teacher's own UNet, channels pruned by torch-pruning, kept through save and export."""
    import torch

    from kdgen.export import export

    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/diffusion/mnist5k-structural.yaml", f"teacher.path={ddpm_teacher}",
                           "teacher.steps=4", f"out={tmp_path}", "train.steps=2", "data.name=digits", *FAST, "eval.enabled=false",
                           "student.structure=pruned", "student.width=0.5", "student.layers_per_block=null", "student.attention=true")
    assert code == 0, err
    meta = json.loads((tmp_path / "student" / "kdgen.json").read_text())
    assert meta["pruned"] == "torch-pruning" and meta["structure"]  # the config builds the unpruned UNet; this re-shapes it
    student, teacher = load_model(tmp_path / "student"), load_model(ddpm_teacher)
    assert sum(p.numel() for p in student.parameters()) < 0.5 * sum(p.numel() for p in teacher.parameters())
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    assert student(x, t).shape == (2, 1, 16, 16)
    block = export(tmp_path, measure_quality=False)
    assert block["onnx"]["parity"]["max_abs"] < 1e-3 and block["onnx"]["sampler_parity"]["max_abs"] <= block["onnx"]["sampler_parity"]["tolerance"]


def test_a_given_unet_student_is_distilled_on_the_teachers_schedule(ddpm_teacher, tmp_path):
    """A diffusers UNet2DModel handed in from Python (half the teacher's channels, its own random weights) is the student:
    trained on the teacher's betas, saved as a diffusers folder and reloaded; bad students are sentences."""
    import torch
    from diffusers import UNet2DModel
    from diffusion_fixtures import tiny_unet_args

    import kdgen
    from kdgen.errors import KdgenError

    torch.manual_seed(3)
    unet = UNet2DModel(**{**tiny_unet_args(16), "block_out_channels": (4, 8), "norm_num_groups": 2})
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    kdgen.distill("configs/diffusion/mnist5k-structural.yaml", [f"out={tmp_path}", "teacher.steps=4", "train.steps=2",
                  "data.name=digits", *FAST, "eval.enabled=false"], teacher=ddpm_teacher, student=unet)
    student, teacher = load_model(tmp_path / "student"), load_model(ddpm_teacher)
    assert student.unet.config.block_out_channels == [4, 8] and student.scheduler_config == teacher.scheduler_config
    assert any(not torch.equal(before[k], v) for k, v in student.unet.state_dict().items())  # trained, from its own start
    assert json.loads((tmp_path / "metrics.json").read_text())["train"]["student_init"]["given"] == "UNet2DModel"
    with pytest.raises(KdgenError, match="must be a diffusers UNet2DModel"):
        kdgen.distill("configs/diffusion/mnist5k-structural.yaml", [f"out={tmp_path / 'x'}"], teacher=ddpm_teacher,
                      student=torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(KdgenError, match="denoises 1x32x32 images but the teacher 1x16x16"):
        kdgen.distill("configs/diffusion/mnist5k-structural.yaml", [f"out={tmp_path / 'y'}"], teacher=ddpm_teacher,
                      student=UNet2DModel(**tiny_unet_args(32)))


def test_a_unet_student_named_in_the_recipe(ddpm_teacher, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/diffusion/mnist5k-consistency.yaml", f"teacher.path={ddpm_teacher}",
                           "teacher.steps=4", f"out={tmp_path}", "train.steps=2", "data.name=digits", *FAST, "eval.enabled=false",
                           "methods.consistency.solver_steps=8", "student.class=diffusers:UNet2DModel",
                           "student.args={sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 8], "
                           "down_block_types: [DownBlock2D, DownBlock2D], up_block_types: [UpBlock2D, UpBlock2D], norm_num_groups: 4}")
    assert code == 0, err
    student = load_model(tmp_path / "student")
    assert student.unet.config.block_out_channels == [8, 8] and student.sampler == "LCMScheduler"
