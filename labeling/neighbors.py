"""Nearest neighbours in an embedding space and agreement of labels between neighbours.

Shared by the smoothers (`labeling.liger`, `labeling.embroid`): unit-row embeddings, a cosine
`toolkit.index.VectorIndex`, batched kNN search, and Cohen's kappa between vote vectors.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress


def check_embeddings(E: Any, n: int, what: str = "embeddings") -> np.ndarray:
    """Row-normalised float32 (n, d) embeddings, or a clear error (row count, NaN, zero rows)."""
    from toolkit.index import as_matrix

    if isinstance(E, pd.DataFrame):
        E = E.to_numpy()
    arr = np.asarray(E)
    if arr.ndim == 2 and arr.shape[0] != n:
        raise LoomError(
            f"{what} have {arr.shape[0]} rows but the label matrix has {n}: pass one embedding "
            "row per row of L, in the same order"
        )
    x = as_matrix(arr, what)
    norms = np.linalg.norm(x, axis=1)
    zero = np.nonzero(norms < 1e-12)[0]
    if len(zero):
        raise LoomError(
            f"{what} have {len(zero)} zero vectors (e.g. rows {zero[:5].tolist()}): cosine "
            "similarity is undefined for them; embed their text (empty texts embed to zero with "
            "some models) or drop those rows"
        )
    return x / norms[:, None]


def embeddings_digest(X: np.ndarray) -> str:
    """Content hash of an embedding matrix (shape, dtype and values in row order)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{X.shape}{X.dtype.str}".encode())
    h.update(np.ascontiguousarray(X).tobytes())
    return h.hexdigest()


def default_index_kind(n: int, device: str) -> str:
    """Exact search for small n or on a GPU; IVF on the CPU beyond 50k points."""
    return "flat" if n <= 50_000 or device.startswith("cuda") else "ivf"


def build_index(X: np.ndarray, device: str, kind: str | None = None) -> Any:
    """A cosine VectorIndex over unit rows X (ids 0..n-1)."""
    from toolkit.index import VectorIndex

    kind = kind or default_index_kind(len(X), device)
    return VectorIndex(X.shape[1], metric="cosine", kind=kind, device=device).add(X)


def neighbours(
    index: Any,
    Q: np.ndarray,
    k: int,
    exclude_self: bool,
    batch: int = 65536,
    progress: bool | None = None,
    desc: str = "kNN",
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of the k nearest indexed points per query row, in batches.

    With exclude_self, query row i is assumed to be indexed point i and is removed.
    """
    from tqdm.auto import tqdm

    n = len(Q)
    kk = k + 1 if exclude_self else k
    S = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    show = resolve_progress(progress)
    for s in tqdm(range(0, n, batch), desc=desc, disable=not show, leave=False):
        sc, ix = index.search(Q[s : s + batch], kk)
        if exclude_self:
            rows = np.arange(s, s + len(ix))[:, None]
            is_self = ix == rows
            drop = np.where(is_self.any(1), is_self.argmax(1), kk - 1)
            keep = np.ones_like(ix, dtype=bool)
            keep[np.arange(len(ix)), drop] = False
            sc, ix = sc[keep].reshape(len(ix), k), ix[keep].reshape(len(ix), k)
        S[s : s + len(ix)], ids[s : s + len(ix)] = sc, ix
    return S, ids


def agreement(a: np.ndarray, b: np.ndarray, cardinality: int) -> tuple[float, float]:
    """(observed, chance) agreement of two label vectors without abstains."""
    po = float((a == b).mean())
    pa = np.bincount(a, minlength=cardinality) / len(a)
    pb = np.bincount(b, minlength=cardinality) / len(b)
    return po, float((pa * pb).sum())


def agreement_kappa(a: np.ndarray, b: np.ndarray, cardinality: int) -> float:
    """Cohen's kappa of two vote vectors on the rows where both vote (nan if none)."""
    both = (a >= 0) & (b >= 0)
    if not both.any():
        return float("nan")
    po, pe = agreement(a[both], b[both], cardinality)
    return 1.0 if pe >= 1.0 else (po - pe) / (1.0 - pe)


def label_smoothness(L: np.ndarray, ids: np.ndarray, cardinality: int) -> dict[str, float]:
    """Do neighbours share labels? Cohen's kappa between the majority vote of each voted row
    and that of its nearest voted neighbour (ids: (n, k) neighbour ids), with its standard
    error and the number of pairs. About 0 when the embedding carries no label information;
    nan when it cannot be judged (fewer than 2 pairs, or every voted row has one label)."""
    counts = np.stack([(L == c).sum(1) for c in range(cardinality)], 1)
    top = counts.max(1)
    unique = (counts == top[:, None]).sum(1) == 1
    mv = np.where((top > 0) & unique, counts.argmax(1), ABSTAIN)
    nb = np.where(ids >= 0, mv[np.maximum(ids, 0)], ABSTAIN)
    has = nb >= 0
    ok = (mv >= 0) & has.any(1)
    a, b = mv[ok], nb[ok, has[ok].argmax(1)]
    nan = {"kappa": float("nan"), "se": float("nan"), "pairs": int(len(a))}
    if len(a) < 2:
        return nan
    po, pe = agreement(a, b, cardinality)
    if pe >= 1.0:
        return nan
    se = float(np.sqrt(po * (1.0 - po) / len(a)) / (1.0 - pe))
    return {"kappa": (po - pe) / (1.0 - pe), "se": se, "pairs": int(len(a))}
