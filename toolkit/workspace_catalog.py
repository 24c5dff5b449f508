"""The workspace catalog (`catalog.duckdb`): one inter-process lock, retried opens, schema.

DuckDB lets one process at a time open a database file for writing, so every catalog open, for
reading or writing, goes through `CatalogLock` (a `filelock` lock file beside the catalog, held
only while the connection is open: milliseconds). A process that does not take the lock (an
older loom, the duckdb shell) still makes DuckDB's own lock fail; that is retried with backoff
until `timeout`. Catalogs of an older layout are migrated in place; a newer one is refused.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import filelock

from toolkit.errors import LoomError

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.duckdb"
LOCK_NAME = "catalog.lock"
#: Layout of the catalog's own tables (not of the result tables: see workspace.SCHEMA_VERSION).
#: 1: runs + tables; 2: + meta (catalog_version). Older layouts are migrated when opened.
CATALOG_VERSION = 2
#: Seconds a catalog open waits for other processes before it gives up with a LoomError.
DEFAULT_TIMEOUT = 120.0

RUNS_COLUMNS = (
    ("run_id", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("created", "TIMESTAMP"),
    ("finished", "TIMESTAMP"),
    ("status", "VARCHAR"),
    ("params", "VARCHAR"),
    ("summary", "VARCHAR"),
    ("schema_version", "INTEGER"),
)
TABLES_COLUMNS = (
    ("run_id", "VARCHAR"),
    ("name", "VARCHAR"),
    ("path", "VARCHAR"),
    ("rows", "BIGINT"),
    ("columns", "VARCHAR"),
    ("created", "TIMESTAMP"),
)
# what a migrated row gets in a column its old catalog lacked
_FILL = {"status": "'unknown'", "params": "'{}'", "summary": "'{}'", "schema_version": "0"}


class CatalogLock:
    """The workspace's inter-process lock (a lock file), re-entrant within a process.

    Held only around one catalog connection, so a reader never blocks a writer for long.
    """

    def __init__(self, folder: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._file_lock = filelock.FileLock(str(self.path), thread_local=False)

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            try:
                self._file_lock.acquire(timeout=self.timeout)
            except filelock.Timeout as e:
                raise LoomError(
                    f"another process has held the workspace lock {self.path} for over "
                    f"{self.timeout:.0f} s. Wait for the other loom command to finish (or stop "
                    "it), then run this again."
                ) from e
            try:
                yield
            finally:
                self._file_lock.release()


def _is_lock_conflict(e: duckdb.Error) -> bool:
    text = str(e).lower()
    return isinstance(e, duckdb.IOException) and ("lock" in text or "resource temporarily" in text)


def connect_with_retry(
    path: Path, timeout: float = DEFAULT_TIMEOUT, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, retrying with jittered backoff while another process holds it."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as e:
            if not _is_lock_conflict(e):
                raise LoomError(
                    f"cannot open the workspace catalog {path}: {e}. If the file is damaged, move "
                    "it aside (the tables under runs/ are not touched) and re-run the jobs, or "
                    "use another workspace folder."
                ) from e
            if time.monotonic() >= deadline:
                raise LoomError(
                    f"the workspace catalog {path} stayed locked by another program for "
                    f"{timeout:.0f} s ({e}). Close the other program (a duckdb shell, an older "
                    "loom) and run this again."
                ) from e
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


@contextmanager
def open_catalog(
    path: Path, lock: CatalogLock, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the catalog under the workspace lock, closed (and released) on exit."""
    with lock.hold():
        con = connect_with_retry(path, lock.timeout, read_only=read_only)
        try:
            yield con
        finally:
            con.close()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [r[0] for r in rows]


def ensure_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create the catalog's tables, or migrate an older layout in place; refuse a newer one."""
    tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    version = None
    if "meta" in tables:
        row = con.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()
        version = int(row[0]) if row and str(row[0]).isdigit() else None
    if version is not None and version > CATALOG_VERSION:
        raise LoomError(
            f"the workspace catalog {path} was written by a newer loom (catalog v{version}; this "
            f"loom reads up to v{CATALOG_VERSION}). Upgrade loom, or use another workspace folder."
        )
    if version == CATALOG_VERSION and {"runs", "tables"} <= tables:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        changes = []
        for name, cols, keys in (
            ("runs", RUNS_COLUMNS, ("run_id",)),
            ("tables", TABLES_COLUMNS, ("run_id", "name")),
        ):
            if name not in tables:
                pk = ", ".join(keys)
                spec = ", ".join(f"{c} {t}" for c, t in cols)
                con.execute(f"CREATE TABLE {name} ({spec}, PRIMARY KEY ({pk}))")
                if tables:
                    changes.append(f"created table {name}")
                continue
            have = _columns(con, name)
            lacking = [k for k in keys if k not in have]
            if lacking:
                raise LoomError(
                    f"the workspace catalog {path} has a table {name!r} without the column(s) "
                    f"{', '.join(lacking)}: it was not written by loom. Move it aside or use "
                    "another workspace folder."
                )
            for col, typ in cols:
                if col not in have:
                    default = f" DEFAULT {_FILL[col]}" if col in _FILL else ""
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {col} {typ}{default}")
                    changes.append(f"added {name}.{col}")
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("DELETE FROM meta WHERE key = 'catalog_version'")
        con.execute("INSERT INTO meta VALUES ('catalog_version', ?)", [str(CATALOG_VERSION)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if changes:
        log.warning(
            "migrated the workspace catalog %s from v%s to v%s: %s",
            path,
            version if version is not None else "1 or older",
            CATALOG_VERSION,
            "; ".join(changes),
        )


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
