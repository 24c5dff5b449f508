"""One SQLite key-value table: the on-disk store under the embedding and completion caches.

A `KVTable` maps a text key to a row of values in one table of one SQLite file. An optional
scope column (e.g. the model name) splits one table between several owners: reads and
writes see only the rows of their scope. Reads are batched; one lock per table object
serialises its connections; each call opens and closes its own connection, so a table
object may be shared between threads and several processes may share the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Keys per SELECT (SQLite caps the number of bound parameters of one statement).
READ_BATCH = 500


class KVTable:
    """key -> row of values in `table` of the SQLite file `path` (created when missing).

    columns: the table's column definitions in order, e.g. "model TEXT, key TEXT, vec BLOB,
    PRIMARY KEY (model, key)"; the key column is named `key`. values: the value columns
    read back by `get`. scope: (column, value) when the table is shared between owners;
    the scope column must come first in the table, then the key, then the values.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        table: str,
        columns: str,
        values: Sequence[str],
        scope: tuple[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self.values = tuple(values)
        self.scope = scope
        self._lock = threading.Lock()
        with self.connect() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A locked connection, committed when the block succeeds, always closed."""
        with self._lock, contextlib.closing(sqlite3.connect(self.path, timeout=60)) as db:
            yield db
            db.commit()

    def get(self, keys: Sequence[str]) -> dict[str, tuple]:
        """{key: values} for the keys present (in this scope); missing keys are left out."""
        cols = ", ".join(("key", *self.values))
        where, fixed = (
            ("", []) if self.scope is None else (f"{self.scope[0]} = ? AND ", [self.scope[1]])
        )
        found: dict[str, tuple] = {}
        with self.connect() as db:
            for start in range(0, len(keys), READ_BATCH):
                part = list(keys[start : start + READ_BATCH])
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT {cols} FROM {self.table} WHERE {where}key IN ({marks})",
                    [*fixed, *part],
                )
                found.update((row[0], tuple(row[1:])) for row in rows)
        return found

    def put(self, items: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Insert or replace (key, values) rows."""
        fixed = () if self.scope is None else (self.scope[1],)
        rows = [(*fixed, key, *values) for key, values in items]
        if not rows:
            return
        marks = ",".join("?" * len(rows[0]))
        with self.connect() as db:
            db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES ({marks})", rows)
