"""Synthetic label matrices with known ground truth, for tests and benchmarks."""

from __future__ import annotations

import numpy as np


def make_synthetic(
    n: int,
    m: int,
    cardinality: int = 2,
    acc_range: tuple[float, float] = (0.55, 0.95),
    cov_range: tuple[float, float] = (0.05, 0.6),
    class_balance: list[float] | np.ndarray | None = None,
    n_correlated: int = 0,
    copy_prob: float = 0.8,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Y and L from independent LFs (accuracy and coverage drawn per LF, wrong votes uniform).

    `n_correlated` pairs (i, j) make LF j repeat LF i's vote on `copy_prob` of the rows.
    Returns L (n, m) int64, Y (n,), acc (true empirical accuracy of each LF), cov, pairs.
    """
    rng = np.random.default_rng(seed)
    k = cardinality
    p = np.full(k, 1.0 / k) if class_balance is None else np.asarray(class_balance, float)
    p = p / p.sum()
    Y = rng.choice(k, size=n, p=p).astype(np.int64)
    acc = rng.uniform(*acc_range, size=m)
    cov = rng.uniform(*cov_range, size=m)
    L = np.full((n, m), -1, dtype=np.int64)
    for i in range(m):
        fires = rng.random(n, dtype=np.float32) < cov[i]
        right = rng.random(n, dtype=np.float32) < acc[i]
        wrong = (Y + rng.integers(1, k, size=n)) % k
        L[:, i] = np.where(fires, np.where(right, Y, wrong), -1)
    pairs = []
    if n_correlated:
        order = rng.permutation(m)
        for t in range(min(n_correlated, m // 2)):
            i, j = int(order[2 * t]), int(order[2 * t + 1])
            copy = rng.random(n, dtype=np.float32) < copy_prob
            L[copy, j] = L[copy, i]
            pairs.append((i, j))
    votes = L >= 0
    true_acc = ((L == Y[:, None]) & votes).sum(0) / np.maximum(votes.sum(0), 1)
    return {"L": L, "Y": Y, "acc": true_acc, "cov": votes.mean(0), "pairs": np.array(pairs)}
