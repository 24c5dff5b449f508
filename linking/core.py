"""Record linkage as retrieval: embed key fields, search nearest neighbours, keep close pairs.

Embeddings come only from `toolkit.embed.get_embedder`, neighbours only from
`toolkit.index.VectorIndex`. Rows are identified by position (`left_row`, `right_row`,
`row`), so duplicate index labels are fine and the input index is never used for matching.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from linking.keys import (
    RESERVED,
    as_columns,
    block_keys,
    check_frame,
    check_has,
    key_texts,
    resolve_on,
)
from toolkit.embed import get_embedder
from toolkit.errors import LoomError
from toolkit.index import VectorIndex

HOWS = ("left", "inner")
CLUSTER_METHODS = ("connected", "agglomerative", "hdbscan")
DEFAULT_LINK_THRESHOLD = None
DEFAULT_DEDUP_THRESHOLD = 0.9


class EmptyKeyWarning(UserWarning):
    """Some rows have an empty key: they are kept in the output but never matched."""


CHAR_DIM = 256  # dimensions of the character n-gram space behind char_weight


def _check_char_weight(w: Any) -> None:
    if not isinstance(w, int | float) or isinstance(w, bool) or not 0.0 <= w < 1.0:
        raise LoomError(
            f"char_weight={w!r}: use a number in [0, 1) (share of the spelling similarity; "
            "0.5 suits records of names, dates and codes with typos)"
        )


def _embedder(model: Any, device: str | None) -> Any:
    if model is not None and hasattr(model, "encode") and hasattr(model, "dim"):
        return model  # an Embedder the caller already holds
    return get_embedder(model, device)


def embed_keys(
    texts: Sequence[Sequence[str]],
    model: Any = None,
    device: str | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    cache: Any = None,
    char_weight: float = 0.0,
) -> list[np.ndarray]:
    """Embed several lists of key texts in one pass over their distinct non-empty texts.

    Empty texts get a zero vector (they are masked out before any search). cache: a folder
    or Workspace where vectors are kept, so texts seen before are not embedded again.
    char_weight w > 0 appends character n-gram LSA vectors (`toolkit.lsa`, fitted on these
    texts) so that the cosine of two keys is (1 - w) * encoder cosine + w * spelling cosine.
    """
    _check_char_weight(char_weight)
    emb = _embedder(model, device)
    distinct = list(dict.fromkeys(t for group in texts for t in group if t))
    vecs = emb.encode(distinct, batch_size=batch_size, show_progress=show_progress, cache=cache)
    if char_weight > 0 and len(distinct) >= 3:
        from toolkit.lsa import lsa_vectors

        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        chars = lsa_vectors(distinct, CHAR_DIM, analyzer="char_wb")
        vecs = np.hstack([np.sqrt(1.0 - char_weight) * vecs, np.sqrt(char_weight) * chars])
    pos = {t: i for i, t in enumerate(distinct)}
    out = []
    for group in texts:
        arr = np.zeros((len(group), vecs.shape[1] if len(distinct) else emb.dim), np.float32)
        idx = [(i, pos[t]) for i, t in enumerate(group) if t]
        if idx:
            rows, src = map(np.asarray, zip(*idx))
            arr[rows] = vecs[src]
        out.append(arr)
    return out


def _groups(keys: list[tuple], valid: np.ndarray) -> dict[tuple, np.ndarray]:
    codes: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(valid):
        codes.setdefault(keys[i], []).append(int(i))
    return {k: np.asarray(v, dtype=np.int64) for k, v in codes.items()}


def search_pairs(
    left_vecs: np.ndarray,
    right_vecs: np.ndarray,
    left_valid: np.ndarray,
    right_valid: np.ndarray,
    k: int = 1,
    threshold: float | None = None,
    left_blocks: list[tuple] | None = None,
    right_blocks: list[tuple] | None = None,
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    show_progress: bool = False,
    client: Any = None,
) -> pd.DataFrame:
    """Candidate pairs (left_row, right_row, score, rank): the k nearest valid right rows of
    each valid left row, within its block when blocks are given, score >= threshold.
    With a dask.distributed `client`, each block is searched as a task on the cluster."""
    if left_blocks is None:
        lg = {(): np.flatnonzero(left_valid)}
        rg = {(): np.flatnonzero(right_valid)}
    else:
        lg, rg = _groups(left_blocks, left_valid), _groups(right_blocks, right_valid)
    common = [b for b in lg if b in rg and len(lg[b]) and len(rg[b])]
    search = functools.partial(
        _search_blocks, k=k, threshold=threshold, device=device, index=index,
        index_params=index_params,
    )  # fmt: skip
    tasks = [(lg[b], rg[b], left_vecs[lg[b]], right_vecs[rg[b]]) for b in common]
    if client is not None and len(tasks) > 1:
        from toolkit.distributed import parallel_map

        parts = parallel_map(search, tasks, client, progress=show_progress)
    else:
        bar = tqdm(
            tasks, desc="link blocks", unit="block", disable=not show_progress or len(tasks) < 2
        )
        parts = [search([task])[0] for task in bar]
    if not parts:
        return pd.DataFrame(
            {
                "left_row": np.zeros(0, np.int64),
                "right_row": np.zeros(0, np.int64),
                "score": np.zeros(0, np.float32),
                "rank": np.zeros(0, np.int64),
            }
        )
    pairs = pd.concat(parts, ignore_index=True)
    return pairs.sort_values(["left_row", "rank"], kind="stable").reset_index(drop=True)


def _search_blocks(
    tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    k: int,
    threshold: float | None,
    device: str | None,
    index: str,
    index_params: dict | None,
) -> list[pd.DataFrame]:
    """Search each (left rows, right rows, left vectors, right vectors) block; one frame each."""
    out = []
    for lrows, rrows, lvecs, rvecs in tasks:
        kind = index if len(rrows) > 1000 else "flat"
        params = (index_params or {}) if kind != "flat" else {}
        vi = VectorIndex(lvecs.shape[1], "cosine", kind, device=device, **params)
        vi.add(rvecs, ids=rrows)
        kk = min(k, len(rrows))
        scores, ids = vi.search(lvecs, kk)
        ranks = np.broadcast_to(np.arange(1, kk + 1), ids.shape)
        keep = ids >= 0
        if threshold is not None:
            keep &= scores >= threshold
        out.append(
            pd.DataFrame(
                {
                    "left_row": np.broadcast_to(lrows[:, None], ids.shape)[keep],
                    "right_row": ids[keep],
                    "score": scores[keep].astype(np.float32),
                    "rank": ranks[keep],
                }
            )
        )
    return out


def one_to_one(pairs: pd.DataFrame) -> pd.DataFrame:
    """Greedy 1:1 assignment: best-scoring pairs first, each left and right row used once."""
    order = pairs.sort_values("score", ascending=False, kind="stable")
    used_l: set[int] = set()
    used_r: set[int] = set()
    keep = []
    for i, lr, rr in zip(order.index, order["left_row"].to_numpy(), order["right_row"].to_numpy()):
        if lr in used_l or rr in used_r:
            continue
        used_l.add(lr)
        used_r.add(rr)
        keep.append(i)
    out = pairs.loc[sorted(keep)].copy()
    out["rank"] = 1
    return out.reset_index(drop=True)


def _report_empty(what: str, n: int, total: int) -> None:
    if n:
        warnings.warn(
            f"{n} of {total} rows of {what} have an empty key (all key fields missing or blank): "
            "they are kept in the output but never matched",
            EmptyKeyWarning,
            stacklevel=3,
        )


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (isinstance(threshold, int | float) and -1 <= threshold <= 1):
        raise LoomError(f"threshold={threshold!r}: give a cosine similarity between -1 and 1")


def _check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise LoomError(f"k={k!r}: give a positive integer number of matches per row")


def _prepare_link(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: Any,
    left_on: Any,
    right_on: Any,
    blocking_on: Any,
) -> tuple[list[str], list[str], list[str] | None]:
    check_frame(left, "left")
    check_frame(right, "right")
    for what, df in (("left", left), ("right", right)):
        clash = [c for c in RESERVED if c in df.columns]
        if clash:
            raise LoomError(f"{what} has column(s) {clash} that the output uses: rename them first")
    lcols, rcols = resolve_on(on, left_on, right_on)
    check_has(left, lcols, "left")
    check_has(right, rcols, "right")
    bcols = as_columns(blocking_on, "blocking_on")
    if bcols is not None:
        check_has(left, bcols, "left")
        check_has(right, bcols, "right")
    return lcols, rcols, bcols


def assemble(
    left: pd.DataFrame,
    right: pd.DataFrame,
    pairs: pd.DataFrame,
    how: str = "left",
    suffixes: tuple[str, str] = ("_left", "_right"),
    with_rank: bool = False,
) -> pd.DataFrame:
    """Join pairs back to both tables: all columns of both, in left row order then rank."""
    if how not in HOWS:
        raise LoomError(f"how={how!r}: use 'left' (every left row) or 'inner' (matches only)")
    if len(suffixes) != 2 or suffixes[0] == suffixes[1]:
        raise LoomError(f"suffixes={suffixes!r}: give two different strings")
    L = left.reset_index(drop=True)
    R = right.reset_index(drop=True)
    common = set(L.columns) & set(R.columns)
    L = L.rename(columns={c: f"{c}{suffixes[0]}" for c in common})
    R = R.rename(columns={c: f"{c}{suffixes[1]}" for c in common})
    names = list(L.columns) + list(R.columns)
    clash = [c for c in names if c in RESERVED]
    if len(set(names)) != len(names) or clash:
        raise LoomError(
            f"output columns would collide ({clash or 'after adding suffixes'}): rename these "
            f"columns or pass other suffixes= (now {suffixes})"
        )
    if how == "left":
        matched = np.zeros(len(L), dtype=bool)
        matched[pairs["left_row"].to_numpy()] = True
        missing = np.flatnonzero(~matched)
        extra = pd.DataFrame(
            {
                "left_row": missing,
                "right_row": np.full(len(missing), -1),
                "score": np.full(len(missing), np.nan, np.float32),
                "rank": np.zeros(len(missing), np.int64),
            }
        )
        pairs = pd.concat([pairs, extra], ignore_index=True) if len(missing) else pairs
        pairs = pairs.sort_values(["left_row", "rank"], kind="stable").reset_index(drop=True)
    lr = pairs["left_row"].to_numpy(np.int64)
    rr = pairs["right_row"].to_numpy(np.int64)
    lpart = L.take(lr).reset_index(drop=True)
    rpart = R.reindex(rr).reset_index(drop=True)  # -1 -> a row of NaN
    out = pd.concat([lpart, rpart], axis=1)
    out["score"] = pairs["score"].to_numpy(np.float32)
    out["left_row"] = lr
    out["right_row"] = pd.array(np.where(rr >= 0, rr, 0), dtype="Int64")
    out.loc[rr < 0, "right_row"] = pd.NA
    if with_rank:
        out["rank"] = pd.array(np.where(rr >= 0, pairs["rank"].to_numpy(), 0), dtype="Int64")
        out.loc[rr < 0, "rank"] = pd.NA
    return out


def link(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    model: Any = None,
    k: int = 1,
    threshold: float | None = None,
    blocking_on: str | Sequence[str] | None = None,
    one_to_one_matching: bool = False,
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    cache: Any = None,
    char_weight: float = 0.0,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
    client: Any = None,
) -> tuple[pd.DataFrame, dict]:
    """The pairs behind `merge` (left_row, right_row, score, rank) and a report dict."""
    lcols, rcols, bcols = _prepare_link(left, right, on, left_on, right_on, blocking_on)
    _check_k(k)
    _check_threshold(threshold)
    if one_to_one_matching and k != 1:
        raise LoomError("one_to_one=True keeps one match per row: use it with k=1")
    labels = lcols  # both sides serialised with the same field names
    ltexts, lempty = key_texts(left, lcols, labels)
    rtexts, rempty = key_texts(right, rcols, labels)
    lvalid, rvalid = ~lempty, ~rempty
    report: dict[str, Any] = {
        "left_rows": len(left),
        "right_rows": len(right),
        "left_empty_keys": int(lempty.sum()),
        "right_empty_keys": int(rempty.sum()),
    }
    lb = rb = None
    if bcols is not None:
        lb, lmiss = block_keys(left, bcols)
        rb, rmiss = block_keys(right, bcols)
        lvalid &= ~lmiss
        rvalid &= ~rmiss
        report["left_missing_block"] = int((lmiss & ~lempty).sum())
        report["right_missing_block"] = int((rmiss & ~rempty).sum())
    _report_empty("left", report["left_empty_keys"], len(left))
    _report_empty("right", report["right_empty_keys"], len(right))
    if vectors is None:
        lv, rv = embed_keys(
            [
                [t if v else "" for t, v in zip(ltexts, lvalid)],
                [t if v else "" for t, v in zip(rtexts, rvalid)],
            ],
            model,
            device,
            batch_size,
            show_progress,
            cache,
            char_weight,
        )
    else:
        lv, rv = vectors
    kk = max(k, 5) if one_to_one_matching else k
    pairs = search_pairs(
        lv,
        rv,
        lvalid,
        rvalid,
        kk,
        threshold,
        lb,
        rb,
        device,
        index,
        index_params,
        show_progress,
        client,
    )
    if one_to_one_matching:
        pairs = one_to_one(pairs)
    report["pairs"] = len(pairs)
    report["matched_left_rows"] = int(pairs["left_row"].nunique())
    return pairs, report


def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    model: Any = None,
    k: int = 1,
    threshold: float | None = None,
    blocking_on: str | Sequence[str] | None = None,
    how: str = "left",
    one_to_one: bool = False,
    suffixes: tuple[str, str] = ("_left", "_right"),
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
    cache: Any = None,
    char_weight: float = 0.0,
    client: Any = None,
) -> pd.DataFrame:
    """Link two tables on noisy key fields by nearest neighbours in embedding space.

    Returns every column of both tables (shared names get `suffixes`) plus `score` (cosine),
    `left_row` and `right_row` (row positions), ordered by left row; `k>1` adds `rank` and
    up to k rows per left row. how="left" keeps left rows without a match (NaN right side);
    how="inner" keeps matches only. Rows whose key is empty are never matched (a warning
    says how many); `blocking_on` only pairs rows that agree exactly on those columns, and
    with a dask.distributed `client` each block is searched as a task on the cluster.
    char_weight w in [0, 1) mixes in spelling: score = (1 - w) * encoder cosine + w * cosine
    of character n-gram vectors fitted on both tables' keys (0.5 suits records of names,
    dates, codes and ids with typos; see docs/linking.md).
    """
    if how not in HOWS:
        raise LoomError(f"how={how!r}: use 'left' (every left row) or 'inner' (matches only)")
    pairs, report = link(
        left,
        right,
        on,
        left_on,
        right_on,
        model,
        k,
        threshold,
        blocking_on,
        one_to_one,
        device,
        index,
        index_params,
        batch_size,
        show_progress,
        cache=cache,
        char_weight=char_weight,
        client=client,
    )
    out = assemble(left, right, pairs, how, suffixes, with_rank=k > 1)
    out.attrs["linking"] = report
    return out


def merge_knn(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    k: int = 5,
    threshold: float | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The k nearest right rows of every left row (candidate lists), with `rank` 1..k."""
    kwargs.setdefault("how", "inner")
    return merge(left, right, on=on, k=k, threshold=threshold, **kwargs)


# -- one table: duplicates and clusters ---------------------------------------------------


def _one_table(
    df: pd.DataFrame, on: Any, blocking_on: Any
) -> tuple[list[str], np.ndarray, list[tuple] | None, dict]:
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
    _report_empty("df", report["empty_keys"], len(df))
    return texts, valid, blocks, report


def self_pairs(
    vecs: np.ndarray,
    valid: np.ndarray,
    threshold: float,
    k: int = 10,
    blocks: list[tuple] | None = None,
    device: str | None = None,
    index: str = "flat",
    show_progress: bool = False,
    cache: Any = None,
) -> pd.DataFrame:
    """Unordered pairs (row_a < row_b, score) among the k nearest neighbours above threshold."""
    pairs = search_pairs(
        vecs,
        vecs,
        valid,
        valid,
        k + 1,
        threshold,
        blocks,
        blocks,
        device,
        index,
        None,
        show_progress,
    )
    a, b = pairs["left_row"].to_numpy(), pairs["right_row"].to_numpy()
    keep = a != b
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    out = pd.DataFrame({"row_a": lo, "row_b": hi, "score": pairs["score"].to_numpy()[keep]})
    out = out.sort_values("score", ascending=False, kind="stable").drop_duplicates(
        ["row_a", "row_b"]
    )
    return out.sort_values(["row_a", "row_b"]).reset_index(drop=True)


def components(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Cluster ids 0.. in order of first row, from the connected components of `pairs`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = pairs["row_a"].to_numpy(np.int64), pairs["row_b"].to_numpy(np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return _renumber(labels)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel so cluster ids are 0, 1, ... in order of their first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def _with_clusters(df: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    for col in ("cluster_id", "duplicate"):
        if col in df.columns:
            raise LoomError(f"df already has a column {col!r}: rename it before clustering")
    out = df.copy()
    out["cluster_id"] = labels
    out["duplicate"] = pd.Series(labels, index=out.index).duplicated().to_numpy()
    return out


def dedup(
    df: pd.DataFrame,
    on: str | Sequence[str],
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    model: Any = None,
    k: int = 10,
    blocking_on: str | Sequence[str] | None = None,
    device: str | None = None,
    index: str = "flat",
    return_pairs: bool = False,
    show_progress: bool = False,
    cache: Any = None,
    char_weight: float = 0.0,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Find duplicate rows: a copy of `df` (same rows, order and index) with `cluster_id`
    (rows linked by a chain of pairs with cosine >= threshold share it) and `duplicate`
    (True for every row after the first of its group: `df[~out.duplicate]` drops them).

    return_pairs=True also returns the pairs (row_a, row_b, score) behind the groups.
    char_weight: as in `merge` (scores, and so the threshold, then mix in spelling).
    """
    _check_threshold(threshold)
    if threshold is None:
        raise LoomError("dedup needs a threshold: e.g. threshold=0.9 (tune it with tune_threshold)")
    _check_k(k)
    texts, valid, blocks, report = _one_table(df, on, blocking_on)
    (vecs,) = embed_keys(
        [[t if v else "" for t, v in zip(texts, valid)]],
        model,
        device,
        show_progress=show_progress,
        cache=cache,
        char_weight=char_weight,
    )
    pairs = self_pairs(vecs, valid, threshold, k, blocks, device, index, show_progress)
    out = _with_clusters(df, components(len(df), pairs))
    report["pairs"] = len(pairs)
    out.attrs["linking"] = report
    return (out, pairs) if return_pairs else out


def cluster(
    df: pd.DataFrame,
    on: str | Sequence[str],
    method: str = "connected",
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    model: Any = None,
    k: int = 10,
    blocking_on: str | Sequence[str] | None = None,
    min_cluster_size: int = 2,
    device: str | None = None,
    show_progress: bool = False,
    cache: Any = None,
    char_weight: float = 0.0,
) -> pd.DataFrame:
    """Group rows that refer to the same entity; a copy of `df` with `cluster_id`, `duplicate`.

    method="connected": connected components of nearest-neighbour pairs with cosine >=
    threshold (fast, any size); "agglomerative": average-linkage clustering cut at cosine
    distance 1 - threshold over the k-NN graph (up to 50k rows per block); "hdbscan":
    density clustering (threshold unused; noise rows become singletons). Empty keys and rows
    outside every block are singletons.
    """
    if method not in CLUSTER_METHODS:
        raise LoomError(f"method={method!r}: use one of {CLUSTER_METHODS}")
    if method == "connected":
        return dedup(
            df,
            on,
            threshold,
            model,
            k,
            blocking_on,
            device,
            show_progress=show_progress,
            cache=cache,
            char_weight=char_weight,
        )
    _check_threshold(threshold)
    _check_k(k)
    texts, valid, blocks, report = _one_table(df, on, blocking_on)
    (vecs,) = embed_keys(
        [[t if v else "" for t, v in zip(texts, valid)]],
        model,
        device,
        show_progress=show_progress,
        cache=cache,
        char_weight=char_weight,
    )
    labels = np.arange(len(df), dtype=np.int64) + len(df)  # singletons unless grouped
    groups = {(): np.flatnonzero(valid)} if blocks is None else _groups(blocks, valid)
    next_id = 0
    for rows in groups.values():
        if len(rows) < 2:
            continue
        if len(rows) > 50000:
            raise LoomError(
                f"a block has {len(rows)} rows: method={method!r} is for up to 50,000 rows per "
                "block; use method='connected' or add blocking_on="
            )
        sub = _cluster_block(vecs[rows], method, threshold, k, min_cluster_size, device)
        labels[rows] = np.where(sub >= 0, sub + next_id, labels[rows])
        next_id += int(sub.max()) + 1 if (sub >= 0).any() else 0
    out = _with_clusters(df, _renumber(labels))
    out.attrs["linking"] = report
    return out


def _cluster_block(
    x: np.ndarray, method: str, threshold: float, k: int, min_size: int, device: str | None
) -> np.ndarray:
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


def aggregate(
    df: pd.DataFrame,
    classes: Sequence[str] | pd.Series,
    on: str | Sequence[str],
    model: Any = None,
    threshold: float | None = None,
    device: str | None = None,
    show_progress: bool = False,
    cache: Any = None,
) -> pd.DataFrame:
    """Classify each row to the nearest of a fixed list of class texts (e.g. industry names).

    Returns a copy of `df` with `class` (the class text, None when no class is close enough
    or the key is empty), `class_id` (position in `classes`, -1 = none) and `class_score`.
    """
    check_frame(df, "df")
    if isinstance(classes, str):
        raise LoomError("classes must be a list of class texts, not one string")
    classes = [c for c in pd.Series(list(classes), dtype=object).tolist()]
    if not classes:
        raise LoomError("classes is empty: give the list of class texts to assign rows to")
    bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
    if bad:
        raise LoomError(f"classes must be non-empty strings; bad entries: {bad[:5]}")
    for col in ("class", "class_id", "class_score"):
        if col in df.columns:
            raise LoomError(f"df already has a column {col!r}: rename it first")
    _check_threshold(threshold)
    texts, valid, _, report = _one_table(df, on, None)
    vecs, cvecs = embed_keys(
        [[t if v else "" for t, v in zip(texts, valid)], classes],
        model,
        device,
        show_progress=show_progress,
        cache=cache,
    )
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
