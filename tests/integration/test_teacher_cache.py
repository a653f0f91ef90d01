"""The TinyGAN-style teacher cache: (z, teacher image, teacher features) pairs drawn once into checksummed safetensors
shards, shared by runs of the same teacher, redrawn where damaged; distillation then never runs the teacher."""

import json

import pytest
import torch
from conftest import tiny_overrides

import kdgen
from kdgen.errors import KdgenError
from kdgen.models.loading import load_model
from kdgen.taps import FeatureTaps

FAST = {"eval.enabled": "false", "data.teacher_cache_size": 300}


def _counting(teacher_folder):
    teacher = load_model(teacher_folder)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    return teacher, calls


def test_a_cached_teacher_never_runs_during_training_and_the_cache_is_shared(tiny_teacher, tmp_path):
    """Building the student calls the teacher a few times (pruning, probing shapes): S calls. A live run then adds one
    per step; a cached run adds one per shard it draws, and none per step."""
    cache = tmp_path / "cache"
    teacher, calls = _counting(tiny_teacher)

    def run(name, steps, cached=True):
        calls.clear()
        extra = {**FAST, **({"data.teacher_cache": cache} if cached else {})}
        res = kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, tmp_path / name, steps=steps, **extra),
                            teacher=teacher)
        return len(calls), res.metrics["train"].get("teacher_cache")

    live, _ = run("live", 4, cached=False)
    first, rec = run("a", 4)
    again, rec2 = run("b", 8)  # a second run of the same teacher reads the first's cache
    assert rec["shards_drawn_now"] == 2 and rec["pairs"] == 300 and rec2["shards_drawn_now"] == 0  # 300 pairs: two shards of 256
    assert first - again == 2 and live - again == 4  # S + 2 shards; S + 0 for 8 cached steps; S + 4 for 4 live steps
    (folder,) = cache.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layers"] == ["blocks.0", "blocks.1", "blocks.2"] and manifest["count"] == 300  # the feature term's taps
    with FeatureTaps(teacher, manifest["layers"]) as taps:
        teacher(torch.zeros(1, 16))
    assert rec["bytes_per_pair"] == 4 * (16 + 28 * 28) + 2 * sum(t.numel() for t in taps.outputs.values())  # z, image fp32; features fp16
    shard = folder / "part-0001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x10
    shard.write_bytes(bytes(data))
    damaged, rec3 = run("c", 2)
    assert damaged - again == 1 and rec3["shards_drawn_now"] == 1  # the damaged shard, and only it, drawn again


def test_a_cache_for_a_teacher_without_noise_pairs_is_a_sentence(tmp_path):
    with pytest.raises(KdgenError, match="data.teacher_cache holds a teacher's outputs for `kdgen distill`; `train-teacher`"):
        kdgen.train_teacher("configs/gan/mnist5k-teacher.yaml", [f"out={tmp_path}", "data.teacher_cache=auto"])
