import pytest
import torch

from kdgen.errors import KdgenError
from kdgen.models import DCGANGenerator
from kdgen.taps import FeatureTaps


def test_taps_capture_named_outputs_and_remove_hooks():
    g = DCGANGenerator(z_dim=8, base_width=4).eval()
    with FeatureTaps(g, ["blocks.1", "blocks.2"]) as taps:
        out = g(torch.randn(3, 8))
    assert taps["blocks.1"].shape == (3, 8, 14, 14) and taps["blocks.2"].shape == (3, 4, 28, 28)
    assert torch.equal(g.to_image(taps["blocks.2"]), out)
    assert all(not m._forward_hooks for m in g.modules())


def test_unknown_layer_names_nearest_real_ones():
    g = DCGANGenerator(z_dim=8, base_width=4)
    with pytest.raises(KdgenError, match=r"no layer 'blocks.7'; nearest real names: blocks.\d"):
        FeatureTaps(g, ["blocks.7"])
