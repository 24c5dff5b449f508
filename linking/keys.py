"""Checking user tables and turning key columns into the texts the encoder sees."""

from __future__ import annotations

import datetime as _dt
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

RESERVED = ("left_row", "right_row", "score", "rank")


def as_columns(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    """'name' or ['name', 'city'] or 'name,city' -> a list of column names."""
    if value is None:
        return None
    if isinstance(value, str):
        cols = [c.strip() for c in value.split(",")] if "," in value else [value]
    elif is_whole_number(value):  # e.g. 0: the columns of a table read with header=None
        cols = [value]
    else:
        try:
            cols = list(value)
        except TypeError as e:
            raise LoomError(
                f"{what} must be a column name (or an integer column label) or a list of "
                f"them, got {value!r}"
            ) from e
    if not cols or any(not (isinstance(c, str) and c) and not is_whole_number(c) for c in cols):
        raise LoomError(
            f"{what} must name one or more columns (names or integer labels), got {value!r}"
        )
    if len(set(cols)) != len(cols):
        raise LoomError(f"{what} lists a column twice: {cols}")
    return cols


def check_frame(df: object, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise LoomError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    if df.columns.duplicated().any():
        dup = sorted(map(str, df.columns[df.columns.duplicated()]))
        raise LoomError(f"{what} has duplicate column names {dup}: rename them first")
    return df


def check_has(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise LoomError(
            f"{what} has no column(s) {missing}; its columns are {list(map(str, df.columns))}"
        )


def resolve_on(
    on: str | Sequence[str] | None,
    left_on: str | Sequence[str] | None,
    right_on: str | Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """Key columns of each side from `on` or from `left_on` + `right_on`."""
    on_cols = as_columns(on, "on")
    lcols, rcols = as_columns(left_on, "left_on"), as_columns(right_on, "right_on")
    if on_cols is not None:
        if lcols is not None or rcols is not None:
            raise LoomError("give either on= or left_on= and right_on=, not both")
        return on_cols, on_cols
    if lcols is None or rcols is None:
        raise LoomError("say which columns to link on: on='name' or left_on=... and right_on=...")
    if len(lcols) != len(rcols):
        raise LoomError(
            f"left_on has {len(lcols)} column(s) {lcols} but right_on has {len(rcols)} {rcols}: "
            "give the same number of key columns for both tables, in matching order"
        )
    return lcols, rcols


def _cell(value: object, column: str, row: int) -> str:
    """One key cell as text: str kept, numbers/dates/bools via str(); missing -> ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if value is pd.NaT or value is pd.NA:
        return ""
    if isinstance(value, np.datetime64 | np.timedelta64):  # as the cells of a datetime column
        if np.isnat(value):
            return ""
        return str(pd.Timestamp(value) if isinstance(value, np.datetime64) else pd.Timedelta(value))
    if isinstance(value, numbers.Number) and value != value:  # NaN of any float type
        return ""
    if isinstance(value, bool | np.bool_ | numbers.Number | _dt.date | _dt.time | pd.Timestamp):
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))  # 2000.0 read from a CSV with gaps is the number 2000
        return str(value)
    raise LoomError(
        f"key column {column!r} row {row} holds a {type(value).__name__} ({value!r:.60}); keys "
        "must be text, numbers or dates: convert the column with .astype(str) or pick another"
    )


def field_values(df: pd.DataFrame, cols: Sequence[str]) -> list[list[str]]:
    """The cells of each key column as texts ('' = missing), one list per column."""
    return [[_cell(v, c, i) for i, v in enumerate(df[c].tolist())] for c in cols]


def key_texts(
    df: pd.DataFrame, cols: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Texts to embed per row and a mask of rows whose key is empty (all fields missing).

    One column -> the value itself; several -> "name: value | city: value" with the field
    names (`labels`, default the column names) so the encoder sees which value is which.
    """
    labels = list(labels or cols)
    values = field_values(df, cols)
    n = len(df)
    if len(cols) == 1:
        texts = values[0]
    else:
        texts = [
            " | ".join(f"{lab}: {vals[i]}" for lab, vals in zip(labels, values)) for i in range(n)
        ]
    empty = np.array([all(not vals[i] for vals in values) for i in range(n)], dtype=bool)
    texts = ["" if e else t for t, e in zip(texts, empty)]
    return texts, empty


def block_keys(df: pd.DataFrame, cols: Sequence[str]) -> tuple[list[tuple], np.ndarray]:
    """Exact blocking values per row and a mask of rows with a missing blocking value."""
    vals = [[_cell(v, c, i) for i, v in enumerate(df[c].tolist())] for c in cols]
    keys = list(zip(*vals)) if vals else [() for _ in range(len(df))]
    missing = np.array([any(x == "" for x in k) for k in keys], dtype=bool)
    return keys, missing
