"""benchmarks/img2img.py trains the student alone as the distilled student was trained: its loss weights and schedule."""

import importlib.util
from pathlib import Path

from kdgen.config import load_run_config

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_img2img", ROOT / "benchmarks" / "img2img.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_student_alone_gets_the_distilled_students_weights_betas_and_schedule():
    shipped = dict(kv.split("=", 1) for kv in bench.alone_recipe(load_run_config(ROOT / "configs/img2img/emoji-sr4.yaml")))
    assert shipped["model.args.l1_weight"] == "100.0" and shipped["model.args.adversarial_weight"] == "0.01"  # not the teacher's 1.0
    assert shipped["train.betas"] == "[0.5, 0.999]" and shipped["train.steps"] == "4000"
    fast = dict(kv.split("=", 1) for kv in bench.alone_recipe(load_run_config(ROOT / "configs/img2img/emoji-sr4-fast.yaml")))
    assert fast["model.args.adversarial_weight"] == "0.0" and fast["train.lr_schedule"] == "cosine"  # no adversarial term: none alone
    assert fast["train.betas"] == "[0.9, 0.999]" and fast["train.lr"] == "0.002"
    cfg = load_run_config(ROOT / "configs/img2img/emoji-sr4.yaml", ["methods.truth={weight: 50.0}", "data.train_images=300"])
    both = dict(kv.split("=", 1) for kv in bench.alone_recipe(cfg))
    assert both["model.args.l1_weight"] == "150.0"  # output + truth: both pull to an image, alone both are the ground truth
    assert both["data.train_images"] == "300" and "data.train_images" not in shipped  # the same few pairs
