"""Which labeling functions depend on each other beyond the class: learned from the votes alone.

Method (Varma, Sala, He, Ratner, Ré, "Learning Dependency Structures for Weak Supervision
Models", ICML 2019): if the LFs were conditionally independent given the latent class Y,
the inverse covariance of their (one-hot) votes would be block-diagonal *plus a low-rank
term* of rank k-1 that comes from marginalising Y out. Dependencies between LFs add sparse
off-diagonal blocks. We split the inverse covariance into the two parts and report the
pairs whose sparse block is large.

The split here is robust PCA with the rank known (k-1) instead of the paper's convex
nuclear-norm program: the low-rank part is fitted to the off-diagonal blocks by hard
impute, blocks that stand out are set aside as missing and the fit is repeated until the
set is stable (alternating projections, Netrapalli et al., "Non-convex Robust PCA", NIPS
2014). Each LF's block is whitened first, so `strength` is (the part the class does not
explain of) a partial canonical correlation: the largest correlation between the two LFs'
votes given all the other LFs (0 = none, about 1 = one determines the other).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.model.checks import check_L
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)

#: Default: pairs weaker than this partial canonical correlation are not reported.
MIN_STRENGTH = 0.2
#: Pairs must also stand this many standard errors above the sampling noise.
NOISE_Z = 4.0
#: Structure learning works on an (m*k) x (m*k) matrix; beyond this it refuses.
MAX_DIM = 1000
#: Largest share of one LF's partial correlations the class term may take (row norm of V).
LOADING_CAP = 0.5


def overlap_matrix(L: np.ndarray, k: int) -> np.ndarray:
    """O = A^T A / n over the one-hot votes A (n, m*k) (abstain = all zero), float64."""
    import scipy.sparse as sp

    n, m = L.shape
    rows, cols = np.nonzero(L >= 0)
    A = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols * k + L[rows, cols])), shape=(n, m * k), dtype=np.float64
    )
    return (A.T @ A).toarray() / n


def _whiten_blocks(cov: np.ndarray, m: int, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-LF whitening T (m*k, d) with T_i^T cov_ii T_i = I; drops constant directions."""
    cols = []
    slices = []
    start = 0
    for i in range(m):
        blk = cov[i * k : (i + 1) * k, i * k : (i + 1) * k]
        w, U = np.linalg.eigh(blk)
        keep = w > 1e-9 * max(float(w.max()), 1e-300) + 1e-12
        t = np.zeros((m * k, int(keep.sum())))
        t[i * k : (i + 1) * k] = U[:, keep] / np.sqrt(w[keep])
        cols.append(t)
        slices.append(np.arange(start, start + int(keep.sum())))
        start += int(keep.sum())
    return np.concatenate(cols, 1), slices


def _low_rank(P: np.ndarray, W: np.ndarray, r: int, init: np.ndarray | None) -> np.ndarray:
    """Rank-r PSD matrix V V^T fitting P where W = 1 (hard impute: fill the rest with the fit).

    Each row of V is kept at norm <= LOADING_CAP: without it one LF's loading can grow
    without bound while the others shrink (a Heywood case of factor analysis, here when the
    class explains little of the partial correlations), which inflates the residuals.
    """
    from scipy.linalg import eigh

    d = len(P)
    Lr = np.zeros_like(P) if init is None else init
    r = min(r, d)
    for _ in range(100):
        F = W * P + (1.0 - W) * Lr
        w, U = eigh(F, subset_by_index=[d - r, d - 1])
        V = U * np.sqrt(np.clip(w, 0.0, None))
        V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True) / LOADING_CAP, 1.0)
        new = V @ V.T
        done = np.abs(new - Lr).max() < 1e-4
        Lr = new
        if done:
            break
    return Lr


def dependencies_from_overlap(
    overlap: np.ndarray,
    k: int,
    n: int,
    min_strength: float = MIN_STRENGTH,
    max_rounds: int = 6,
) -> pd.DataFrame:
    """Dependent LF pairs from the one-hot overlap matrix O = A^T A / n of n rows.

    Returns a DataFrame with columns i, j (i < j), strength (partial canonical correlation,
    see the module docstring) and threshold (what it had to exceed), strongest first.
    """
    from threadpoolctl import threadpool_limits

    d = overlap.shape[0]
    m = d // k
    if d != m * k or overlap.shape != (d, d):
        raise LoomError(f"overlap must be (m*k, m*k) with k={k}, got shape {overlap.shape}")
    if d > MAX_DIM:
        raise LoomError(
            f"learning dependencies of {m} LFs with {k} classes needs a {d} x {d} inverse "
            f"covariance (at most {MAX_DIM}); pass the dependent pairs yourself "
            "(dependencies=[(i, j), ...]) or learn them on a subset of the LFs"
        )
    empty = pd.DataFrame({"i": [], "j": [], "strength": [], "threshold": []})
    with threadpool_limits(limits=1 if d <= 600 else None):
        mean = np.diag(overlap).copy()
        cov = overlap - np.outer(mean, mean)
        T, slices = _whiten_blocks(cov, m, k)
        dims = np.array([len(s) for s in slices])
        live = np.nonzero(dims > 0)[0]
        if len(live) < 3:
            return empty
        C = T.T @ cov @ T
        D = len(C)
        K = np.linalg.inv(C + 1e-3 * np.eye(D))
        norm = np.zeros((D, D))
        for s in slices:
            if len(s):
                w, U = np.linalg.eigh(K[np.ix_(s, s)])
                norm[np.ix_(s, s)] = (U / np.sqrt(np.clip(w, 1e-12, None))) @ U.T
        P = -(norm @ K @ norm)
        owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(slices)])
        off = (owner[:, None] != owner[None, :]).astype(np.float64)
        iu, ju = np.triu_indices(m, 1)
        pairs = [(a, b) for a, b in zip(iu, ju) if dims[a] and dims[b]]
        thr = {
            (a, b): max(min_strength, NOISE_Z * (np.sqrt(dims[a]) + np.sqrt(dims[b])) / np.sqrt(n))
            for a, b in pairs
        }
        W = off
        Lr = None
        flagged: set[tuple[int, int]] = set()
        strength = {}
        for _ in range(max_rounds):
            Lr = _low_rank(P, W, k - 1, Lr)
            R = P - Lr
            strength = {
                (a, b): float(np.linalg.norm(R[np.ix_(slices[a], slices[b])], 2)) for a, b in pairs
            }
            new = {pr for pr, s in strength.items() if s > thr[pr]}
            if new == flagged:
                break
            flagged = new
            W = off.copy()
            for a, b in flagged:
                W[np.ix_(slices[a], slices[b])] = 0.0
                W[np.ix_(slices[b], slices[a])] = 0.0
    if not flagged:
        return empty
    out = pd.DataFrame(
        [(a, b, strength[(a, b)], thr[(a, b)]) for a, b in sorted(flagged)],
        columns=["i", "j", "strength", "threshold"],
    )
    out[["i", "j"]] = out[["i", "j"]].astype(np.int64)
    return out.sort_values("strength", ascending=False, ignore_index=True)


def learn_dependencies(
    L: Any, cardinality: int | None = None, min_strength: float = MIN_STRENGTH
) -> pd.DataFrame:
    """Dependent LF pairs of a label matrix L (n, m; -1 = abstain), from the votes alone.

    cardinality: number of classes (default: the largest vote + 1). min_strength: the
    smallest partial canonical correlation reported (pairs must also stand NOISE_Z standard
    errors above sampling noise). Returns columns i, j, strength, threshold, strongest first.
    """
    L = check_L(L, cardinality)
    k = int(cardinality) if cardinality is not None else max(int(L.max()) + 1, 2)
    if not 0.0 < min_strength < 1.0:
        raise LoomError(f"min_strength must be in (0, 1), got {min_strength}")
    return dependencies_from_overlap(overlap_matrix(L, k), k, len(L), min_strength)


def check_pairs(pairs: Iterable[Any], m: int, names: Sequence[str] | None = None) -> list:
    """User-given dependent pairs as sorted (i, j) tuples; LF names work when `names` is given."""
    index = {str(nm): j for j, nm in enumerate(names or [])}
    out = set()
    for pr in pairs:
        items = list(pr) if isinstance(pr, (tuple, list, np.ndarray)) else [pr]
        if len(items) != 2:
            raise LoomError(f"dependencies must be pairs (i, j) of LF columns, got {pr!r}")
        ij = []
        for v in items:
            if isinstance(v, str):
                if v not in index:
                    raise LoomError(f"dependency {pr!r} names an unknown LF {v!r}")
                v = index[v]
            if not isinstance(v, (int, np.integer)) or not 0 <= int(v) < m:
                raise LoomError(
                    f"dependency {pr!r}: {v!r} is not an LF column index 0..{m - 1} (or LF name)"
                )
            ij.append(int(v))
        if ij[0] == ij[1]:
            raise LoomError(f"dependency {pr!r} pairs an LF with itself")
        out.add((min(ij), max(ij)))
    return sorted(out)


def dependency_groups(pairs: Iterable[tuple[int, int]], m: int) -> list[tuple[int, ...]]:
    """Connected components (size >= 2) of the dependency graph, each sorted, in LF order."""
    parent = list(range(m))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        parent[find(a)] = find(b)
    comps: dict[int, list[int]] = {}
    for a in range(m):
        comps.setdefault(find(a), []).append(a)
    return sorted((tuple(c) for c in comps.values() if len(c) > 1), key=lambda c: c[0])


__all__ = [
    "MIN_STRENGTH",
    "check_pairs",
    "dependencies_from_overlap",
    "dependency_groups",
    "learn_dependencies",
    "overlap_matrix",
]
