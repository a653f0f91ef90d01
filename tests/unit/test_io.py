import collections
import json
import os

import pytest
import torch

from kdgen.errors import KdgenError
from kdgen.io import load_state_dict_file, resolve_path
from kdgen.models.loading import build_model, load_model, save_model

ARGS = {"z_dim": 8, "image_size": 16, "channels": 3, "base_width": 4, "width": 1.0}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    g = build_model("dcgan-generator", ARGS).eval()
    save_model(g, tmp_path / "m", family="dcgan-generator", args=ARGS)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["family"] == "dcgan-generator" and meta["args"] == ARGS and "kdgen_version" in meta
    loaded = load_model(tmp_path / "m")
    z = torch.randn(2, 8)
    assert torch.equal(loaded(z), g(z)) and not loaded.training
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # no temp files left


def test_plain_pt_state_dict_loads_with_weights_only(tmp_path):
    g = build_model("dcgan-generator", ARGS)
    torch.save(g.state_dict(), tmp_path / "w.pt")
    sd = load_state_dict_file(tmp_path / "w.pt")
    assert set(sd) == set(g.state_dict())


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(KdgenError, match="never unpickles"):
        load_state_dict_file(tmp_path / "evil.pt")


def test_pickled_module_is_refused(tmp_path):
    torch.save(collections.Counter(a=1), tmp_path / "obj.pth")
    with pytest.raises(KdgenError, match="never unpickles|not a state dict"):
        load_state_dict_file(tmp_path / "obj.pth")


def test_unknown_format_and_corrupt_files(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(KdgenError, match="unknown weight format '.ckpt'"):
        load_state_dict_file(tmp_path / "w.ckpt")
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(KdgenError, match="corrupt or not safetensors"):
        load_state_dict_file(tmp_path / "w.safetensors")
    (tmp_path / "w.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(KdgenError, match="corrupt|never unpickles"):
        load_state_dict_file(tmp_path / "w.pt")


def test_load_model_errors_are_sentences(tmp_path):
    with pytest.raises(KdgenError, match="does not exist"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdgenError, match="not a kdgen model folder"):
        load_model(tmp_path / "empty")
    with pytest.raises(KdgenError, match="no built-in model 'nope'; shipped ones are: .*gan-mnist5k"):
        resolve_path("builtin:nope")


def test_weights_that_do_not_fit_the_json(tmp_path):
    g = build_model("dcgan-generator", ARGS)
    save_model(g, tmp_path / "m", family="dcgan-generator", args={**ARGS, "base_width": 8})
    with pytest.raises(KdgenError, match="do not fit"):
        load_model(tmp_path / "m")


def test_shipped_assets_load():
    feat = load_model("builtin:featnet-mnist5k")
    gen = load_model("builtin:gan-mnist5k")
    assert feat(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert gen(torch.randn(2, gen.z_dim)).shape == (2, 1, 28, 28)
