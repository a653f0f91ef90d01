"""Your model in: a generator and a classifier kdgen does not define, stock torchvision/timm architectures.

The user's classes live in own_models.py (beside this file); a fresh process finds them through PYTHONPATH,
as a user's would through the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from own_models import ResidualGenerator, TinyClassifier
from test_cli import run_cli

import kdgen
from kdgen.errors import KdgenError
from kdgen.faces import face_of

HERE = Path(__file__).resolve().parent
FAST = {"train.steps": 2, "train.checkpoint_every": 2, "train.log_every": 1, "train.sample_every": 2, "data.batch_size": 16,
        "eval.num_samples": 64, "eval.batch_size": 64, "eval.latency_repeats": 2}


def fast(out, **extra) -> list[str]:
    return [f"{k}={v}" for k, v in {"out": str(out), **FAST, **extra}.items()]


def fresh(*args, cwd=None) -> subprocess.CompletedProcess:
    """kdgen in a new process that can import the user's code (own_models) from PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kdgen.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
    """The residual generator distilled from Python with a derived (torch-pruned) student."""
    torch.manual_seed(0)
    teacher = kdgen.Generator(ResidualGenerator(z_dim=16, width=16), z_shape=(16,))
    out = tmp_path_factory.mktemp("own") / "run"
    result = kdgen.distill(None, fast(out, **{"student.width": 0.5}), teacher=teacher)
    return result


def test_derived_student_is_pruned_teacher_and_records_its_code(python_run):
    meta = json.loads((python_run.out / "student" / "model.json").read_text())
    assert meta["family"] == "class" and meta["class"] == "own_models:ResidualGenerator"
    # z_dim is read back from the module's attribute; width is kept nowhere, so the class default is built and the
    # recorded structure (every layer whose shape differs from that default) re-shapes it
    assert meta["args"] == {"z_dim": 16}
    assert meta["structure"]["stem"]["tensors"]["weight"] == [16, 16, 7, 7]  # 32 -> 16 output channels
    assert meta["face"] == {"kind": "generator", "image_shape": [1, 28, 28], "z_shape": [16]}
    assert "own_models" in meta["code"]
    t, s = python_run.metrics["teacher"], python_run.metrics["student"]
    assert 3.0 < t["macs"] / s["macs"] < 4.5  # half the channels everywhere: about 4x fewer MACs
    assert s["params"] < t["params"] and s["fidelity"]["psnr_db"] > 0
    cfg = yaml.safe_load((python_run.out / "config.yaml").read_text())
    assert cfg["teacher"]["path"] == str(python_run.out / "teacher")  # the handed-in teacher, saved for a fresh process
    assert json.loads((python_run.out / "teacher" / "model.json").read_text())["class"] == "own_models:ResidualGenerator"


def test_student_of_a_user_class_samples_evaluates_and_exports_in_a_fresh_process(python_run, tmp_path):
    run = python_run.out
    png = tmp_path / "s.png"
    p = fresh("sample", run / "student", "-n", "4", "--out", png)
    assert p.returncode == 0 and png.is_file(), p.stderr
    p = fresh("evaluate", run, "eval.num_samples=64", "eval.latency_repeats=2")
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "metrics.json").read_text())["student"]["macs"] == python_run.metrics["student"]["macs"]
    p = fresh("export", run, "--no-quality")
    assert p.returncode == 0, p.stderr
    parity = json.loads((run / "metrics.json").read_text())["export"]["onnx"]["parity"]
    assert parity["max_abs"] < 1e-4
    block = kdgen.export(kdgen.load_model(run / "student"), out=tmp_path / "mod")  # a module, straight to ONNX
    assert block["onnx"]["parity"]["max_abs"] < 1e-4 and (tmp_path / "mod" / "export" / "student.onnx").is_file()
    back = kdgen.load_model(run / "student")  # and in this process: rebuilt from class path + args + structure
    assert isinstance(back, ResidualGenerator) and back.stem.out_channels == 16 and face_of(back).z_shape == (16,)


def test_without_the_users_code_a_fresh_process_is_told_where_it_looks(python_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "kdgen.cli", "sample", str(python_run.out / "student"), "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and "cannot import 'own_models'" in p.stderr and "PYTHONPATH" in p.stderr and "Traceback" not in p.stderr


def test_yaml_recipe_with_class_weights_and_a_given_student(tmp_path, monkeypatch, capsys):
    torch.manual_seed(1)
    teacher = ResidualGenerator(z_dim=16, width=16)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    recipe = {
        "teacher": {"class": "own_models:ResidualGenerator", "args": {"z_dim": 16, "width": 16}, "weights": str(tmp_path / "teacher.pt"),
                    "face": "generator", "z_shape": [16]},
        "student": {"class": "own_models:ResidualGenerator", "args": {"z_dim": 16, "width": 4}},
        "methods": {"output": {"weight": 1.0}, "feature": {"weight": 1.0}},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, out, err = run_cli(monkeypatch, capsys, "distill", tmp_path / "r.yaml", *fast(tmp_path / "run"))
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["teacher"]["macs"] / m["student"]["macs"] > 8  # a quarter of the width: >= 8x fewer MACs
    meta = json.loads((tmp_path / "run" / "student" / "model.json").read_text())
    assert meta["args"] == {"z_dim": 16, "width": 4} and not meta["structure"]  # given, not pruned
    assert m["teacher"]["file_bytes"] == (tmp_path / "teacher.pt").stat().st_size


def test_feature_term_pairs_layers_by_resolution_across_different_classes():
    from kdgen.methods import TermContext
    from kdgen.methods.feature import FeatureTerm

    t, s = ResidualGenerator(z_dim=8, width=16), ResidualGenerator(z_dim=8, width=4)
    term = FeatureTerm(FeatureTerm.Options(), TermContext(student=s, teacher=t, z_shape=(8,)))
    assert term.pairs == [("block7", "block7"), ("block14", "block14"), ("skip", "skip")]  # 7x7, 14x14, 28x28
    assert [(a.in_channels, a.out_channels) for a in term.adapters] == [(8, 32), (4, 16), (4, 16)]
    with pytest.raises(KdgenError, match=r"student layer 'up28' has shape \(4, 28, 28\) but teacher layer 'block14' has \(16, 14, 14\)"):
        FeatureTerm(FeatureTerm.Options(student_layers=["up28"], teacher_layers=["block14"]), TermContext(student=s, teacher=t, z_shape=(8,)))
    pair = FeatureTerm(FeatureTerm.Options(student_layers=["up14"], teacher_layers=["block14"]), TermContext(student=s, teacher=t, z_shape=(8,)))
    assert pair.pairs == [("up14", "block14")]
    with pytest.raises(KdgenError, match="give both"):
        FeatureTerm(FeatureTerm.Options(student_layers=["up14"]), TermContext(student=s, teacher=t, z_shape=(8,)))


def test_stock_torchvision_resnet18_teacher_to_a_pruned_student(tmp_path, monkeypatch, capsys):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)  # the stock 7x7 stem
    from safetensors.torch import save_file

    save_file(net.state_dict(), tmp_path / "r18.safetensors")
    recipe = {"teacher": {"class": "torchvision:resnet18", "args": {"num_classes": 10}, "weights": str(tmp_path / "r18.safetensors")},
              "data": {"name": "digits", "channels": 3, "image_size": 32}, "student": {"width": 0.25},
              "methods": {"hinton": {"temperature": 4.0, "alpha": 0.5}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, out, err = run_cli(monkeypatch, capsys, "distill", tmp_path / "r.yaml", *fast(tmp_path / "run"))
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["teacher"]["params"] / m["student"]["params"] > 10  # a quarter of the channels: ~16x fewer weights
    assert 0 <= m["student"]["accuracy"] <= 1 and m["protocol"]["image_size"] == 32
    meta = json.loads((tmp_path / "run" / "student" / "model.json").read_text())
    assert meta["class"] == "torchvision:resnet18" and meta["structure"]["conv1"]["attrs"]["out_channels"] == 16
    back = kdgen.load_model(tmp_path / "run" / "student")
    assert back(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_timm_model_when_the_extra_is_installed():
    timm = pytest.importorskip("timm", reason="timm is the optional extra kdgen[timm]; install it to run this check")
    from kdgen.models.custom import build_class
    from kdgen.models.prune import prune_student

    net = build_class("timm:resnet18", {"num_classes": 10, "in_chans": 1})
    face = face_of(kdgen.load_model(kdgen.Classifier(net, input_shape=(1, 32, 32))))
    student = prune_student(net, face, width=0.5)
    assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10) and student.conv1.out_channels == 32
    assert timm.is_model("resnet18")


def test_classifier_of_a_users_class_with_a_torch_dataset_from_python(tmp_path):
    from kdgen.data import load_dataset

    digits = load_dataset("digits")

    class Pairs(torch.utils.data.Dataset):  # (image, label) tuples in [0, 1], as torchvision's ToTensor gives
        def __len__(self):
            return 256

        def __getitem__(self, i):
            item = digits[i]
            return item["image"] * 0.5 + 0.5, int(item["label"])

    torch.manual_seed(0)
    teacher = kdgen.Classifier(TinyClassifier(channels=1, num_classes=10, width=16))
    r = kdgen.distill(None, fast(tmp_path / "run", **{"methods": "{hinton: {temperature: 4.0}}", "student.width": 0.5}),
                      teacher=teacher, data=Pairs())
    assert r.metrics["protocol"]["reference"] == "python:Pairs (the training set)"
    assert any("no held-out split" in c for c in r.metrics["protocol"]["caveats"])
    assert r.metrics["student"]["params"] < r.metrics["teacher"]["params"]
    with pytest.raises(KdgenError, match="handed to kdgen in another Python process"):
        from kdgen.data.user import live_dataset

        live_dataset("python:Nope")


@pytest.mark.parametrize("call, pattern", [
    (lambda: kdgen.distill(None, ["train.steps=1"], teacher=torch.nn.Conv2d(1, 1, 1)), r"cannot tell what kind of model Conv2d is"),
    (lambda: kdgen.Generator(ResidualGenerator(z_dim=16), z_shape=(7,)), r"ResidualGenerator failed on noise of shape \(2, 7\)"),
    (lambda: kdgen.Generator(TinyClassifier(), z_shape=(1, 28, 28)), r"a generator must return images"),
    (lambda: kdgen.distill(None, ["train.steps=1"], teacher=kdgen.Generator(ResidualGenerator(z_dim=16), z_shape=(16,)),
                           student=TinyClassifier()), r"TinyClassifier failed on noise of shape \(2, 16\)"),
    (lambda: kdgen.distill(None, ["teacher.class=nosuchmodule:Net", "teacher.path=null"]), r"cannot import 'nosuchmodule'"),
    (lambda: kdgen.distill(None, ["teacher.class=own_models:Nope", "teacher.path=null"]), r"has no 'Nope'"),
    (lambda: kdgen.distill(None, ["teacher.class=own_models:ResidualGenerator", "teacher.path=builtin:gan-mnist5k"]),
     r"teacher.path .* and teacher.class .* both name a teacher"),
    (lambda: kdgen.distill(None, ["teacher.weights=x.pt"]), r"describe teacher.class, and none is given"),
    (lambda: kdgen.distill(None, ["teacher.class=torchvision:resnet999", "teacher.path=null"]), r"torchvision has no model 'resnet999'"),
    (lambda: kdgen.distill(None, ["teacher.class=own_models:ResidualGenerator", "teacher.path=null"]),
     r"kdgen cannot tell what kind of model ResidualGenerator is"),
    (lambda: kdgen.distill(None, ["teacher.class=own_models:ResidualGenerator", "teacher.path=null", "teacher.face=generator"]),
     r"needs teacher.z_shape"),
    (lambda: kdgen.distill(None, ["train.steps=1"], data=[1, 2, 3]), r"item 0 of the dataset has image int"),
    (lambda: kdgen.distill(None, ["methods={hinton: {}}", "data.name=digits"], teacher=kdgen.Classifier(TinyClassifier(channels=3))),
     r"failed on images of shape \(2, 1, 8, 8\).*the shape is the data's: set data.channels and data.image_size"),
])
def test_refusals_are_sentences(call, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KdgenError, match=pattern):
        call()
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_weights_that_do_not_fit_the_class_are_a_sentence(tmp_path):
    torch.save(ResidualGenerator(z_dim=16, width=8).state_dict(), tmp_path / "w.pt")
    with pytest.raises(KdgenError, match=r"'stem.weight' is \(16, 16, 7, 7\) in the file and \(16, 32, 7, 7\) in the model; check the args"):
        kdgen.distill(None, ["teacher.path=null", "teacher.class=own_models:ResidualGenerator", "teacher.args={z_dim: 16, width: 16}",
                             f"teacher.weights={tmp_path / 'w.pt'}", "teacher.face=generator", "teacher.z_shape=[16]", f"out={tmp_path / 'r'}"])


def test_a_class_defined_in_main_is_refused_before_training(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import torch, kdgen\n"
        "class G(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.c = torch.nn.ConvTranspose2d(8, 16, 28); self.o = torch.nn.Conv2d(16, 1, 1)\n"
        "    def forward(self, z):\n        return torch.tanh(self.o(self.c(z.view(-1, 8, 1, 1))))\n"
        "try:\n"
        f"    kdgen.distill(None, ['out={tmp_path / 'r'}', 'methods={{output: {{}}}}'], teacher=kdgen.Generator(G(), z_shape=(8,)))\n"
        "except kdgen.KdgenError as e:\n    print('REFUSED', e)\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "REFUSED" in p.stdout and "defined in the script being run (__main__)" in p.stdout, p.stdout + p.stderr
    assert not (tmp_path / "r" / "state").exists()


def test_a_model_file_cannot_name_anything_but_an_nn_module_class(tmp_path):
    """A folder someone hands over must not make kdgen call an arbitrary function with arguments from JSON."""
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "model.json").write_text(json.dumps({"family": "class", "class": "subprocess:check_call",
                                                    "args": {"args": ["touch", str(marker)]}}))
    with pytest.raises(KdgenError, match="not an nn.Module class"):
        kdgen.load_model(folder)
    assert not marker.exists()


def test_pruned_attention_student_reloads_output_for_output(tmp_path):
    from own_models import AttentionClassifier

    from kdgen.models.prune import prune_student
    from kdgen.models.resolve import save_any

    torch.manual_seed(0)
    net = AttentionClassifier()
    face = face_of(kdgen.load_model(kdgen.Classifier(net, input_shape=(1, 28, 28))))
    student = prune_student(net, face, width=0.5).eval()
    assert student.attn.embed_dim == 16 and student.attn.num_heads == 4
    save_any(student, tmp_path / "s")
    back = kdgen.load_model(tmp_path / "s")
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(back(x), student(x), atol=1e-5)


def test_a_module_whose_settings_cannot_be_read_back_is_refused_before_training(tmp_path):
    from own_models import HiddenSetting

    with pytest.raises(KdgenError, match=r"rebuilds HiddenSetting's tensors but not its outputs.*pass the constructor args"):
        kdgen.distill(None, fast(tmp_path / "r", **{"methods": "{output: {}}"}),
                      teacher=kdgen.Generator(HiddenSetting(ch=8), z_shape=(8,)), student=kdgen.Generator(HiddenSetting(ch=8), z_shape=(8,)))
    assert not (tmp_path / "r" / "state").exists()
    ok = kdgen.distill(None, fast(tmp_path / "ok", **{"methods": "{output: {}}", "eval.enabled": "false"}),
                       teacher=kdgen.Generator(HiddenSetting(ch=8), z_shape=(8,), args={"ch": 8}),
                       student=kdgen.Generator(HiddenSetting(ch=4), z_shape=(8,), args={"ch": 4}))
    assert json.loads((ok.out / "student" / "model.json").read_text())["args"] == {"ch": 4}


def test_a_recipe_class_teacher_run_is_re_measured_from_its_config(tmp_path, monkeypatch, capsys):
    torch.manual_seed(2)
    torch.save(ResidualGenerator(z_dim=16, width=8).state_dict(), tmp_path / "t.pt")
    keys = ["teacher.path=null", "teacher.class=own_models:ResidualGenerator", "teacher.args={z_dim: 16, width: 8}",
            f"teacher.weights={tmp_path / 't.pt'}", "teacher.face=generator", "teacher.z_shape=[16]", "methods={output: {}}"]
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *fast(tmp_path / "run"), *keys)
    assert code == 0, err
    before = json.loads((tmp_path / "run" / "metrics.json").read_text())
    again = kdgen.evaluate(tmp_path / "run", ["eval.num_samples=64"])
    assert again.metrics["teacher"]["macs"] == before["teacher"]["macs"] and again.metrics["student"]["fid"] > 0


def test_datasets_of_one_class_keep_their_own_names_and_are_read_lazily():
    from kdgen.data.user import UserDataset

    calls = []

    class Counted(torch.utils.data.Dataset):
        def __init__(self, value):
            self.value = value

        def __len__(self):
            return 1000

        def __getitem__(self, i):
            calls.append(i)
            return torch.full((1, 8, 8), self.value), i % 10

    a, b = UserDataset(Counted(0.1)), UserDataset(Counted(-0.1))
    assert a.name != b.name and UserDataset(a.dataset).name == a.name
    assert len(calls) == 3 * 64  # 64 items probed per hand-in; the labels wait until a measurement asks
    assert a.labels.shape == (1000,) and len(calls) == 3 * 64 + 1000


def test_evaluate_a_module_on_a_dataset_without_labels_is_a_sentence():
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 8, 8))
    net = kdgen.Classifier(TinyClassifier(width=4), input_shape=(1, 8, 8))
    with pytest.raises(KdgenError, match="has none; give labelled data"):
        kdgen.evaluate(net, data=data)


def test_non_square_generators_are_refused_with_a_sentence():
    class Wide(torch.nn.Module):
        def forward(self, z):
            return torch.zeros(z.shape[0], 1, 8, 16)

    with pytest.raises(KdgenError, match="8x16; kdgen's data, metrics and students work on square images"):
        kdgen.Generator(Wide(), z_shape=(4,))


def test_structure_pruned_sends_the_builtin_gan_through_torch_pruning(tmp_path, monkeypatch, capsys):
    """student.structure=pruned: the open-door path from a recipe (kdgen's own family, pruned like any class)."""
    code, _, err = run_cli(monkeypatch, capsys, "distill", "configs/gan/mnist5k-demo.yaml", *fast(tmp_path / "run"),
                           "student.structure=pruned", "eval.enabled=false")
    assert code == 0, err
    meta = json.loads((tmp_path / "run" / "student" / "model.json").read_text())
    assert meta["family"] == "class" and meta["class"] == "kdgen.models.gan:DCGANGenerator"
    student = kdgen.load_model(tmp_path / "run" / "student")
    assert student.blocks[0][0].out_channels == 64  # 256 * 0.25, as the family's own width=0.25 gives
