"""Generative precision, recall, density and coverage from k-nearest-neighbour manifold estimates.

Pure functions of feature tensors (real [N, D], fake [M, D]); no model, no config. Distances are
Euclidean and computed in float64, a chunk of rows at a time, so memory stays bounded at
chunk x max(N, M) distances however large the sets are.
"""

from __future__ import annotations

import torch


def _check(real: torch.Tensor, fake: torch.Tensor, k: int, chunk: int) -> None:
    """Raise a ValueError with a sentence when the inputs cannot give meaningful k-NN estimates."""
    if real.dim() != 2 or fake.dim() != 2:
        raise ValueError(
            f"real and fake must be [n, D] feature matrices, got shapes {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k >= len(real) or k >= len(fake):
        raise ValueError(
            f"k must be smaller than both set sizes, got k={k} with {len(real)} real and {len(fake)} fake points"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [n, D] x [m, D] -> [n, m], summed directly rather than via |a|^2 + |b|^2 - 2ab.

    2-5x slower than the matmul form (measured on CPU), but exact where it matters here: d(x, x) = 0 and
    d(a, b) = d(b, a) bit for bit, so a copied point lies in its own ball and on its neighbour's rim.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(x: torch.Tensor, k: int, *, chunk: int = 2048) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point of the same set: r_i = ||x_i - NN_k(x_i)||.

    x [N, D] -> radii [N]. The point itself (distance 0) is the 1st smallest, so this is the
    (k+1)-th smallest distance in its row. Rows are processed `chunk` at a time.
    """
    return torch.cat([_dist(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(chunk)])


def prdc(real: torch.Tensor, fake: torch.Tensor, *, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real` in a feature space.

    Shapes: real [N, D], fake [M, D] (any float dtype; computed in float64). Let r_i be the k-NN
    radius of real point X_i (distance to its k-th nearest other real point), s_j that of fake
    point Y_j among the fakes, and B(c, r) the closed Euclidean ball {x : ||x - c|| <= r}.

    Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative
    Models" (NeurIPS):
        precision = (1/M) sum_j 1[ exists i : Y_j in B(X_i, r_i) ]
        recall    = (1/N) sum_i 1[ exists j : X_i in B(Y_j, s_j) ]
    Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models" (ICML):
        density   = (1/(kM)) sum_j sum_i 1[ Y_j in B(X_i, r_i) ]      (about 1 when fake ~ real; unbounded)
        coverage  = (1/N) sum_i 1[ exists j : Y_j in B(X_i, r_i) ]

    Needs 1 <= k < min(N, M). Distances are computed `chunk` fake rows at a time, so at most
    chunk x max(N, M) of them exist at once. Returns plain floats.
    """
    _check(real, fake, k, chunk)
    real, fake = real.detach().double(), fake.detach().double()
    # 1. k-NN radii of each set within itself
    r_real, r_fake = knn_radii(real, k, chunk=chunk), knn_radii(fake, k, chunk=chunk)
    # 2. one pass over fake-to-real distances serves all four counts
    precise, in_real_balls = 0, 0
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for rows, s in zip(fake.split(chunk), r_fake.split(chunk)):
        d = _dist(rows, real)  # [c, N]
        inside = d <= r_real[None, :]  # inside[j, i]: fake j lies in real ball i
        precise += int(inside.any(dim=1).sum())
        in_real_balls += int(inside.sum())
        covered |= inside.any(dim=0)
        recalled |= (d <= s[:, None]).any(dim=0)  # real i lies in some fake ball j of this chunk
    # 3. normalise
    n, m = len(real), len(fake)
    return {
        "precision": precise / m,
        "recall": float(recalled.sum()) / n,
        "density": in_real_balls / (k * m),
        "coverage": float(covered.sum()) / n,
    }
