"""One table: entity clusters (`cluster`) and classification to fixed class texts (`aggregate`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from linking.checks import (
    check_char_weight,
    check_k,
    check_method,
    check_new_columns,
    check_threshold,
)
from linking.config import AUTO, DEFAULT_DEDUP_K, DEFAULT_DEDUP_THRESHOLD, LinkConfig
from linking.duplicates import dedup_table, table_keys, table_vectors, with_clusters
from linking.groups import renumber
from linking.keys import check_frame
from linking.search import block_groups, embed_keys, masked_texts
from toolkit.errors import LoomError
from toolkit.index import VectorIndex
from toolkit.progress import deprecated_progress

MAX_BLOCK_ROWS = 50000  # agglomerative / hdbscan rows per block


def cluster_block(
    x: np.ndarray, method: str, threshold: float, k: int, min_size: int, device: str | None
) -> np.ndarray:
    """Cluster labels (-1 = noise) of the vectors of one block by `method`."""
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        if len(x) < max(min_size, 2):
            return np.full(len(x), -1)
        return HDBSCAN(min_cluster_size=max(min_size, 2), copy=True).fit_predict(x)
    from scipy.sparse import csr_matrix
    from sklearn.cluster import AgglomerativeClustering

    kk = min(k, len(x) - 1)
    vi = VectorIndex(x.shape[1], "cosine", device=device).add(x)
    _, ids = vi.search(x, kk + 1)
    rows = np.repeat(np.arange(len(x)), kk + 1)
    conn = csr_matrix((np.ones(rows.size), (rows, ids.ravel())), shape=(len(x), len(x)))
    model = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=1.0 - float(threshold),
        connectivity=conn,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when the k-NN graph is disconnected
        return model.fit_predict(x)


def check_cluster_options(method: str, threshold: Any, min_cluster_size: Any) -> None:
    """The options the k-NN graph methods need: agglomerative cuts at a numeric threshold,
    hdbscan's clusters hold at least min_cluster_size >= 2 rows."""
    if method == "agglomerative" and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool)
    ):
        raise LoomError(
            f"threshold={threshold!r}: method='agglomerative' cuts at cosine distance "
            "1 - threshold: give a number such as 0.9 (tune it with linking.tune_threshold)"
        )
    if method == "hdbscan" and (
        not isinstance(min_cluster_size, int | np.integer)
        or isinstance(min_cluster_size, bool)
        or min_cluster_size < 2
    ):
        raise LoomError(
            f"min_cluster_size={min_cluster_size!r}: give an integer >= 2 (the fewest rows of "
            "a cluster; rows outside every cluster are singletons)"
        )


def cluster_labels(
    vecs: np.ndarray,
    valid: np.ndarray,
    blocks: list[tuple] | None,
    method: str,
    cfg: LinkConfig,
    min_cluster_size: int,
) -> np.ndarray:
    """Cluster ids per row (0.. in order of first row) by `method` within each block; rows
    that are invalid or not grouped are singletons."""
    n = len(vecs)
    labels = np.arange(n, dtype=np.int64) + n  # singletons unless grouped
    groups = {(): np.flatnonzero(valid)} if blocks is None else block_groups(blocks, valid)
    next_id = 0
    for rows in groups.values():
        if len(rows) < 2:
            continue
        if len(rows) > MAX_BLOCK_ROWS:
            raise LoomError(
                f"a block has {len(rows)} rows: method={method!r} is for up to "
                f"{MAX_BLOCK_ROWS:,} rows per block; use method='connected' or add blocking_on="
            )
        sub = cluster_block(vecs[rows], method, cfg.threshold, cfg.k, min_cluster_size, cfg.device)
        labels[rows] = np.where(sub >= 0, sub + next_id, labels[rows])
        next_id += int(sub.max()) + 1 if (sub >= 0).any() else 0
    return renumber(labels)


def cluster(
    df: pd.DataFrame,
    on: str | Sequence[str],
    method: str = "connected",
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    model: Any = None,
    k: int = DEFAULT_DEDUP_K,
    blocking_on: str | Sequence[str] | None = None,
    min_cluster_size: int = 2,
    device: str | None = None,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float = 0.0,
    *,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """Group rows that refer to the same entity; a copy of `df` with `cluster_id`, `duplicate`.

    method="connected": connected components of nearest-neighbour pairs with cosine >=
    threshold (fast, any size); "agglomerative": average-linkage clustering cut at cosine
    distance 1 - threshold over the k-NN graph (up to 50k rows per block); "hdbscan":
    density clustering (threshold unused; noise rows become singletons). Empty keys and rows
    outside every block are singletons. progress: as in `dedup`.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "cluster")
    cfg = LinkConfig.from_options(locals())
    return cluster_table(df, on, cfg, method, min_cluster_size)


def cluster_table(
    df: pd.DataFrame,
    on: Any,
    cfg: LinkConfig,
    method: str = "connected",
    min_cluster_size: int = 2,
) -> pd.DataFrame:
    """`cluster` with its search options as a `LinkConfig` (e.g. built once by the CLI)."""
    check_method(method)
    if method == "connected":
        return dedup_table(df, on, cfg)
    check_threshold(cfg.threshold)
    check_k(cfg.k)
    check_char_weight(cfg.char_weight)
    if cfg.recall is not None:
        raise LoomError(
            f"recall={cfg.recall} tunes the candidates of method='connected' (dedup); "
            f"method={method!r} clusters the k-NN graph: leave recall None and set k"
        )
    check_cluster_options(method, cfg.threshold, min_cluster_size)
    if cfg.char_weight == AUTO:  # outside the cascade "auto" is the encoder cosine, as in dedup
        cfg = replace(cfg, char_weight=0.0)
    vecs, valid, blocks, report = table_vectors(df, on, cfg)
    out = with_clusters(df, cluster_labels(vecs, valid, blocks, method, cfg, min_cluster_size))
    out.attrs["linking"] = report
    return out


def aggregate(
    df: pd.DataFrame,
    classes: Sequence[str] | pd.Series,
    on: str | Sequence[str],
    model: Any = None,
    threshold: float | None = None,
    device: str | None = None,
    progress: bool | None = None,
    cache: Any = None,
    *,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """Classify each row to the nearest of a fixed list of class texts (e.g. industry names).

    Returns a copy of `df` with `class` (the class text, None when no class is close enough
    or the key is empty), `class_id` (position in `classes`, -1 = none) and `class_score`.
    progress: as in `dedup`.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "aggregate")
    check_frame(df, "df")
    if isinstance(classes, str):
        raise LoomError("classes must be a list of class texts, not one string")
    classes = [c for c in pd.Series(list(classes), dtype=object).tolist()]
    if not classes:
        raise LoomError("classes is empty: give the list of class texts to assign rows to")
    bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
    if bad:
        raise LoomError(f"classes must be non-empty strings; bad entries: {bad[:5]}")
    check_new_columns(df, ("class", "class_id", "class_score"), "first")
    check_threshold(threshold)
    if isinstance(threshold, str):
        raise LoomError(
            f"aggregate(threshold={threshold!r}): give a cosine between -1 and 1 under which a "
            "row gets no class, or None (every row its nearest class)"
        )
    cfg = LinkConfig.from_options(locals())
    texts, valid, _, report = table_keys(df, on, None)
    vecs, cvecs = embed_keys([masked_texts(texts, valid), classes], cfg)
    vi = VectorIndex(cvecs.shape[1], "cosine", device=device).add(cvecs)
    ids = np.full(len(df), -1, np.int64)
    scores = np.full(len(df), np.nan, np.float32)
    if valid.any():
        s, i = vi.search(vecs[valid], 1)
        ids[valid], scores[valid] = i[:, 0], s[:, 0]
    if threshold is not None:
        ids = np.where(scores >= threshold, ids, -1)
    out = df.copy()
    out["class"] = [classes[i] if i >= 0 else None for i in ids]
    out["class_id"] = ids
    out["class_score"] = scores
    out.attrs["linking"] = report
    return out
