"""Precision / recall / F1 of predicted links against gold pairs, and threshold selection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import LoomError
from toolkit.metrics import precision_recall_f1, precision_recall_f1_curve

PAIR_COLUMNS = (("left_row", "right_row"), ("row_a", "row_b"))


def _pair_columns(df: pd.DataFrame, what: str) -> tuple[str, str]:
    for a, b in PAIR_COLUMNS:
        if a in df.columns and b in df.columns:
            return a, b
    if df.shape[1] == 2:
        return df.columns[0], df.columns[1]
    raise LoomError(
        f"{what} needs columns left_row/right_row (links) or row_a/row_b (duplicate pairs); "
        f"it has {list(map(str, df.columns))}"
    )


def as_pairs(links: Any, what: str = "links", symmetric: bool = False) -> set[tuple[Any, Any]]:
    """A set of (a, b) pairs from a DataFrame, a MultiIndex or an iterable of 2-tuples.

    Rows whose right side is missing (unmatched left rows of a merge) are skipped.
    symmetric=True stores each unordered pair once as (min, max) (for dedup).
    """
    if isinstance(links, pd.MultiIndex):
        items: Iterable = links.tolist()
    elif isinstance(links, pd.DataFrame):
        a, b = _pair_columns(links, what)
        sub = links[[a, b]].dropna()
        items = zip(sub[a].tolist(), sub[b].tolist())
    else:
        try:
            items = [tuple(p) for p in links]
        except TypeError as e:
            raise LoomError(f"{what} must be a DataFrame or a list of (a, b) pairs") from e
    out = set()
    for p in items:
        if len(p) != 2:
            raise LoomError(f"{what} holds {p!r}: every pair needs exactly two ids")
        a, b = (_id(x) for x in p)
        if symmetric:
            if a == b:
                continue
            a, b = _ordered(a, b)
        out.add((a, b))
    return out


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    try:
        return (a, b) if a <= b else (b, a)
    except TypeError:
        return (a, b) if repr(a) <= repr(b) else (b, a)


def _id(v: Any) -> Any:
    return int(v) if isinstance(v, int | np.integer | float) else v


def pairs_from_clusters(labels: Sequence[Any] | pd.Series | pd.DataFrame) -> set[tuple[int, int]]:
    """All unordered (row_a, row_b) pairs of rows that share a cluster id (row = position)."""
    if isinstance(labels, pd.DataFrame):
        if "cluster_id" not in labels.columns:
            raise LoomError("the table has no cluster_id column: pass dedup()/cluster() output")
        labels = labels["cluster_id"]
    lab = np.asarray(list(labels))
    out: set[tuple[int, int]] = set()
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]
    starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
    ends = np.r_[starts[1:], len(lab)]
    for s, e in zip(starts, ends):
        members = np.sort(order[s:e])
        if len(members) > 1:
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    out.add((int(members[i]), int(members[j])))
    return out


def evaluate(links: Any, gold: Any, symmetric: bool | None = None) -> dict[str, float]:
    """Precision, recall and F1 of predicted pairs against gold pairs.

    links/gold: merge() output (left_row, right_row), dedup pairs (row_a, row_b), dedup()/
    cluster() output (cluster_id: all pairs inside a group), or lists of (a, b) tuples.
    symmetric: treat (a, b) and (b, a) as one pair; default True for row_a/row_b and clusters.
    """
    if isinstance(links, pd.DataFrame) and "cluster_id" in links.columns:
        pred = pairs_from_clusters(links)
        symmetric = True if symmetric is None else symmetric
    else:
        if symmetric is None:
            symmetric = isinstance(links, pd.DataFrame) and "row_a" in links.columns
        pred = as_pairs(links, "links", symmetric)
    if isinstance(gold, pd.DataFrame) and "cluster_id" in gold.columns:
        true = pairs_from_clusters(gold)
    else:
        true = as_pairs(gold, "gold", symmetric)
    tp = len(pred & true)
    precision, recall, f1 = precision_recall_f1(tp, len(pred), len(true))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": len(pred) - tp,
        "fn": len(true) - tp,
    }


def tune_threshold(
    links: pd.DataFrame,
    gold: Any,
    metric: str = "f1",
    symmetric: bool | None = None,
) -> tuple[float, dict[str, float]]:
    """The score threshold that maximises `metric` (f1, precision or recall) on a dev set.

    links: candidate pairs with a `score` column (e.g. merge(..., threshold=None) or dedup
    pairs with a low threshold); every distinct score is tried. Returns (threshold, metrics).
    """
    if metric not in ("f1", "precision", "recall"):
        raise LoomError(f"metric={metric!r}: use 'f1', 'precision' or 'recall'")
    if not isinstance(links, pd.DataFrame) or "score" not in links.columns:
        raise LoomError("tune_threshold needs candidate pairs with a score column (merge output)")
    a, b = _pair_columns(links, "links")
    cand = links[[a, b, "score"]].dropna()
    if cand.empty:
        raise LoomError("links holds no scored pairs: run merge/dedup with threshold=None first")
    if symmetric is None:
        symmetric = a == "row_a"
    true = as_pairs(gold, "gold", symmetric)
    if not true:
        raise LoomError(
            "gold holds no pairs: a threshold is tuned on labelled matches, so give the "
            "matching pairs of the dev set (left_row/right_row or row_a/row_b positions)"
        )
    pairs = [
        _ordered(_id(x), _id(y)) if symmetric else (_id(x), _id(y))
        for x, y in zip(cand[a].tolist(), cand[b].tolist())
    ]
    frame = pd.DataFrame({"pair": pairs, "score": cand["score"].to_numpy(np.float64)})
    frame = frame.sort_values("score", ascending=False).drop_duplicates("pair")
    hit = frame["pair"].map(lambda p: p in true).to_numpy()
    tp = np.cumsum(hit)
    n = np.arange(1, len(frame) + 1)
    scores = frame["score"].to_numpy()
    # only cut between distinct scores: the last position of each score value
    last = np.r_[scores[1:] != scores[:-1], True]
    precision, recall, f1 = precision_recall_f1_curve(tp, n, len(true))
    target = {"f1": f1, "precision": precision, "recall": recall}[metric]
    target = np.where(last, target, -np.inf)
    best = int(np.argmax(target))
    t = float(scores[best])
    return t, {
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "tp": int(tp[best]),
        "fp": int(n[best] - tp[best]),
        "fn": int(len(true) - tp[best]),
    }
