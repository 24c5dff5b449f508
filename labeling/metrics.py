"""Metrics on labels (-1 = abstain) and the filter for rows no LF labeled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.arguments import check_kwargs
from toolkit.errors import LoomError

METRICS = (
    "accuracy",
    "coverage",
    "precision",
    "recall",
    "f1",
    "f1_micro",
    "f1_macro",
    "fbeta",
    "matthews_corrcoef",
    "roc_auc",
)


def _int_labels(values: Any, what: str) -> np.ndarray:
    """Labels as a 1-D int64 array; NaN or fractional values are an error (as in Snorkel),
    never a silent mismatch."""
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values).reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b" or (
        arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all()
    ):
        return arr.astype(np.int64)
    raise LoomError(
        f"metric_score: {what} must hold integer labels (0..k-1, -1 = abstain/unknown), got "
        f"dtype {arr.dtype}{' with NaN' if arr.dtype.kind == 'f' and np.isnan(arr).any() else ''}"
        f": mark unknown labels with -1 and filter them with filter_dict={{{what!r}: [-1]}}"
    )


def metric_score(
    golds: Any,
    preds: Any,
    probs: Any = None,
    metric: str = "accuracy",
    filter_dict: Mapping[str, Sequence[int]] | None = None,
    **kwargs: Any,
) -> float:
    """One metric of preds against golds (Snorkel's metric_score).

    `filter_dict={"golds": [-1], "preds": [-1]}` drops rows whose gold/pred is in the list
    before scoring (except for "coverage", the share of preds that are not -1). kwargs:
    `pos_label=` (precision, recall, f1, fbeta) and `beta=` (fbeta); others are an error.
    """
    golds = _int_labels(golds, "golds")
    preds = _int_labels(preds, "preds")
    if len(golds) != len(preds):
        raise LoomError(f"golds ({len(golds)}) and preds ({len(preds)}) differ in length")
    if metric not in METRICS:
        raise LoomError(f"unknown metric {metric!r}: choose one of {METRICS}")
    options = {"precision": ("pos_label",), "recall": ("pos_label",), "f1": ("pos_label",)}
    options["fbeta"] = ("pos_label", "beta")
    check_kwargs(
        f"metric_score(metric={metric!r})",
        kwargs,
        options.get(metric, ()),
        {"average": "use metric='f1_micro' or metric='f1_macro' for an averaged F1"},
    )
    if metric == "coverage":
        return float((preds != -1).mean()) if len(preds) else 0.0
    keep = np.ones(len(golds), dtype=bool)
    for key, values in (filter_dict or {}).items():
        if key not in ("golds", "preds"):  # ("probs" filtered the preds before)
            raise LoomError(
                f"filter_dict keys must be 'golds' or 'preds', got {key!r} (to drop abstains, "
                "filter_dict={'preds': [-1]})"
            )
        arr = golds if key == "golds" else preds
        keep &= ~np.isin(arr, list(values))
    g, p = golds[keep], preds[keep]
    pr = None if probs is None else np.asarray(probs)[keep]
    if len(g) == 0:
        return float("nan")
    from sklearn import metrics as skm

    if metric == "accuracy":
        return float((g == p).mean())
    if metric in ("precision", "recall", "f1", "fbeta"):
        pos = kwargs.get("pos_label", 1)
        classes = np.union1d(g, p)
        if len(classes) > 2:
            raise LoomError(
                f"metric={metric!r} scores one positive class (pos_label={pos}) of a binary "
                f"task, but golds and preds hold {len(classes)} classes {classes[:6].tolist()}: "
                "use metric='f1_micro' or 'f1_macro', or drop abstains with "
                "filter_dict={'preds': [-1]}"
            )
        if metric == "precision":
            return float(skm.precision_score(g, p, pos_label=pos, zero_division=0))
        if metric == "recall":
            return float(skm.recall_score(g, p, pos_label=pos, zero_division=0))
        if metric == "f1":
            return float(skm.f1_score(g, p, pos_label=pos, zero_division=0))
        return float(
            skm.fbeta_score(g, p, beta=kwargs.get("beta", 1.0), pos_label=pos, zero_division=0)
        )
    if metric == "f1_micro":
        return float(skm.f1_score(g, p, average="micro", zero_division=0))
    if metric == "f1_macro":
        return float(skm.f1_score(g, p, average="macro", zero_division=0))
    if metric == "matthews_corrcoef":
        return float(skm.matthews_corrcoef(g, p))
    if pr is None:
        raise LoomError("roc_auc needs probs")
    if pr.ndim == 2 and pr.shape[1] == 2:
        return float(skm.roc_auc_score(g, pr[:, 1]))
    return float(skm.roc_auc_score(g, pr, multi_class="ovr"))


def filter_unlabeled_dataframe(
    X: pd.DataFrame, y: np.ndarray, L: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Drop the rows of X (and of the labels/probs y) where every LF abstained.

    L: the (n, m) label matrix (-1 = abstain), dense or scipy.sparse (vote + 1 stored)."""
    from labeling.model.sparse import check_votes, rows_without_votes

    L = check_votes(L, what="L")  # dense or scipy.sparse votes, checked
    if L.shape[0] != len(X) or len(np.asarray(y)) != len(X):
        raise LoomError(
            f"X ({len(X)} rows), y ({len(np.asarray(y))}) and L {L.shape} must have the same rows"
        )
    keep = ~rows_without_votes(L)
    return X.iloc[keep], np.asarray(y)[keep]
