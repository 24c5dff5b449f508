"""Partitions of an embedding space: spherical (cosine) k-means on unit rows."""

from __future__ import annotations

import numpy as np

from toolkit.errors import LoomError


def spherical_kmeans(
    X: np.ndarray, n_clusters: int, seed: int = 0, n_iter: int = 25, sample: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means on unit rows: (centroids (c, d), assignment (n,)); k-means++ start."""
    rng = np.random.default_rng(seed)
    n = len(X)
    if n_clusters < 1 or n_clusters > n:
        raise LoomError(f"n_partitions={n_clusters} must be between 1 and the number of rows {n}")
    T = X[rng.choice(n, sample, replace=False)] if n > sample else X
    C = np.empty((n_clusters, X.shape[1]), np.float32)
    C[0] = T[rng.integers(len(T))]
    best = T @ C[0]
    for c in range(1, n_clusters):
        d = np.clip(1.0 - best, 0, None) ** 2
        p = d / d.sum() if d.sum() > 0 else None
        C[c] = T[rng.choice(len(T), p=p)]
        best = np.maximum(best, T @ C[c])
    for _ in range(n_iter):
        a = (T @ C.T).argmax(1)
        new = np.zeros_like(C)
        for c in range(n_clusters):  # np.add.at is far slower for few clusters
            members = a == c
            if members.any():
                new[c] = T[members].sum(0)
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norms[:, 0] < 1e-12
        new = np.where(empty[:, None], C, new / np.maximum(norms, 1e-12))
        if np.allclose(new, C, atol=1e-6):
            C = new
            break
        C = new.astype(np.float32)
    return C, assign_partitions(X, C)


def assign_partitions(X: np.ndarray, C: np.ndarray, batch: int = 262_144) -> np.ndarray:
    """Nearest centroid (cosine) of every unit row."""
    out = np.empty(len(X), np.int64)
    for s in range(0, len(X), batch):
        out[s : s + batch] = (X[s : s + batch] @ C.T).argmax(1)
    return out
