"""Input checks of linking: option values and the tables handed to merge / dedup / cluster.

Every check raises `LoomError` with a message saying what to pass instead; empty keys are
reported with an `EmptyKeyWarning` (the rows are kept but never matched).
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from linking.config import AUTO, CARDINALITIES, LinkConfig
from linking.keys import RESERVED, as_columns, check_frame, check_has, resolve_on
from toolkit.errors import LoomError

HOWS = ("left", "inner")
CLUSTER_METHODS = ("connected", "agglomerative", "hdbscan")


class EmptyKeyWarning(UserWarning):
    """Some rows have an empty key: they are kept in the output but never matched."""


def check_char_weight(w: Any) -> None:
    if isinstance(w, str):
        if w == AUTO:
            return
        raise LoomError(
            f"char_weight={w!r}: use 'auto' (chosen from the data) or a number in [0, 1)"
        )
    if not isinstance(w, int | float) or isinstance(w, bool) or not 0.0 <= w < 1.0:
        raise LoomError(
            f"char_weight={w!r}: use a number in [0, 1) (share of the spelling similarity; "
            "0.5 suits records of names, dates and codes with typos)"
        )


def check_threshold(threshold: float | str | None) -> None:
    if isinstance(threshold, str):
        if threshold == AUTO:
            return
        raise LoomError(
            f"threshold={threshold!r}: use 'auto' (chosen from the candidate scores), None "
            "(every row keeps its nearest candidates) or a score between -1 and 1"
        )
    if threshold is not None and not (isinstance(threshold, int | float) and -1 <= threshold <= 1):
        raise LoomError(f"threshold={threshold!r}: give a cosine similarity between -1 and 1")


def check_k(k: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise LoomError(f"k={k!r}: give a positive integer number of matches per row")


def check_how(how: str) -> None:
    if how not in HOWS:
        raise LoomError(f"how={how!r}: use 'left' (every left row) or 'inner' (matches only)")


def check_merge_how(how: str) -> tuple[str, str | None]:
    """merge's how=: the join ("left", "inner") or a cardinality (then the join is "left");
    returns (join, cardinality or None)."""
    if how in CARDINALITIES:
        return "left", how
    if how not in HOWS:
        raise LoomError(
            f"how={how!r}: use 'left' (every left row) or 'inner' (matches only), or a "
            f"cardinality by threshold: {', '.join(map(repr, CARDINALITIES))}"
        )
    return how, None


def check_cardinality(cfg: LinkConfig) -> None:
    """cardinality and one_to_one agree, and one match per row means k=1."""
    if cfg.cardinality is not None and cfg.cardinality not in CARDINALITIES:
        raise LoomError(f"cardinality={cfg.cardinality!r}: use one of {CARDINALITIES} or None")
    if cfg.one_to_one and cfg.cardinality not in (None, "one_to_one"):
        raise LoomError(f"one_to_one=True and how={cfg.cardinality!r} disagree: pass one of them")
    if cfg.cardinality is not None and cfg.k != 1:
        raise LoomError(
            f"how={cfg.cardinality!r} keeps matches by threshold, not a fixed k: leave k=1"
        )
    budget = cfg.encoder_budget
    if not isinstance(budget, int | np.integer) or isinstance(budget, bool) or budget < 0:
        raise LoomError(f"encoder_budget={budget!r}: give a number of texts >= 0")


def check_recall_use(cfg: LinkConfig, gold: Any, vectors_given: bool = False) -> None:
    """recall= tunes the cascade's character candidates; gold= (labelled pairs) serves it."""
    if gold is not None and cfg.recall is None:
        raise LoomError(
            "gold= (labelled pairs) is used to choose the candidates for a target recall: "
            "give recall= too, e.g. recall=0.99 (to score a result, use linking.evaluate)"
        )
    if cfg.recall is not None and not cfg.uses_cascade(vectors_given):
        raise LoomError(
            f"recall={cfg.recall} tunes the cascade's character candidates, which run with "
            "threshold='auto' and char_weight='auto' (no vectors=, approximate index= or "
            "client=); on the encoder path set k (neighbours per row) yourself"
        )


def check_method(method: str) -> None:
    if method not in CLUSTER_METHODS:
        raise LoomError(f"method={method!r}: use one of {CLUSTER_METHODS}")


def check_link_options(cfg: LinkConfig) -> None:
    """k, threshold and one_to_one of a two-table link."""
    check_k(cfg.k)
    check_threshold(cfg.threshold)
    if cfg.one_to_one and cfg.k != 1:
        raise LoomError("one_to_one=True keeps one match per row: use it with k=1")


def check_link_tables(
    left: pd.DataFrame, right: pd.DataFrame, on: Any, left_on: Any, right_on: Any, blocking_on: Any
) -> tuple[list[str], list[str], list[str] | None]:
    """Key columns of each side and blocking columns, after checking both tables have them."""
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


def check_new_columns(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    """The columns an output adds must not exist in `df` yet."""
    for col in cols:
        if col in df.columns:
            raise LoomError(f"df already has a column {col!r}: rename it {what}")


def caller_stacklevel() -> int:
    """`stacklevel` for a warning raised here that points at the first frame outside the
    linking package (the user's call), however deep the stages that raise it."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe(), 0
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return max(level, 1)


def warn_empty_keys(what: str, n: int, total: int) -> None:
    if n:
        warnings.warn(
            f"{n} of {total} rows of {what} have an empty key (all key fields missing or blank): "
            "they are kept in the output but never matched",
            EmptyKeyWarning,
            stacklevel=caller_stacklevel(),
        )
