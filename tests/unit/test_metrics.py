import numpy as np
import pytest
import torch
from scipy import linalg

from kdgen.data import load_dataset, stack_images
from kdgen.metrics import QualityMetric, latency_ms, load_feature_extractor, macs_per_image, psnr
from kdgen.sampling import GeneratorSampler


@pytest.fixture(scope="module")
def setup():
    extractor, info = load_feature_extractor("builtin:featnet-mnist5k", channels=1)
    real = load_dataset("mnist5k", split="test").images
    return extractor, real, QualityMetric(extractor, real)


def test_fid_of_a_set_against_itself_is_zero(setup):
    _, real, metric = setup
    r = metric.score(real)
    train = stack_images(load_dataset("mnist5k", split="train"), 500)
    blurred = metric.score(torch.nn.functional.avg_pool2d(train, 3, 1, 1))
    assert abs(r["fid"]) < 1e-3 < blurred["fid"]
    assert abs(r["kid"]) < 0.05 * blurred["kid"]  # the unbiased KID estimate of a set vs itself is ~0 +- noise


def _noise(x, a):
    return (x + a * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)


def _blur(x, a):
    if a == 0:
        return x
    k = 2 * a + 1
    return torch.nn.functional.avg_pool2d(x, k, 1, a, count_include_pad=False)


def _shift(x, a):
    return torch.roll(x, shifts=(a, a), dims=(2, 3))


@pytest.mark.parametrize("corrupt, amounts", [(_noise, (0.0, 0.2, 0.5, 1.0)), (_blur, (0, 1, 2, 3)), (_shift, (0, 1, 3, 6))],
                         ids=["noise", "blur", "shift"])
def test_fid_and_kid_grow_monotonically_with_corruption(setup, corrupt, amounts):
    _, _, metric = setup
    train = stack_images(load_dataset("mnist5k", split="train"), 1000)
    scores = [metric.score(corrupt(train, a)) for a in amounts]
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    assert fids == sorted(fids) and fids[-1] > 3 * fids[0]
    assert kids == sorted(kids)


def test_fid_equals_closed_form_frechet_distance(setup):
    extractor, real, metric = setup
    fake = stack_images(load_dataset("mnist5k", split="train"), 800)
    with torch.no_grad():
        a, b = extractor(real).double().numpy(), extractor(fake).double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))
    assert metric.score(fake)["fid"] == pytest.approx(expected, rel=1e-3)


def test_psnr_by_hand():
    a = torch.zeros(1, 1, 2, 2)
    b = torch.full((1, 1, 2, 2), 0.2)  # mse 0.04 -> 10 log10(4 / 0.04) = 20 dB
    assert psnr(a, b).item() == pytest.approx(20.0)


def test_macs_by_hand_and_latency_positive():
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, bias=False))  # 2*3*9 MACs per pixel
    sampler = GeneratorSampler(conv, z_shape=2)
    sampler.example_input = lambda n: torch.zeros(n, 2, 5, 5)
    assert macs_per_image(sampler) == 2 * 3 * 9 * 25
    assert latency_ms(sampler, batch=2, repeats=2) > 0


def test_same_seed_same_samples(tiny_teacher):
    from kdgen.models.loading import load_model

    s = GeneratorSampler(load_model(tiny_teacher), z_shape=16)
    assert torch.equal(s.sample(10, seed=3), s.sample(10, seed=3))
    assert not torch.equal(s.sample(10, seed=3), s.sample(10, seed=4))


def test_scores_do_not_depend_on_the_callers_rng(setup):
    _, _, metric = setup
    fake = stack_images(load_dataset("mnist5k", split="train"), 600)
    torch.manual_seed(1)
    a = metric.score_with_features(fake, seed=3)[0]
    torch.manual_seed(2)
    torch.rand(1000)
    b = metric.score_with_features(fake, seed=3)[0]
    assert a == b
