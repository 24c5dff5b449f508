"""Reading user tables with clear errors (encoding, missing columns, empty input)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from toolkit.errors import LoomError

READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl"}


def read_table(path: str | os.PathLike, columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read CSV/TSV/Parquet/JSON(L) into a DataFrame; check that `columns` exist."""
    path = Path(path)
    if not path.exists():
        raise LoomError(f"input file {path} does not exist")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise LoomError(f"cannot read {path}: use one of {', '.join(READERS)}")
    try:
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", encoding="utf-8")
        elif kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_json(path, lines=kind == "jsonl")
    except UnicodeDecodeError as e:
        raise LoomError(
            f"{path} is not UTF-8 text (byte {e.start}): re-save it as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 {path.name} > fixed.csv"
        ) from e
    except pd.errors.EmptyDataError as e:
        raise LoomError(f"{path} is empty: give a file with a header row and data") from e
    except (ValueError, pd.errors.ParserError, OSError) as e:
        raise LoomError(f"cannot parse {path}: {e}") from e
    check_columns(df, columns, str(path))
    if df.empty:
        raise LoomError(f"{path} has a header but no rows")
    return df


def check_columns(df: pd.DataFrame, columns: Sequence[str], what: str = "the table") -> None:
    """Raise a LoomError naming any of `columns` missing from `df`."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LoomError(
            f"{what} has no column(s) {missing}; its columns are {list(map(str, df.columns))}"
        )
