"""Factories of vectorized rule LFs: regular expressions, keywords and thresholds.

Regexes run through Arrow's RE2 kernel when it accepts the pattern; the LFs applied to one
DataFrame share its column conversions between `begin_batch()` and `end_batch()`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.lf.core import LabelingFunction, check_label
from toolkit.errors import LoomError


def text_column(df: pd.DataFrame, column: str, lf: str) -> pd.Series:
    """Column `column` as strings (missing -> "" with a warning), or an error naming the LF."""
    if column not in df.columns:
        raise LoomError(
            f"LF {lf!r} reads column {column!r}, which the data lacks; columns: {list(df.columns)}"
        )
    s = df[column]
    missing = s.isna()
    if missing.any():
        warnings.warn(
            f"column {column!r} has {int(missing.sum())} missing values: text LFs abstain on them",
            stacklevel=3,
        )
        s = s.fillna("")
    if s.dtype != object and not pd.api.types.is_string_dtype(s):
        s = s.astype(str)
    return s


_ARROW_COLUMNS: dict[tuple, Any] = {}


def begin_batch() -> None:
    """Start sharing column conversions between the LFs applied to one DataFrame."""
    _ARROW_COLUMNS.clear()
    _ARROW_COLUMNS[("active",)] = True


def end_batch() -> None:
    _ARROW_COLUMNS.clear()


def _match_re2(
    df: pd.DataFrame, column: str, lf: str, pattern: str, ignore_case: bool
) -> np.ndarray | None:
    """Regex test with Arrow's RE2 kernel (no per-row Python), or None if RE2 rejects the pattern."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    key = (id(df), column, len(df))
    arr = _ARROW_COLUMNS.get(key)
    if arr is None:
        text = text_column(df, column, lf)
        arr = pa.array(text.astype(str).tolist(), type=pa.large_string())
        if ("active",) in _ARROW_COLUMNS:
            _ARROW_COLUMNS[key] = arr
    try:
        hit = pc.match_substring_regex(arr, pattern, ignore_case=ignore_case)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return hit.to_numpy(zero_copy_only=False).astype(bool)


def regex_lf(
    name: str,
    pattern: str,
    label: int,
    column: str = "text",
    flags: int = re.IGNORECASE,
) -> LabelingFunction:
    """Votes `label` where `column` matches the regular expression `pattern`, else abstains."""
    label = check_label(label, name)
    try:
        rx = re.compile(pattern, flags)
    except re.error as e:
        raise LoomError(f"LF {name!r}: bad regular expression {pattern!r}: {e}") from e

    use_re2 = flags in (0, re.IGNORECASE)

    def f(df: pd.DataFrame) -> np.ndarray:
        nonlocal use_re2
        if use_re2:
            hit = _match_re2(df, column, name, pattern, bool(flags & re.IGNORECASE))
            if hit is not None:
                return np.where(hit, label, ABSTAIN)
            use_re2 = False  # a pattern RE2 cannot run (e.g. look-arounds): Python's re from now on
        text = text_column(df, column, name)
        with warnings.catch_warnings():  # pandas warns about match groups; we only test for a match
            warnings.filterwarnings("ignore", "This pattern is interpreted")
            hit = text.str.contains(rx, regex=True).to_numpy(dtype=bool)
        return np.where(hit, label, ABSTAIN)

    return LabelingFunction(name, f, vectorized=True)


def keyword_lf(
    name: str,
    keywords: str | Iterable[str],
    label: int,
    column: str = "text",
    case_sensitive: bool = False,
    whole_word: bool = True,
) -> LabelingFunction:
    """Votes `label` where `column` contains any of `keywords` (whole words, any case by default)."""
    words = [keywords] if isinstance(keywords, str) else list(keywords)
    if not words or not all(isinstance(w, str) and w for w in words):
        raise LoomError(f"LF {name!r}: keywords must be non-empty strings, got {keywords!r}")
    body = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = rf"\b(?:{body})\b" if whole_word else f"(?:{body})"
    return regex_lf(name, pattern, label, column, 0 if case_sensitive else re.IGNORECASE)


def threshold_lf(
    name: str,
    column: str,
    threshold: float,
    label_above: int,
    label_below: int = ABSTAIN,
    inclusive: bool = True,
) -> LabelingFunction:
    """Votes `label_above` where column >= threshold (> if not inclusive), else `label_below`.

    A callable `column` maps the DataFrame to the numbers (e.g. `lambda df: df.text.str.len()`).
    Missing values abstain.
    """
    label_above = check_label(label_above, name)
    label_below = check_label(label_below, name)
    try:
        finite = bool(np.isfinite(threshold))
    except (TypeError, ValueError):
        finite = False
    if isinstance(threshold, bool) or not finite:
        raise LoomError(
            f"LF {name!r}: threshold must be a finite number, got {threshold!r} (a NaN threshold "
            "compares false with every value: the LF would vote label_below on every row)"
        )

    def f(df: pd.DataFrame) -> np.ndarray:
        if callable(column):
            values = pd.Series(np.asarray(column(df)), index=df.index)
        elif column in df.columns:
            values = df[column]
        else:
            raise LoomError(
                f"LF {name!r} reads column {column!r}, which the data lacks; columns: {list(df.columns)}"
            )
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        above = v >= threshold if inclusive else v > threshold
        return np.where(np.isnan(v), ABSTAIN, np.where(above, label_above, label_below))

    return LabelingFunction(name, f, vectorized=True)
