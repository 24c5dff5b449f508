"""A workspace's files: a DataFrame to Parquet and back without losing anything, atomic writes.

`table_bytes` keeps what pandas' own `to_parquet` keeps (a RangeIndex's start, step and
name, non-string and MultiIndex column labels, via Arrow's pandas metadata) and turns Arrow's
conversion errors into a LoomError naming the column and the fix. `read_plan` checks the
columns and page a `load_table` asks for, so a wrong column name is reported as such, never
as a damaged file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number
from toolkit.workspace_catalog import fsync_dir

log = logging.getLogger(__name__)


def table_bytes(name: str, df: pd.DataFrame) -> bytes:
    """`df` as the bytes of a Parquet file (index and column labels as pandas writes them)."""
    dups = list(dict.fromkeys(df.columns[df.columns.duplicated()]))
    if dups:
        raise LoomError(
            f"save_table({name!r}): the DataFrame has duplicate column names {dups[:5]}, which "
            "Parquet cannot store: rename them (e.g. df.columns = [...]) or drop the copies"
        )
    clashes = sorted(s for s, n in Counter(str(c) for c in df.columns).items() if n > 1)
    if clashes:
        raise LoomError(
            f"save_table({name!r}): columns {clashes[:5]} are different labels with the same "
            "text (e.g. 0 and '0'), which Parquet stores as one name: rename them"
        )
    try:
        with warnings.catch_warnings():  # column names of mixed type: checked below
            warnings.simplefilter("ignore", UserWarning)
            table = pa.Table.from_pandas(df, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoomError(
            f"save_table({name!r}): cannot store the DataFrame as Parquet ({why}). Give each "
            "column one type: e.g. df[col] = df[col].astype(str) for a column that mixes text "
            "and numbers, or split complex numbers into real and imaginary columns"
        ) from e
    restored = table.schema.empty_table().to_pandas().columns
    if not restored.equals(df.columns):  # e.g. "row" added to a table read with header=None
        log.warning(
            "save_table(%r): the column names %s mix types, so Parquet stores them as the "
            "strings %s and they load back that way; make them all strings (df.columns = "
            "df.columns.astype(str)) to keep them as they load",
            name,
            list(df.columns)[:5],
            list(restored)[:5],
        )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _count(what: str, value: Any) -> int | None:
    if value is None:
        return None
    if not is_whole_number(value) or value < 0:
        raise LoomError(f"{what}={value!r}: give a whole number >= 0, or None")
    return int(value)


def quote(column: str) -> str:
    """`column` as an SQL identifier (quotes inside it doubled)."""
    return '"' + column.replace('"', '""') + '"'


def read_plan(
    name: str,
    path: Path,
    columns: Any,
    limit: Any,
    offset: Any,
    where: str | None,
) -> tuple[list[str] | None, str | None]:
    """(the checked column list, the SQL of a paged read or None for a whole-table read).

    Reads the file's schema to check the columns; an unreadable file raises what pyarrow does.
    """
    limit, offset = _count("limit", limit), _count("offset", offset)
    if columns is not None:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise LoomError(
                f"load_table({name!r}, columns={columns!r}): give a list of column names, "
                "e.g. columns=['text']"
            )
        columns = list(columns)
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            shown = [c for c in names if not c.startswith("__index_level_")]
            raise LoomError(f"table {name!r} has no columns {missing}; its columns are {shown}")
    if limit is None and offset is None and where is None:
        return columns, None
    cols = "*" if not columns else ", ".join(quote(c) for c in columns)
    sql = f"SELECT {cols} FROM read_parquet(?)"
    if where:
        sql += f" WHERE {where}"
    if limit is not None:
        sql += f" LIMIT {limit}"
    if offset:
        sql += f" OFFSET {offset}"
    return columns, sql


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def parse_json(value: Any, default: Any = None) -> Any:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return {} if default is None else default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return {"raw": str(value)}


def json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
