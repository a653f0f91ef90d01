import pytest
import torch

from kdgen.data import load_dataset, stack_images
from kdgen.metrics import load_feature_extractor
from kdgen.metrics.prdc import knn_radii, prdc


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


# real = {0, 1, 3, 10}, fake = {1.5, 1.8, 12, 20} on a line; no distance equals a radius.
# k=1: real radii 1, 1, 2, 7 -> balls [-1,1] [0,2] [1,5] [3,17]; fake radii .3, .3, 8, 8.
#   fakes in real balls: 1.5 -> 2, 1.8 -> 2, 12 -> 1, 20 -> 0: precision 3/4, density 5/(1*4), coverage 3/4
#   (ball [-1,1] is empty); only real 10 lies in a fake ball ([4,20] around 12): recall 1/4.
# k=2: real radii 3, 2, 3, 9 -> balls [-3,3] [-1,3] [0,6] [1,19]; fake radii 10.5, 10.2, 10.2, 18.2.
#   fakes in real balls: 1.5 -> 4, 1.8 -> 4, 12 -> 1, 20 -> 0: precision 3/4, density 9/(2*4), coverage 1;
#   the ball of radius 10.5 around 1.5 holds every real point: recall 1.
@pytest.mark.parametrize("k, expected", [
    (1, {"precision": 0.75, "recall": 0.25, "density": 1.25, "coverage": 0.75}),
    (2, {"precision": 0.75, "recall": 1.0, "density": 1.125, "coverage": 1.0}),
])
def test_hand_computed_1d_case(k, expected):
    real, fake = column(0, 1, 3, 10), column(1.5, 1.8, 12, 20)
    assert prdc(real, fake, k=k) == pytest.approx(expected, abs=1e-12)


def test_knn_radius_skips_the_point_itself():
    assert knn_radii(column(0, 1, 3, 10), 1).tolist() == [1, 1, 2, 7]
    assert knn_radii(column(0, 1, 3, 10), 2).tolist() == [3, 2, 3, 9]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_identical_sets_are_perfect(k):
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(k))
    r = prdc(x, x.clone(), k=k)
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
    # each real ball holds exactly its centre and its k neighbours (no ties in continuous data): density (k+1)/k
    assert r["density"] == pytest.approx((k + 1) / k, abs=1e-12)


def test_chunking_does_not_change_the_result_and_distances_are_euclidean():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(257, 12, generator=g), torch.randn(190, 12, generator=g) * 1.3 + 0.2
    whole = prdc(real, fake, k=4)
    assert prdc(real, fake, k=4, chunk=7) == whole  # exact: each pair's distance does not depend on the chunk
    assert 0 < whole["precision"] < 1 and 0 < whole["recall"] < 1
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    rotated = prdc(real.double() @ rotation, fake.double() @ rotation, k=4)  # Euclidean balls are rotation-invariant
    assert rotated == pytest.approx(whole, abs=0.011)  # at most a near-tie or two may flip under rounding


@pytest.mark.parametrize("real, fake, k, message", [
    (torch.zeros(10, 3), torch.zeros(10, 3), 0, "k must be at least 1"),
    (torch.zeros(5, 3), torch.zeros(10, 3), 5, "smaller than both set sizes"),
    (torch.zeros(10, 3), torch.zeros(4, 3), 4, "smaller than both set sizes"),
    (torch.zeros(10, 3), torch.zeros(10, 4), 2, "differ in dimension: 3 vs 4"),
    (torch.zeros(10), torch.zeros(10, 1), 2, r"\[n, D\] feature matrices"),
])
def test_bad_inputs_raise_a_sentence(real, fake, k, message):
    with pytest.raises(ValueError, match=message):
        prdc(real, fake, k=k)


@pytest.fixture(scope="module")
def features():
    extractor, _ = load_feature_extractor("builtin:featnet-mnist5k", channels=1)
    test, train = load_dataset("mnist5k", split="test"), load_dataset("mnist5k", split="train")
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return {"test": extractor(test.images), "ones": extractor(train.images[train.labels == 1]),
                "noise": extractor(noise), "train": extractor(stack_images(train, 1000))}


def test_a_generator_copying_a_few_ones_is_precise_but_has_no_recall(features):
    # 500 outputs = 50 copies of each of 10 train '1's, for 20 seeded draws of the 10 (copying features
    # is copying images: the net is deterministic). Precision is then the share of the 10 that lie on
    # the test manifold: 0.89 on average over the draws (0.88 over all 450 ones) but 0.6..1.0 per draw,
    # so the mean is asserted. With 49 exact copies each fake k-NN radius is 0: recall is 0 in every draw.
    g = torch.Generator().manual_seed(0)
    ones = features["ones"]
    draws = [prdc(features["test"], ones[torch.randperm(len(ones), generator=g)[:10]].repeat(50, 1)) for _ in range(20)]
    assert sum(r["precision"] for r in draws) / len(draws) > 0.8
    assert max(r["recall"] for r in draws) < 0.2
    assert max(r["coverage"] for r in draws) < 0.2  # measured <= 0.07: one digit covers little of the test set


def test_uniform_noise_is_off_the_data_manifold(features):
    r = prdc(features["test"], features["noise"])  # measured: all four exactly 0
    assert r["precision"] < 0.1 and r["density"] < 0.1
    assert r["recall"] < 0.1 and r["coverage"] < 0.1


def test_real_train_images_score_high_against_the_test_set(features):
    # measured for 1,000 train images (seeds 0-3 of stack_images): precision 0.89-0.91, recall 0.91-0.93,
    # density 0.79-0.81, coverage 0.95-0.97 (density is ~1 for identically distributed sets; 0.8 is not
    # explained here). Every threshold leaves >= 0.09 of margin to the lowest measured value.
    r = prdc(features["test"], features["train"])
    assert r["precision"] > 0.8 and r["recall"] > 0.8
    assert 0.7 < r["density"] < 1.3
    assert r["coverage"] > 0.85
