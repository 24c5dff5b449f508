"""Two tables: `link` (the pairs), `merge` (pairs joined back to both tables), `merge_knn`.

Stages: check the tables (`checks.check_link_tables`), turn key columns into texts and
masks (`link_keys`), embed (`search.embed_keys`), search (`search.match_pairs`), join back
(`assemble`). The options travel as one `LinkConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linking.checks import (
    check_how,
    check_link_options,
    check_link_tables,
    warn_empty_keys,
)
from linking.config import LinkConfig, renamed_keyword
from linking.keys import RESERVED, block_keys, key_texts
from linking.search import embed_keys, masked_texts, match_pairs
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress


def link_keys(
    left: pd.DataFrame,
    right: pd.DataFrame,
    lcols: list[str],
    rcols: list[str],
    bcols: list[str] | None,
) -> tuple[tuple[list[str], list[str]], tuple[np.ndarray, np.ndarray], tuple, dict[str, Any]]:
    """(left, right) key texts, validity masks and blocking keys, and the report counts.

    Both sides are serialised with the left column names as field labels; a row with an
    empty key or a missing blocking value is invalid (kept, never matched).
    """
    ltexts, lempty = key_texts(left, lcols, lcols)
    rtexts, rempty = key_texts(right, rcols, lcols)
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
    return (ltexts, rtexts), (lvalid, rvalid), (lb, rb), report


def link_pairs(
    left: pd.DataFrame,
    right: pd.DataFrame,
    cfg: LinkConfig,
    on: Any = None,
    left_on: Any = None,
    right_on: Any = None,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`link` with its options as a `LinkConfig`: the pairs and a report dict."""
    lcols, rcols, bcols = check_link_tables(left, right, on, left_on, right_on, cfg.blocking_on)
    check_link_options(cfg)
    (ltexts, rtexts), (lvalid, rvalid), (lb, rb), report = link_keys(
        left, right, lcols, rcols, bcols
    )
    warn_empty_keys("left", report["left_empty_keys"], len(left))
    warn_empty_keys("right", report["right_empty_keys"], len(right))
    if vectors is None:
        lv, rv = embed_keys([masked_texts(ltexts, lvalid), masked_texts(rtexts, rvalid)], cfg)
    else:
        lv, rv = vectors
    pairs = match_pairs(lv, rv, lvalid, rvalid, cfg, lb, rb)
    report["pairs"] = len(pairs)
    report["matched_left_rows"] = int(pairs["left_row"].nunique())
    return pairs, report


def merge_tables(
    left: pd.DataFrame,
    right: pd.DataFrame,
    cfg: LinkConfig,
    on: Any = None,
    left_on: Any = None,
    right_on: Any = None,
    how: str = "left",
    suffixes: tuple[str, str] = ("_left", "_right"),
) -> pd.DataFrame:
    """`merge` with its search options as a `LinkConfig` (e.g. built once by the CLI)."""
    check_how(how)
    pairs, report = link_pairs(left, right, cfg, on, left_on, right_on)
    out = assemble(left, right, pairs, how, suffixes, with_rank=cfg.k > 1)
    out.attrs["linking"] = report
    return out


def assemble(
    left: pd.DataFrame,
    right: pd.DataFrame,
    pairs: pd.DataFrame,
    how: str = "left",
    suffixes: tuple[str, str] = ("_left", "_right"),
    with_rank: bool = False,
) -> pd.DataFrame:
    """Join pairs back to both tables: all columns of both, in left row order then rank."""
    check_how(how)
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
    one_to_one: bool = False,
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float = 0.0,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
    client: Any = None,
    *,
    one_to_one_matching: bool | None = None,
    show_progress: bool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The pairs behind `merge` (left_row, right_row, score, rank) and a report dict.

    one_to_one_matching= and show_progress= are deprecated spellings of one_to_one=, progress=.
    """
    one_to_one = renamed_keyword(
        one_to_one, "one_to_one_matching", one_to_one_matching, "one_to_one", "link"
    )
    progress = deprecated_progress(progress, "show_progress", show_progress, "link")
    cfg = LinkConfig.from_options(locals())
    return link_pairs(left, right, cfg, on, left_on, right_on, vectors)


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
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float = 0.0,
    client: Any = None,
    *,
    show_progress: bool | None = None,
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
    dates, codes and ids with typos; see docs/linking.md). progress: progress bars (None =
    on in notebooks and terminals); show_progress= is its deprecated spelling.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "merge")
    cfg = LinkConfig.from_options(locals())
    return merge_tables(left, right, cfg, on, left_on, right_on, how, suffixes)


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
