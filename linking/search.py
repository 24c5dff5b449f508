"""Embedding keys and searching candidate pairs: the retrieval stages of linking.

Embeddings come only from `toolkit.embed.get_embedder`, neighbours only from
`toolkit.index.VectorIndex`. Rows are identified by position (`left_row`, `right_row`), so
duplicate index labels are fine and the input index is never used for matching.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from linking.checks import check_char_weight
from linking.config import LinkConfig
from toolkit.embed import get_embedder
from toolkit.index import VectorIndex

CHAR_DIM = 256  # dimensions of the character n-gram space behind char_weight


def embedder(model: Any, device: str | None) -> Any:
    """An Embedder the caller already holds, else `get_embedder(model, device)`."""
    if model is not None and hasattr(model, "encode") and hasattr(model, "dim"):
        return model
    return get_embedder(model, device)


def masked_texts(texts: Sequence[str], valid: np.ndarray) -> list[str]:
    """Texts with those of invalid rows blanked (never embedded, never matched)."""
    return [t if v else "" for t, v in zip(texts, valid)]


def embed_keys(texts: Sequence[Sequence[str]], cfg: LinkConfig) -> list[np.ndarray]:
    """Embed several lists of key texts in one pass over their distinct non-empty texts.

    Empty texts get a zero vector (they are masked out before any search). cfg.cache: a
    folder or Workspace where vectors are kept, so texts seen before are not embedded again.
    cfg.char_weight w > 0 appends character n-gram LSA vectors (`toolkit.lsa`, fitted on these
    texts) so that the cosine of two keys is (1 - w) * encoder cosine + w * spelling cosine.
    """
    check_char_weight(cfg.char_weight)
    emb = embedder(cfg.model, cfg.device)
    distinct = list(dict.fromkeys(t for group in texts for t in group if t))
    vecs = emb.encode(distinct, batch_size=cfg.batch_size, progress=cfg.progress, cache=cfg.cache)
    w = cfg.char_weight
    if w > 0 and len(distinct) >= 3:
        from toolkit.lsa import lsa_vectors

        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        chars = lsa_vectors(distinct, CHAR_DIM, analyzer="char_wb")
        vecs = np.hstack([np.sqrt(1.0 - w) * vecs, np.sqrt(w) * chars])
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


def block_groups(keys: list[tuple], valid: np.ndarray) -> dict[tuple, np.ndarray]:
    """Blocking value -> positions of the valid rows that have it."""
    codes: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(valid):
        codes.setdefault(keys[i], []).append(int(i))
    return {k: np.asarray(v, dtype=np.int64) for k, v in codes.items()}


def search_pairs(
    left_vecs: np.ndarray,
    right_vecs: np.ndarray,
    left_valid: np.ndarray,
    right_valid: np.ndarray,
    cfg: LinkConfig,
    left_blocks: list[tuple] | None = None,
    right_blocks: list[tuple] | None = None,
    k: int | None = None,
) -> pd.DataFrame:
    """Candidate pairs (left_row, right_row, score, rank): the k (default cfg.k) nearest valid
    right rows of each valid left row, within its block when blocks are given, score >=
    cfg.threshold. With a dask.distributed cfg.client, each block is a task on the cluster."""
    if left_blocks is None:
        lg = {(): np.flatnonzero(left_valid)}
        rg = {(): np.flatnonzero(right_valid)}
    else:
        lg, rg = block_groups(left_blocks, left_valid), block_groups(right_blocks, right_valid)
    common = [b for b in lg if b in rg and len(lg[b]) and len(rg[b])]
    search = functools.partial(
        _search_blocks, k=cfg.k if k is None else k, threshold=cfg.threshold, device=cfg.device,
        index=cfg.index, index_params=cfg.index_params,
    )  # fmt: skip
    tasks = [(lg[b], rg[b], left_vecs[lg[b]], right_vecs[rg[b]]) for b in common]
    if cfg.client is not None and len(tasks) > 1:
        from toolkit.distributed import parallel_map

        parts = parallel_map(search, tasks, cfg.client, progress=cfg.progress)
    else:
        bar = tqdm(
            tasks, desc="link blocks", unit="block", disable=not cfg.progress or len(tasks) < 2
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


def match_pairs(
    left_vecs: np.ndarray,
    right_vecs: np.ndarray,
    left_valid: np.ndarray,
    right_valid: np.ndarray,
    cfg: LinkConfig,
    left_blocks: list[tuple] | None = None,
    right_blocks: list[tuple] | None = None,
) -> pd.DataFrame:
    """The pairs of a two-table link: `search_pairs`, then the 1:1 assignment when
    cfg.one_to_one (which searches max(k, 5) candidates per row to assign from)."""
    k = max(cfg.k, 5) if cfg.one_to_one else cfg.k
    pairs = search_pairs(
        left_vecs, right_vecs, left_valid, right_valid, cfg, left_blocks, right_blocks, k
    )
    return one_to_one(pairs) if cfg.one_to_one else pairs


def self_pairs(
    vecs: np.ndarray, valid: np.ndarray, cfg: LinkConfig, blocks: list[tuple] | None = None
) -> pd.DataFrame:
    """Unordered pairs (row_a < row_b, score) among the cfg.k nearest neighbours of each row
    in one table with score >= cfg.threshold."""
    pairs = search_pairs(vecs, vecs, valid, valid, cfg, blocks, blocks, cfg.k + 1)
    a, b = pairs["left_row"].to_numpy(), pairs["right_row"].to_numpy()
    keep = a != b
    lo, hi = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    out = pd.DataFrame({"row_a": lo, "row_b": hi, "score": pairs["score"].to_numpy()[keep]})
    out = out.sort_values("score", ascending=False, kind="stable").drop_duplicates(
        ["row_a", "row_b"]
    )
    return out.sort_values(["row_a", "row_b"]).reset_index(drop=True)
