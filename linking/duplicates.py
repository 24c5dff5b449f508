"""One table: duplicate rows as the connected components of close nearest-neighbour pairs.

Stages: key texts and masks of the table (`table_keys`), embed (`search.embed_keys`), pairs
within the table (`search.self_pairs`), groups (`components`), output (`with_clusters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linking.checks import check_k, check_new_columns, check_threshold, warn_empty_keys
from linking.config import DEFAULT_DEDUP_K, DEFAULT_DEDUP_THRESHOLD, LinkConfig
from linking.keys import as_columns, block_keys, check_frame, check_has, key_texts
from linking.search import embed_keys, masked_texts, self_pairs
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress


def table_keys(
    df: pd.DataFrame, on: Any, blocking_on: Any
) -> tuple[list[str], np.ndarray, list[tuple] | None, dict]:
    """Key texts, validity mask, blocking keys and report counts of one table (empty keys
    and missing blocking values make a row invalid: kept, never matched, warned about)."""
    check_frame(df, "df")
    cols = as_columns(on, "on")
    if cols is None:
        raise LoomError("say which columns to compare: on='name' or on=['name', 'city']")
    check_has(df, cols, "df")
    texts, empty = key_texts(df, cols)
    valid = ~empty
    report = {"rows": len(df), "empty_keys": int(empty.sum())}
    blocks = None
    bcols = as_columns(blocking_on, "blocking_on")
    if bcols is not None:
        check_has(df, bcols, "df")
        blocks, miss = block_keys(df, bcols)
        valid &= ~miss
        report["missing_block"] = int((miss & ~empty).sum())
    warn_empty_keys("df", report["empty_keys"], len(df))
    return texts, valid, blocks, report


def table_vectors(
    df: pd.DataFrame, on: Any, cfg: LinkConfig
) -> tuple[np.ndarray, np.ndarray, list[tuple] | None, dict]:
    """`table_keys` then `embed_keys`: vectors, validity mask, blocks and report of a table."""
    texts, valid, blocks, report = table_keys(df, on, cfg.blocking_on)
    (vecs,) = embed_keys([masked_texts(texts, valid)], cfg)
    return vecs, valid, blocks, report


def renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel so cluster ids are 0, 1, ... in order of their first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def components(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Cluster ids 0.. in order of first row, from the connected components of `pairs`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = pairs["row_a"].to_numpy(np.int64), pairs["row_b"].to_numpy(np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return renumber(labels)


def with_clusters(df: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """A copy of `df` with `cluster_id` and `duplicate` (every row after its group's first)."""
    check_new_columns(df, ("cluster_id", "duplicate"), "before clustering")
    out = df.copy()
    out["cluster_id"] = labels
    out["duplicate"] = pd.Series(labels, index=out.index).duplicated().to_numpy()
    return out


def dedup(
    df: pd.DataFrame,
    on: str | Sequence[str],
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    model: Any = None,
    k: int = DEFAULT_DEDUP_K,
    blocking_on: str | Sequence[str] | None = None,
    device: str | None = None,
    index: str = "flat",
    return_pairs: bool = False,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float = 0.0,
    *,
    show_progress: bool | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Find duplicate rows: a copy of `df` (same rows, order and index) with `cluster_id`
    (rows linked by a chain of pairs with cosine >= threshold share it) and `duplicate`
    (True for every row after the first of its group: `df[~out.duplicate]` drops them).

    return_pairs=True also returns the pairs (row_a, row_b, score) behind the groups.
    char_weight: as in `merge` (scores, and so the threshold, then mix in spelling).
    progress: progress bars (None = on in notebooks and terminals; show_progress= is the
    deprecated spelling).
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "dedup")
    cfg = LinkConfig.from_options(locals())
    return dedup_table(df, on, cfg, return_pairs)


def dedup_table(
    df: pd.DataFrame, on: Any, cfg: LinkConfig, return_pairs: bool = False
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """`dedup` with its search options as a `LinkConfig` (e.g. built once by the CLI)."""
    check_threshold(cfg.threshold)
    if cfg.threshold is None:
        raise LoomError("dedup needs a threshold: e.g. threshold=0.9 (tune it with tune_threshold)")
    check_k(cfg.k)
    vecs, valid, blocks, report = table_vectors(df, on, cfg)
    pairs = self_pairs(vecs, valid, cfg, blocks)
    out = with_clusters(df, components(len(df), pairs))
    report["pairs"] = len(pairs)
    out.attrs["linking"] = report
    return (out, pairs) if return_pairs else out
