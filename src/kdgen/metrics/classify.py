"""Classifier quality: accuracy, macro-F1, per-class accuracy, confusion matrix (and agreement with a teacher)."""

from __future__ import annotations

import torch
from torch import nn

from ..utils import device_of, eval_mode


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Arg-max class of every image, [n] on the CPU."""
    with eval_mode(model):
        device = device_of(model)
        return torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(batch_size)])


def classification_scores(pred: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """accuracy = mean 1[pred = y]; macro-F1 = mean over classes of 2PR / (P + R); per-class accuracy (recall);
    confusion[i][j] = count of true class i predicted as j."""
    k = int(num_classes or max(int(pred.max()), int(labels.max())) + 1)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels.long(), pred.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp_min(1)
    recall = tp / confusion.sum(1).clamp_min(1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    return {"accuracy": float(tp.sum() / confusion.sum()), "macro_f1": float(f1.mean()),
            "per_class_accuracy": [round(v, 4) for v in recall.tolist()], "confusion": confusion.tolist(),
            "errors": int(confusion.sum() - tp.sum())}


@torch.no_grad()
def knn_accuracy(features, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, k: int = 5) -> float:
    """Accuracy of a k-nearest-neighbour vote (cosine) in a feature space (`features`: images -> [n, d]): how much class
    information it holds, with no classifier trained on it."""
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.cat([features(c).cpu() for c in x.split(500)]), dim=1)

    idx = (embed(test_x) @ embed(train_x).t()).topk(k, dim=1).indices
    pred = torch.mode(train_y[idx], dim=1).values
    return float((pred == test_y).float().mean())
