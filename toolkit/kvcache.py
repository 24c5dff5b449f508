"""One SQLite key-value table: the on-disk store under the embedding and completion caches.

A `KVTable` maps a text key to a row of values in one table of one SQLite file. An optional
scope column (e.g. the model name) splits one table between several owners: reads and
writes see only the rows of their scope. Reads are batched; one lock per table object
serialises its connections; each call opens and closes its own connection, so a table
object may be shared between threads.

Several processes may share the file: it is kept in WAL mode (readers never wait for a
writer), every connection waits up to `BUSY_TIMEOUT_S` for a lock, writes take the write
lock up front (BEGIN IMMEDIATE, so two writers never deadlock), and a call that still finds
the database busy is retried with backoff. A corrupt file (cut short, garbage bytes, a
malformed page) is reported with a warning naming it, moved aside as
`<file>.corrupt-<timestamp>` (never deleted) and replaced by an empty cache: the run goes on
and only re-computes what was cached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from toolkit.errors import LoomError

try:  # POSIX: serialise moving a corrupt file aside between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Keys per SELECT (SQLite caps the number of bound parameters of one statement).
READ_BATCH = 500
#: Seconds a connection waits for another process's lock before SQLite reports "busy".
BUSY_TIMEOUT_S = 30.0
#: Extra attempts (with backoff) of a call that still found the database busy or locked.
RETRIES = 5
BACKOFF_S = 0.05
SQLITE_MAGIC = b"SQLite format 3\x00"
CORRUPT_MESSAGES = ("malformed", "not a database", "encrypted", "corrupt")


def header_problem(path: Path) -> str | None:
    """Why the SQLite file at `path` cannot be whole, from its size and 100-byte header
    (None when it looks whole; a missing or empty file is a new, empty database)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return "not a SQLite file (bad header)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and size < pages * page_size:
        return f"cut short ({size} of {pages * page_size} bytes)"
    return None


def is_corrupt(err: BaseException) -> bool:
    """True for SQLite errors that mean a damaged file (not a busy or missing database)."""
    if not isinstance(err, sqlite3.DatabaseError):
        return False
    msg = str(err).lower()
    return any(m in msg for m in CORRUPT_MESSAGES)


def is_busy(err: BaseException) -> bool:
    msg = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg)


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
        self.columns = columns
        self.values = tuple(values)
        self.scope = scope
        self._lock = threading.Lock()
        problem = header_problem(self.path)
        if problem and self._confirm_corrupt():
            self.quarantine(problem, self._identity())
        self._run(self._setup)

    # connections ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A locked autocommit connection that waits for other processes' locks; always closed.

        Writes open their transaction with BEGIN IMMEDIATE (see `put`)."""
        with self._lock:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                yield db
            finally:
                db.close()

    def _setup(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.debug("cache %s stays in journal mode %s (WAL unavailable)", self.path, mode)
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({self.columns})")

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _confirm_corrupt(self) -> bool:
        """Whether SQLite itself finds the file damaged (a short file may only be another
        process's checkpoint caught half way; SQLite reads it whole through the WAL)."""
        try:
            with self.connect() as db:
                row = db.execute("PRAGMA quick_check").fetchone()
            return not row or row[0] != "ok"
        except sqlite3.DatabaseError as e:
            return not is_busy(e)

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """op(connection), retried while the database is busy and once after a corrupt file
        was moved aside; a LoomError naming the file when it still fails."""
        recovered = setup = False
        attempt = 0
        while True:
            seen = self._identity()
            try:
                with self.connect() as db:
                    if setup:
                        self._setup(db)
                    return op(db)
            except sqlite3.DatabaseError as e:
                if is_busy(e) and attempt < RETRIES:
                    time.sleep(BACKOFF_S * 2**attempt)
                    attempt += 1
                    continue
                if not recovered and (is_corrupt(e) or "no such table" in str(e).lower()):
                    # "no such table": another process replaced a corrupt file meanwhile
                    if is_corrupt(e):
                        self.quarantine(str(e), seen)
                    recovered = setup = True
                    continue
                raise LoomError(
                    f"the cache file {self.path} cannot be used ({e}): move it away or delete "
                    "it to start an empty cache"
                ) from e

    def quarantine(self, reason: str, seen: tuple[int, int] | None) -> Path | None:
        """Move the corrupt file (and its -wal/-shm files) aside as `*.corrupt-<timestamp>`.

        seen: the file's (device, inode) when it failed; when the file there now is another
        one (a process already moved the corrupt one aside) nothing is moved. Returns the new
        name of the corrupt file, or None.
        """
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+b") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if seen is None or self._identity() != seen:
                    return None
                stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
                aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    side = self.path.with_name(self.path.name + suffix)
                    if side.exists():
                        os.replace(side, aside.with_name(aside.name + suffix))
            finally:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        log.warning(
            "cache file %s is corrupt (%s): moved it to %s and started an empty cache; "
            "what it held will be computed again",
            self.path,
            reason,
            aside,
        )
        return aside

    # reads and writes ----------------------------------------------------------------------
    def get(self, keys: Sequence[str]) -> dict[str, tuple]:
        """{key: values} for the keys present (in this scope); missing keys are left out."""
        cols = ", ".join(("key", *self.values))
        where, fixed = (
            ("", []) if self.scope is None else (f"{self.scope[0]} = ? AND ", [self.scope[1]])
        )
        keys = list(keys)

        def read(db: sqlite3.Connection) -> dict[str, tuple]:
            found: dict[str, tuple] = {}
            for start in range(0, len(keys), READ_BATCH):
                part = keys[start : start + READ_BATCH]
                marks = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT {cols} FROM {self.table} WHERE {where}key IN ({marks})",
                    [*fixed, *part],
                )
                found.update((row[0], tuple(row[1:])) for row in rows)
            return found

        return self._run(read)

    def put(self, items: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Insert or replace (key, values) rows, all in one transaction."""
        fixed = () if self.scope is None else (self.scope[1],)
        rows = [(*fixed, key, *values) for key, values in items]
        if not rows:
            return
        marks = ",".join("?" * len(rows[0]))

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES ({marks})", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        self._run(write)
