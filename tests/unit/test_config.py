import re
from pathlib import Path

import pytest
import yaml

from kdgen.config import RunConfig, load_config
from kdgen.errors import KdgenError
from kdgen.runs import task_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_recipe_equals_builtin_defaults():
    assert load_config(ROOT / "configs/gan/mnist5k-demo.yaml").to_dict() == load_config(None).to_dict()
    assert load_config(None).teacher.path == "builtin:gan-mnist5k" and RunConfig().teacher.path is None  # filled in on load


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    assert load_config(recipe).task in ("distill", "train-teacher", "train-features")


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.steps=12", "student.width=0.5", "eval.seeds=[0,1]", "methods.output.distance=l2"])
    assert cfg.train.steps == 12 and cfg.student.width == 0.5 and cfg.eval.seeds == [0, 1]
    assert cfg.methods["output"]["distance"] == "l2"


def test_method_removed_by_null_override():
    cfg = load_config(None, ["methods.adversarial=null"])
    assert "adversarial" not in cfg.methods and "output" in cfg.methods


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(KdgenError, match=r"unknown config key 'train.stepz' \(did you mean 'steps'\?\); valid keys in train are: steps"):
        load_config(None, ["train.stepz=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-1", r"'train.lr' must be > 0, got -1"),
        ("train.lr=fast", r"'train.lr' must be float"),
        ("student.width=2", r"'student.width' must be <= 1"),
        ("student.init=magic", r"'student.init' must be one of 'random', 'prune'"),
        ("methods.output.weight=-0.5", r"'methods.output.weight' must be >= 0"),
        ("methods.output.weight=heavy", r"'methods.output.weight' must be float"),
        ("methods.output.distance=l7", r"'methods.output.distance' must be one of 'l1', 'l2'"),
        ("methods.magic.weight=1", r"unknown method 'magic'; choose one of: adversarial, attention, consistency, dkd, feature, fitnet, hinton, onestep, output, perceptual, progressive, structural"),
        ("train.betas=[0.5]", r"'train.betas' must be two numbers"),
        ("train.steps", r"not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    from kdgen.runs import task_config  # a distill recipe: its methods are checked too, before any work

    with pytest.raises(KdgenError, match=message):
        task_config(None, [override], "distill")


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(KdgenError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(KdgenError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.steps=7", "methods.feature=null"])
    cfg.save(tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["steps"] == 7
    assert load_config(tmp_path / "config.yaml") == cfg


def test_non_utf8_recipe_folder_recipe_and_duplicate_seeds(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(KdgenError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(KdgenError, match="is a folder, not a YAML recipe"):
        load_config(tmp_path)
    with pytest.raises(KdgenError, match="distinct seeds"):
        load_config(None, ["eval.seeds=[0,0]"])


def test_scientific_notation_is_a_float():
    assert load_config(None, ["train.lr=1e-4"]).train.lr == 1e-4


@pytest.mark.parametrize("override, sentence", [
    ("data=!!int x", "the override of 'data' holds a YAML value that cannot be read"),
    ("train.steps=" + "[" * 1500 + "]" * 1500, "the override of 'train.steps' nests too deep"),
    ("train.steps=" + "[" * 80 + "]" * 80, "nests deeper than 64 levels"),
    ("model.args=&a {x: *a}", "holds a value that contains itself"),
    ("methods={1: {}}", "config key 'methods' has the entry 1, which is not a name"),
])
def test_yaml_that_parses_but_cannot_be_a_value_is_a_sentence(override, sentence, tmp_path):
    """Found by tests/unit/test_fuzz.py: each of these escaped as a ValueError, RecursionError or TypeError traceback."""
    with pytest.raises(KdgenError, match=re.escape(sentence)):
        task_config(None, [override], "distill")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(override.replace("=", ": ", 1) if not override.startswith("train.") else f"train: {{steps: {override.split('=', 1)[1]}}}")
    with pytest.raises(KdgenError):
        task_config(recipe, [], "distill")


def test_yaml_booleans_name_the_option_of_that_name():
    """YAML 1.1 reads `no` as false: train.mixed_precision=no still means the option 'no'."""
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_config(None, ["train.mixed_precision=bf16", "train.grad_accum=2"]).train.grad_accum == 2
    with pytest.raises(KdgenError, match="'train.mixed_precision' must be one of 'no', 'bf16', 'fp16', got True"):
        load_config(None, ["train.mixed_precision=yes"])
