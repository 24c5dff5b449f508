"""Checks of what LFs return (votes -1 or 0..k-1) and hints for the errors LFs raise.

The appliers use these for row LFs (one value per call) and vectorized LFs (one array per
batch) alike, so a bad value is reported, or recorded as an abstain with fault_tolerant, the
same way in every path.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.lf.core import Row
from toolkit.errors import LoomError


class LFError(LoomError, RuntimeError):
    """A labeling function raised (or returned a bad value) on some data point."""


def _votes_rule(cardinality: int | None) -> str:
    top = "k-1" if cardinality is None else str(cardinality - 1)
    return f"votes must be -1 (abstain) or 0..{top}"


def _vote(value: Any, cardinality: int | None) -> int | None:
    """`value` as a vote, or None when it is not one (None itself is an abstain)."""
    if value is None:
        return ABSTAIN
    try:
        v = int(value)
        ok = bool(v == value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not ok or v < ABSTAIN or (cardinality is not None and v >= cardinality):
        return None
    return v


def as_vote(value: Any, lf: str, index: Any, cardinality: int | None) -> int:
    """The vote a row LF returned, or an LFError naming the LF, the row and the value."""
    v = _vote(value, cardinality)
    if v is None:
        raise LFError(f"LF {lf!r} returned {value!r} on row {index!r}: {_votes_rule(cardinality)}")
    return v


def _aligned(values: pd.Series, index: pd.Index) -> pd.Series:
    """A Series holding the frame's row labels in another order (e.g. after a sort), put back
    in the frame's order: its votes belong to those labels, not to positions. Any other index,
    and the default 0..n-1 (a Series built from an array, or reset), is read by position, as
    an array would be."""
    default = isinstance(values.index, pd.RangeIndex) and (
        values.index.start == 0 and values.index.step == 1
    )
    same_labels = (
        not default
        and len(values) == len(index)
        and index.is_unique
        and values.index.is_unique
        and bool(values.index.isin(index).all())
    )
    return values.reindex(index) if same_labels else values


def vectorized_votes(
    values: Any, lf: str, index: pd.Index, cardinality: int | None, fault_tolerant: bool
) -> tuple[np.ndarray, int, str | None]:
    """(votes (n,) int64, number of bad values, the first problem) of a vectorized LF's output.

    Without fault_tolerant a bad value is an LFError naming the LF, the row and the value;
    with it, bad values become abstains and are counted.
    """
    n = len(index)
    if isinstance(values, pd.Series) and not values.index.equals(index):
        values = _aligned(values, index)
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
    if arr.shape != (n,):
        msg = f"vectorized LF {lf!r} returned shape {arr.shape}; it must return one vote per row ({n},)"
        if fault_tolerant:
            return np.full(n, ABSTAIN, dtype=np.int64), n, msg
        raise LFError(msg)
    kind = arr.dtype.kind
    if kind in "iub":
        votes = arr.astype(np.int64)
        bad = votes < ABSTAIN
        if cardinality is not None:
            bad |= votes >= cardinality
    elif kind == "f":
        whole = np.isfinite(arr) & (np.abs(np.nan_to_num(arr)) < 2**62)
        whole &= arr == np.round(np.nan_to_num(arr))
        votes = np.where(whole, arr, ABSTAIN).astype(np.int64)
        bad = ~whole | (votes < ABSTAIN)
        if cardinality is not None:
            bad |= votes >= cardinality
    else:  # objects, strings, ...: one value at a time, as for row LFs
        checked = [_vote(v, cardinality) for v in arr.tolist()]
        bad = np.array([v is None for v in checked], dtype=bool)
        votes = np.array([ABSTAIN if v is None else v for v in checked], dtype=np.int64)
    if not bad.any():
        return votes, 0, None
    first = int(np.argmax(bad))
    value = arr[first].item() if isinstance(arr[first], np.generic) else arr[first]
    msg = (
        f"vectorized LF {lf!r} returned {value!r} on row {index[first]!r} (position "
        f"{first}) of dtype {arr.dtype}: {_votes_rule(cardinality)}"
    )
    if not fault_tolerant:
        raise LFError(
            f"{msg}; fix the LF or apply with fault_tolerant=True to record abstains and count "
            "the faults"
        )
    votes[bad] = ABSTAIN
    return votes, int(bad.sum()), msg


def shadowed_field_hint(lf: Any, fields: Iterable[Any], row_type: str, index: Any) -> str:
    """A hint when the data has a field that `x.<field>` does not reach (e.g. `x.name`).

    On a data point (pandas Series or loom Row), `x.name` is the row's index label and
    `x.index` / `x.values` / ... are the Series' own attributes, whatever the columns are
    called. Given only when the LF's source reads such an attribute (or has no source).
    """
    kind = pd.Series if row_type == "series" else Row
    shadowed = [f for f in fields if isinstance(f, str) and f.isidentifier() and hasattr(kind, f)]
    if not shadowed:
        return ""
    # loom LFs expose `func`; Snorkel's LabelingFunction keeps the function as `_f`
    func = getattr(lf, "func", None) or getattr(lf, "_f", None) or lf
    try:
        src = inspect.getsource(func)
    except (OSError, TypeError):
        src = None
    if src is not None:
        shadowed = [f for f in shadowed if re.search(rf"\.{re.escape(f)}\b(?!\s*\()", src)]
    hints = []
    for f in shadowed:
        what = (
            f"the row's index label ({index!r}), as on a pandas Series"
            if f == "name"
            else f"an attribute of the {kind.__name__} data point"
        )
        hints.append(f"the data has a field {f!r}, but x.{f} is {what}; read the field as x[{f!r}]")
    return "; hint: " + "; ".join(hints) if hints else ""


__all__ = ["LFError", "as_vote", "shadowed_field_hint", "vectorized_votes"]
