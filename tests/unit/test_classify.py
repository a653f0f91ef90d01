import pytest
import torch

from kdgen.metrics.classify import classification_scores


def test_scores_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    s = classification_scores(pred, labels)
    assert s["accuracy"] == pytest.approx(4 / 6) and s["errors"] == 2
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 0.8; class 2: P 1 R 1/2 F1 2/3
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert s["per_class_accuracy"] == [0.5, 1.0, 0.5]
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
