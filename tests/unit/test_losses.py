import pytest
import torch

from kdgen.losses import feature_mse, hinge_d_loss, hinge_g_loss, output_distance


def test_output_distance_by_hand():
    s = torch.tensor([[[[0.5, -1.0], [0.0, 1.0]]]])
    t = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
    assert output_distance(s, t, "l1").item() == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 4)
    assert output_distance(s, t, "l2").item() == pytest.approx((0.25 + 1.0 + 0.0 + 1.0) / 4)
    with pytest.raises(ValueError):
        output_distance(s, t, "l3")


def test_feature_mse_by_hand_and_shape_check():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 0.0, 0.0]])
    assert feature_mse(a, b).item() == pytest.approx((0 + 4 + 9) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_mse(a, torch.zeros(1, 4))


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2 -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x): 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(-(-2.0 + 0.0 + 1.0) / 3)
