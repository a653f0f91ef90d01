"""A user's own folder of images through the CLI: shapes from the data, class sub-folders, held-out split, feature
spaces that must fit the data, and every bad input a sentence."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from PIL import Image
from test_cli import run_cli

from kdgen.data.folder import split_record
from kdgen.errors import KdgenError
from kdgen.models.loading import load_model

FAST = ["train.steps=2", "data.batch_size=8", "train.checkpoint_every=2", "train.log_every=1", "train.sample_every=2"]
EVAL = ["eval.num_samples=32", "eval.batch_size=32", "eval.latency_repeats=1", "eval.k=3"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """96 RGB 16x16 images in two class sub-folders: 'stripes' and 'dots' (different enough for a classifier to learn)."""
    root = tmp_path_factory.mktemp("photos") / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("stripes", "dots"):
        (root / cls).mkdir(parents=True)
        for i in range(48):
            a = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            if cls == "stripes":
                a[::4] = 250
            else:
                a[4:12, 4:12, 0] = 250
            Image.fromarray(a).save(root / cls / f"{i:02d}.png")
    return root


def test_a_gan_teacher_takes_the_folders_shape_and_a_mismatch_names_the_knob(photos, tmp_path, monkeypatch, capsys):
    data = f"data.name=folder:{photos}"
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 't'}", data, *FAST,
                           "model.args.base_width=8", "model.args.z_dim=8")
    assert code == 0, err
    g = load_model(tmp_path / "t" / "teacher")
    assert (g.channels, g.image_size) == (3, 16)  # the folder's, not 28x28 grey
    assert g.kdgen_meta["split"]["test_files_sha256"] == split_record(photos, test_fraction=0.1, seed=0)["test_files_sha256"]
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 'u'}", data, *FAST,
                           "model.args.image_size=28")
    assert code == 2 and "model.args.image_size=28 but the" in err and "set by data.image_size for every family" in err
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 'v'}", data, *FAST,
                           "model.args.base_width=8", "data.image_size=8", "data.channels=1")
    assert code == 0, err
    assert (load_model(tmp_path / "v" / "teacher").channels, load_model(tmp_path / "v" / "teacher").image_size) == (1, 8)


def test_a_diffusion_teacher_takes_the_folders_shape(photos, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/diffusion/mnist5k-ddpm.yaml", f"out={tmp_path / 't'}",
                           f"data.name=folder:{photos}", *FAST, "model.args.steps=2")
    assert code == 0, err
    m = load_model(tmp_path / "t" / "teacher")
    assert (m.channels, m.image_size) == (3, 16)
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/diffusion/mnist5k-ddpm.yaml", f"out={tmp_path / 'u'}",
                           f"data.name=folder:{photos}", *FAST, "model.args.unet={sample_size: 28}")
    assert code == 2 and "model.args.unet.sample_size=28" in err and "data.image_size" in err


def test_features_and_a_classifier_trained_on_a_labelled_folder_then_a_generator_measured_in_that_space(photos, tmp_path, monkeypatch,
                                                                                                         capsys):
    data = f"data.name=folder:{photos}"
    code, out, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/folder.yaml", f"out={tmp_path / 'f'}", data,
                             "train.steps=40", "data.batch_size=16", "model.args.width=8", "data.test_fraction=0.25")
    assert code == 0, err
    meta = json.loads((tmp_path / "f" / "featnet" / "model.json").read_text())
    assert meta["trained_on"] == f"folder:{photos}" and (meta["channels"], meta["image_size"]) == (3, 16)
    assert len(meta["data_sha256"]) == 64 and 8 <= meta["split"]["test_count"] <= 26 and meta["split"]["classes"] == ["dots", "stripes"]
    assert meta["test_accuracy"] > 0.75  # stripes vs dots on the held-out images
    # a classifier teacher on the same labelled folder: trained, measured on the held-out split
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/classifier/digits-teacher.yaml", f"out={tmp_path / 'c'}", data,
                           *FAST)
    assert code == 0, err
    held = split_record(photos, test_fraction=0.1, seed=0)["test_count"]
    assert 2 <= held <= 14 and json.loads((tmp_path / "c" / "metrics.json").read_text())["protocol"]["reference_count"] == held
    # a generator on this folder, measured in the folder's own space against its held-out split
    run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 'g'}", data, *FAST,
            "model.args.base_width=8", "model.args.z_dim=8")
    g = tmp_path / "g" / "teacher"
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(g), "--data", f"folder:{photos}", "--out", str(tmp_path / "e"), *EVAL,
                           f"eval.features={tmp_path / 'f' / 'featnet'}")
    assert code == 0, err
    p = json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]
    assert p["reference"] == f"folder:{photos} test split" and p["reference_count"] == held and p["split"]["seed"] == 0
    assert p["feature_net"]["trained_on"] == f"folder:{photos}" and not p["caveats"]
    # the default space: kdgen has none for this folder, and the digit net is refused with a sentence each
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(g), "--data", f"folder:{photos}", "--out", str(tmp_path / "e2"), *EVAL)
    assert code == 2 and "kdgen has no feature net for 'folder:" in err and "kdgen train-features" in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(g), "--data", "emoji", "--out", str(tmp_path / "e3"), *EVAL,
                           f"eval.features={tmp_path / 'f' / 'featnet'}")
    assert code == 2 and "was trained on folder:" in err and "not on the measured data emoji" in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(g), "--data", "emoji", "--out", str(tmp_path / "e3"), *EVAL,
                           f"eval.features={tmp_path / 'f' / 'featnet'}", "eval.allow_feature_mismatch=true")
    assert code == 0, err
    caveats = json.loads((tmp_path / "e3" / "metrics.json").read_text())["protocol"]["caveats"]
    assert any("not on the measured data emoji (allowed)" in c for c in caveats)


def test_a_digit_feature_net_is_refused_for_grey_photos(tmp_path, tiny_teacher, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "grey").mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / "grey" / f"{i}.png")
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *tiny_overrides(tiny_teacher, tmp_path / "r"),
                           f"data.name=folder:{tmp_path / 'grey'}", "eval.features=builtin:featnet-mnist5k")
    assert code == 2 and "was trained on mnist5k, not on the measured data folder:" in err and "eval.allow_feature_mismatch" in err
    assert not (tmp_path / "r" / "state").exists()  # refused before training


def test_classifier_distillation_on_a_labelled_folder_is_measured_on_its_held_out_split(photos, tmp_path, monkeypatch, capsys):
    data = f"data.name=folder:{photos}"
    run_cli(monkeypatch, capsys, "train-teacher", "configs/classifier/digits-teacher.yaml", f"out={tmp_path / 't'}", data, *FAST)
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/classifier/digits-hinton.yaml", f"out={tmp_path / 'd'}", data, *FAST,
                           f"teacher.path={tmp_path / 't' / 'teacher'}", "eval.latency_repeats=1")
    assert code == 0, err
    p = json.loads((tmp_path / "d" / "metrics.json").read_text())["protocol"]
    assert p["reference"] == f"folder:{photos} test split" and p["split"]["classes"] == ["dots", "stripes"]
    assert p["reference_count"] == p["split"]["test_count"] == split_record(photos, test_fraction=0.1, seed=0)["test_count"]
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "d"), "data.test_fraction=0")
    assert code == 2 and "a run folder keeps its recorded split" in err


def test_bad_folders_are_sentences(tmp_path, tiny_teacher, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(50):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(flat / f"{i}.png")
    # a classifier on a folder without class sub-folders
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/classifier/digits-teacher.yaml", f"out={tmp_path / 'c'}",
                           f"data.name=folder:{flat}", *FAST)
    assert code == 2 and "has none - put the images in one sub-folder per class" in err
    # a folder smaller than a batch
    code, _, err = run_cli(monkeypatch, capsys, "train-teacher", "configs/gan/mnist5k-teacher.yaml", f"out={tmp_path / 'g'}",
                           f"data.name=folder:{flat}", "train.steps=1", "data.batch_size=64")
    assert code == 2 and "fewer than data.batch_size=64" in err and "Traceback" not in err
    # evaluate on a folder with a corrupt file: the sentence's advice (data.on_corrupt=skip) is accepted
    (flat / "broken.png").write_bytes(b"\x89PNG no")
    args = ["evaluate", str(tiny_teacher), "--data", f"folder:{flat}", "--out", str(tmp_path / "e"), *EVAL,
            "eval.features=builtin:featnet-mnist5k", "eval.allow_feature_mismatch=true"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "data.on_corrupt=skip" in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "data.on_corrupt=skip")
    assert code == 0, err
    p = json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]
    assert p["reference_count"] == p["split"]["test_count"] and p["reference_count"] + p["split"]["train_count"] == 50  # readable ones
    code, _, err = run_cli(monkeypatch, capsys, *args, "data.on_corrupt=skip", "data.test_fraction=0")
    assert code == 0, err  # one model: any split of the folder
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["protocol"]["reference_count"] == 50


def test_self_supervised_features_on_an_unlabelled_folder(tmp_path, monkeypatch, capsys):
    """train-features on a flat folder trains SimCLR; the net records what it learnt on, and its held-out views find each other
    far above chance."""
    rng = np.random.default_rng(3)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(80):  # two kinds of image, unlabelled: bright squares at random places, or horizontal bars
        a = rng.integers(0, 40, (16, 16, 3), dtype=np.uint8)
        if i % 2:
            y, x = rng.integers(0, 10, 2)
            a[y:y + 6, x:x + 6] = (250, 200, 0)
        else:
            a[rng.integers(0, 12)::5, :, 2] = 250
        Image.fromarray(a).save(flat / f"{i:02d}.png")
    code, out, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/folder.yaml", f"out={tmp_path / 'f'}",
                             f"data.name=folder:{flat}", "train.steps=30", "data.batch_size=32", "model.args.width=8",
                             "data.test_fraction=0.25", "model.simclr={crop: 0.6}")
    assert code == 0, err
    assert "SimCLR" in out and "held-out pair accuracy" in out
    meta = json.loads((tmp_path / "f" / "featnet" / "model.json").read_text())
    assert meta["objective"] == "simclr" and meta["trained_on"] == f"folder:{flat}" and meta["args"]["dropout"] == 0.0
    assert meta["test_pair_accuracy"] > 5 / 39  # 20 held-out images, 40 views: chance is 1/39
    code, _, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/folder.yaml", f"out={tmp_path / 'g'}",
                           f"data.name=folder:{flat}", "model.simclr={temp: 0.1}")
    assert code == 2 and "unknown model.simclr key 'temp'" in err
    code, _, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/folder.yaml", f"out={tmp_path / 'h'}",
                           f"data.name=folder:{flat}", "model.objective=classifier")
    assert code == 2 and "put the images in one sub-folder per class" in err


class _Pixels(torch.nn.Module):
    """A generator of 3x16x16 images from 8-d noise (an untrained linear map): enough to push images through a feature space."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3 * 16 * 16)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 3, 16, 16)


def _measure_in(space: str, tmp_path) -> dict:
    import kdgen

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(12, 3, 16, 16))
    r = kdgen.evaluate(kdgen.Generator(_Pixels(), z_shape=(8,)), [f"eval.features={space}", "eval.num_samples=12", "eval.batch_size=12",
                                                                  "eval.k=3", "eval.latency_repeats=1"], data=data, out=tmp_path / "e")
    return r.metrics


def test_inception_space_from_a_weights_file(tmp_path, monkeypatch):
    """torch-fidelity's FID Inception-v3 read from a file (random weights of the right shapes, made here): the code path users
    with the real file take."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf

    with monkeypatch.context() as m:  # build the net without its download, to save shape-compatible random weights
        m.setattr(tf, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    metrics = _measure_in(f"inception:{tmp_path / 'inception.pth'}", tmp_path)
    assert metrics["protocol"]["feature_net"]["num_features"] == 2048 and metrics["model"]["fid"] > 0


def test_dinov2_space_from_a_weights_file(tmp_path):
    timm = pytest.importorskip("timm", reason="dinov2 features need the timm extra")
    from safetensors.torch import save_file

    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)  # random weights, DINOv2's shapes
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "dinov2.safetensors"))
    metrics = _measure_in(f"dinov2:{tmp_path / 'dinov2.safetensors'}", tmp_path)
    f = metrics["protocol"]["feature_net"]
    assert f["num_features"] == 384 and "vit_small_patch14_dinov2" in f["layer"] and metrics["model"]["fid"] > 0
    save_file({"cls_token": torch.zeros(1, 1, 100)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(KdgenError, match="is not a DINOv2 ViT weights file"):
        _measure_in(f"dinov2:{tmp_path / 'bad.safetensors'}", tmp_path)


@pytest.mark.parametrize("bad, line", [("{crop: 0}", "model.simclr.crop must be a number in (0, 1], got 0"),
                                       ("{flip: maybe}", "model.simclr.flip must be true or false"),
                                       ("{temperature: -1}", "model.simclr.temperature must be a number > 0")])
def test_bad_simclr_values_are_sentences(bad, line, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "train-features", "configs/features/mnist5k-simclr.yaml", f"out={tmp_path}",
                           f"model.simclr={bad}", "train.steps=1")
    assert code == 2 and line in err and "Traceback" not in err, err
    assert not (tmp_path / "state").exists()
