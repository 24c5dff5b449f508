"""Synthetic label matrices with known ground truth, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from toolkit.errors import LoomError


def _prior(cardinality: int, class_balance: Sequence[float] | np.ndarray | None) -> np.ndarray:
    k = cardinality
    if class_balance is None:
        return np.full(k, 1.0 / k)
    p = np.asarray(class_balance, float).reshape(-1)
    if len(p) != k or (p <= 0).any() or not np.isfinite(p).all():
        raise LoomError(
            f"class_balance must hold {k} positive numbers (one per class), got {p.tolist()}"
        )
    return p / p.sum()


def _independent_votes(
    rng: np.random.Generator, Y: np.ndarray, k: int, acc: float, cov: float
) -> np.ndarray:
    """One LF's votes: fires with probability cov, right with probability acc, wrong uniform."""
    n = len(Y)
    fires = rng.random(n, dtype=np.float32) < cov
    right = rng.random(n, dtype=np.float32) < acc
    wrong = (Y + rng.integers(1, k, size=n)) % k
    return np.where(fires, np.where(right, Y, wrong), -1)


def _truth(L: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    votes = L >= 0
    acc = ((L == Y[:, None]) & votes).sum(0) / np.maximum(votes.sum(0), 1)
    return acc, votes.mean(0)


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
    p = _prior(k, class_balance)
    Y = rng.choice(k, size=n, p=p).astype(np.int64)
    acc = rng.uniform(*acc_range, size=m)
    cov = rng.uniform(*cov_range, size=m)
    L = np.full((n, m), -1, dtype=np.int64)
    for i in range(m):
        L[:, i] = _independent_votes(rng, Y, k, acc[i], cov[i])
    pairs = []
    if n_correlated:
        order = rng.permutation(m)
        for t in range(min(n_correlated, m // 2)):
            i, j = int(order[2 * t]), int(order[2 * t + 1])
            copy = rng.random(n, dtype=np.float32) < copy_prob
            L[copy, j] = L[copy, i]
            pairs.append((i, j))
    true_acc, true_cov = _truth(L, Y)
    return {"L": L, "Y": Y, "acc": true_acc, "cov": true_cov, "pairs": np.array(pairs)}


def make_correlated(
    n: int,
    m: int,
    cardinality: int = 2,
    group_sizes: Sequence[int] = (3,),
    correlation: float = 0.8,
    acc_range: tuple[float, float] = (0.55, 0.9),
    cov_range: tuple[float, float] = (0.2, 0.7),
    class_balance: Sequence[float] | np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """L with planted groups of correlated LFs and known truth (deterministic by `seed`).

    Every LF draws an accuracy from `acc_range` and a coverage from `cov_range` and votes
    independently given Y (wrong votes uniform over the other classes). Then, for each group
    (one per entry of `group_sizes`, LFs chosen at random), every member other than the
    group's leader copies the leader's vote (abstains included) on a `correlation` share of
    the rows and keeps its own independent vote elsewhere.

    Returns a dict: L (n, m) int64; Y (n,); acc and cov (each LF's empirical accuracy and
    coverage in L); groups (list of LF lists, leader first); edges (leader, follower) pairs;
    pairs: every planted dependent pair (i < j) of a group, shape (p, 2); class_balance.
    """
    k = int(cardinality)
    if k < 2:
        raise LoomError(f"cardinality must be >= 2, got {cardinality}")
    sizes = [int(s) for s in group_sizes]
    if any(s < 2 for s in sizes) or sum(sizes) > m:
        raise LoomError(
            f"group_sizes {sizes} must each be >= 2 and together at most m={m} LFs; "
            "raise m or plant fewer/smaller groups"
        )
    if not 0.0 <= correlation <= 1.0:
        raise LoomError(f"correlation must be in [0, 1] (the copy probability), got {correlation}")
    rng = np.random.default_rng(seed)
    p = _prior(k, class_balance)
    Y = rng.choice(k, size=n, p=p).astype(np.int64)
    acc = rng.uniform(*acc_range, size=m)
    cov = rng.uniform(*cov_range, size=m)
    L = np.full((n, m), -1, dtype=np.int64)
    for i in range(m):
        L[:, i] = _independent_votes(rng, Y, k, acc[i], cov[i])
    order = rng.permutation(m)
    groups: list[list[int]] = []
    edges: list[tuple[int, int]] = []
    start = 0
    for s in sizes:
        members = [int(j) for j in order[start : start + s]]
        start += s
        leader = members[0]
        for f in members[1:]:
            copy = rng.random(n, dtype=np.float32) < correlation
            L[copy, f] = L[copy, leader]
            edges.append((leader, f))
        groups.append(members)
    pairs = sorted(tuple(sorted(pr)) for g in groups for pr in combinations(g, 2))
    true_acc, true_cov = _truth(L, Y)
    return {
        "L": L,
        "Y": Y,
        "acc": true_acc,
        "cov": true_cov,
        "groups": groups,
        "edges": edges,
        "pairs": np.array(pairs, dtype=np.int64).reshape(-1, 2),
        "class_balance": p,
    }


def make_sparse_synthetic(
    n: int,
    m: int,
    cardinality: int = 2,
    acc_range: tuple[float, float] = (0.55, 0.95),
    cov_range: tuple[float, float] = (0.01, 0.1),
    class_balance: Sequence[float] | np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """make_synthetic's model as a scipy CSR label matrix, never n x m dense (for large n, m, k).

    Independent LFs (accuracy and coverage drawn per LF, wrong votes uniform). The matrix
    follows loom's sparse convention: a stored value is vote + 1 (1..k), abstain is not
    stored (labeling.model.sparse). Returns S (n, m) CSR, Y (n,), acc (empirical accuracy of
    each LF), cov (empirical coverage).
    """
    import scipy.sparse as sp

    k = int(cardinality)
    if k < 2:
        raise LoomError(f"cardinality must be >= 2, got {cardinality}")
    rng = np.random.default_rng(seed)
    p = _prior(k, class_balance)
    Y = rng.choice(k, size=n, p=p).astype(np.int64)
    acc = rng.uniform(*acc_range, size=m)
    cov = rng.uniform(*cov_range, size=m)
    rows, cols, vals = [], [], []
    hits = np.zeros(m)
    fired = np.zeros(m)
    for i in range(m):
        r = np.nonzero(rng.random(n, dtype=np.float32) < cov[i])[0]
        y = Y[r]
        right = rng.random(len(r), dtype=np.float32) < acc[i]
        v = np.where(right, y, (y + rng.integers(1, k, size=len(r))) % k)
        rows.append(r.astype(np.int32))
        cols.append(np.full(len(r), i, dtype=np.int32))
        vals.append((v + 1).astype(np.int16 if k < 32767 else np.int32))
        hits[i], fired[i] = (v == y).sum(), len(r)
    S = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, m)
    )
    S.sort_indices()
    return {"S": S, "Y": Y, "acc": hits / np.maximum(fired, 1), "cov": fired / n}


def make_multilabel(
    n: int,
    m: int,
    n_labels: int,
    acc_range: tuple[float, float] = (0.55, 0.95),
    cov_range: tuple[float, float] = (0.05, 0.5),
    prevalence_range: tuple[float, float] = (0.1, 0.4),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Multi-label votes with known truth: L (n, m, K) of -1/0/1, Y (n, K) of 0/1.

    Label c applies to a row with its own prevalence (drawn from prevalence_range). Each LF
    has one accuracy and one coverage for every label (drawn per LF): on each label it
    votes with probability cov, right (Y) with probability acc, else wrong (1 - Y).
    Returns L, Y, acc (each LF's empirical accuracy over all labels), cov, prevalence.
    """
    if n_labels < 1:
        raise LoomError(f"n_labels must be >= 1, got {n_labels}")
    rng = np.random.default_rng(seed)
    prev = rng.uniform(*prevalence_range, size=n_labels)
    Y = (rng.random((n, n_labels)) < prev).astype(np.int64)
    acc = rng.uniform(*acc_range, size=m)
    cov = rng.uniform(*cov_range, size=m)
    L = np.full((n, m, n_labels), -1, dtype=np.int64)
    for i in range(m):
        fires = rng.random((n, n_labels)) < cov[i]
        right = rng.random((n, n_labels)) < acc[i]
        L[:, i, :] = np.where(fires, np.where(right, Y, 1 - Y), -1)
    votes = L >= 0
    hits = ((L == Y[:, None, :]) & votes).sum((0, 2))
    return {
        "L": L,
        "Y": Y,
        "acc": hits / np.maximum(votes.sum((0, 2)), 1),
        "cov": votes.mean((0, 2)),
        "prevalence": prev,
    }
