"""One error type: a ValueError whose message names Python parameters for Python callers and flags for the CLI."""

import pytest

from kdgen.errors import KdgenError


def test_python_callers_are_told_parameters_and_the_cli_its_flags():
    e = KdgenError("--opset 25 is outside 18..23; drop --save-features, or run `kdgen export RUN --steps 4`")
    assert isinstance(e, ValueError)
    assert str(e) == "opset 25 is outside 18..23; drop save_features, or run `kdgen export RUN --steps 4`"
    assert e.cli_message.startswith("--opset 25") and "drop --save-features" in e.cli_message
    assert str(KdgenError("config key 'train.steps' must be > 0")) == "config key 'train.steps' must be > 0"  # keys are untouched


def test_the_python_api_never_mentions_a_flag(tmp_path):
    import kdgen

    with pytest.raises(KdgenError) as info:
        kdgen.export(tmp_path, format="torchscript", quantize="int8")
    assert "--" not in str(info.value) and "quantize applies to ONNX" in str(info.value)
    assert info.value.cli_message.startswith("--quantize applies to ONNX")
