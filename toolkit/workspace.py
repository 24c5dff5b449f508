"""A workspace: a folder of Parquet tables with a DuckDB catalog of runs.

Every capability writes its results here and the Streamlit app reads them back. Several
processes may use one workspace at once (docs/workspace.md, Guarantees): catalog access is
serialised by a lock file, a table file is written atomically (temporary file, fsync, rename)
before its catalog row, a run belongs to the process writing it until `finish_run`, and
`check()` reports what a crash left behind without deleting anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import filelock
import pandas as pd
import pyarrow.parquet as pq

from toolkit.errors import LoomError
from toolkit.workspace_catalog import (
    CATALOG_NAME,
    DEFAULT_TIMEOUT,
    CatalogLock,
    ensure_schema,
    open_catalog,
)
from toolkit.workspace_check import WorkspaceReport, is_temp_file, scan
from toolkit.workspace_tables import (
    atomic_write_bytes,
    json_default,
    parse_json,
    read_plan,
    table_bytes,
)

log = logging.getLogger(__name__)

#: Version of the result tables' layout (docs/workspace.md), recorded with every run.
SCHEMA_VERSION = 1
OWNER_LOCK = ".owner.lock"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Longest name of a run kind, table or artefact (file names, with run ids and temporary-file
#: affixes, stay under the 255 bytes filesystems allow).
MAX_NAME = 200
#: A run's states: `start_run` makes it running; `finish_run` ends it in one of the others
#: (`latest_run` and the app read "complete"; a typo such as "completed" would hide the run).
RUN_STATUSES = ("running", "complete", "failed", "abandoned")
# owner locks of the runs this process is writing, shared by its Workspace objects; keyed by
# lock path, with the pid that took them (a forked child owns nothing of its parent's)
_OWNED: dict[str, tuple[int, filelock.FileLock]] = {}


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith("."):
        raise LoomError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-' or '.' (no slashes)"
        )
    if len(name) > MAX_NAME:
        raise LoomError(
            f"invalid {what} {name[:40]!r}... ({len(name)} characters): use at most {MAX_NAME}"
        )
    return name


class Workspace:
    """A folder of results: `runs/<run_id>/<table>.parquet` listed in `catalog.duckdb`.

    lock_timeout: seconds a catalog access waits for other processes before a LoomError.
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise LoomError(f"workspace path {self.path} is a file; give a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "runs").mkdir(exist_ok=True)
        self.catalog_path = self.path / CATALOG_NAME
        self._lock = CatalogLock(self.path, lock_timeout)
        with self._db() as db:
            ensure_schema(db, self.catalog_path)
            snapshot = self._snapshot(db)
        report = scan(self.path, *snapshot, self._active, deep=False)
        if not report.ok:
            others = [f for f in report.findings if f.kind != "interrupted_run"]
            level = logging.WARNING if others else logging.INFO
            log.log(level, "%s\n(Workspace.check() reports; nothing was changed)", report)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    @property
    def cache_dir(self) -> Path:
        """Folder for caches (embeddings, LLM completions) that belong to this workspace."""
        d = self.path / "cache"
        d.mkdir(exist_ok=True)
        return d

    def _db(self):
        """A catalog connection under the workspace lock (hold it for milliseconds only)."""
        return open_catalog(self.catalog_path, self._lock)

    # runs -------------------------------------------------------------------------------
    def start_run(self, kind: str, params: dict[str, Any] | None = None) -> str:
        """Register a new run of `kind` with its parameters; returns its id.

        The run belongs to this process until `finish_run`; a run whose process died stays
        `running` and `check()` reports it as interrupted.
        """
        _check_name("run kind", kind)
        params_json = json.dumps(params or {}, default=str)
        while True:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            run_id = f"{kind}-{stamp}-{secrets.token_hex(2)}"
            try:
                (self.path / "runs" / run_id).mkdir(parents=True)  # reserves the id
                break
            except FileExistsError:
                continue
        if not self._claim(run_id, timeout=5.0):
            raise LoomError(f"cannot take the owner lock of the new run {run_id} in {self.path}")
        with self._db() as db:
            db.execute(
                "INSERT INTO runs (run_id, kind, created, finished, status, params, summary,"
                " schema_version) VALUES (?, ?, ?, NULL, 'running', ?, '{}', ?)",
                [run_id, kind, datetime.now(UTC), params_json, SCHEMA_VERSION],
            )
        return run_id

    def finish_run(
        self, run: str, status: str = "complete", summary: dict[str, Any] | None = None
    ) -> None:
        """Mark a run complete (or failed / abandoned) and store its headline numbers."""
        if status not in RUN_STATUSES:
            raise LoomError(f"status={status!r}: a run ends as one of {RUN_STATUSES[1:]}")
        summary_json = json.dumps(summary or {}, default=json_default)
        with self._db() as db:
            self._writable(db, run)
            db.execute(
                "UPDATE runs SET status = ?, finished = ?, summary = ? WHERE run_id = ?",
                [status, datetime.now(UTC), summary_json, run],
            )
        if status != "running" and self._owns(run):
            _OWNED.pop(self._owner_path(run))[1].release(force=True)

    def release_run(self, run: str) -> None:
        """Give up this process's hold on `run` without finishing it: it stays `running`, and
        this or any other process may resume it (e.g. after the work was interrupted)."""
        if self._owns(_check_name("run id", run)):
            _OWNED.pop(self._owner_path(run))[1].release(force=True)

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        """All runs (newest first), optionally of one kind; params/summary as dicts."""
        query = "SELECT run_id, kind, created, finished, status, params, summary FROM runs"
        args: list[Any] = []
        if kind is not None:
            query += " WHERE kind = ?"
            args.append(kind)
        with self._db() as db:
            df = db.execute(query + " ORDER BY created DESC", args).fetchdf()
        for col in ("params", "summary"):
            df[col] = [parse_json(v) for v in df[col]]
        return df

    def latest_run(self, kind: str, status: str | None = "complete") -> str | None:
        """Id of the newest run of `kind` (with that status), or None."""
        df = self.runs(kind)
        if status is not None:
            df = df[df["status"] == status]
        return None if df.empty else str(df["run_id"].iloc[0])

    def run_dir(self, run: str) -> Path:
        """Folder for a run's other artefacts (models, indexes, logs)."""
        with self._db() as db:
            self._require_run(db, run)
        return self.path / "runs" / run

    def is_active(self, run: str) -> bool:
        """True while a live process (this one or another) owns the run, i.e. is writing it."""
        return self._active(_check_name("run id", run))

    def _active(self, run: str) -> bool:
        if self._owns(run):
            return True
        folder = self.path / "runs" / run
        if not folder.is_dir():
            return False
        probe = filelock.FileLock(str(folder / OWNER_LOCK), thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            return True
        probe.release(force=True)
        return False

    def _owner_path(self, run: str) -> str:
        return str(self.path / "runs" / run / OWNER_LOCK)

    def _owns(self, run: str) -> bool:
        pid, lock = _OWNED.get(self._owner_path(run), (None, None))
        return pid == os.getpid() and lock is not None and lock.is_locked

    def _claim(self, run: str, timeout: float) -> bool:
        """Take the run's owner lock (held until finish_run or this process ends)."""
        if self._owns(run):
            return True
        lock = filelock.FileLock(self._owner_path(run), thread_local=False)
        try:
            lock.acquire(timeout=timeout)  # rides out a check() probing it for a moment
        except filelock.Timeout:
            return False
        _OWNED[self._owner_path(run)] = (os.getpid(), lock)
        return True

    def _require_run(self, db: duckdb.DuckDBPyConnection, run: str) -> str:
        _check_name("run id", run)
        found = db.execute("SELECT status FROM runs WHERE run_id = ?", [run]).fetchone()
        if not found:
            raise LoomError(f"no run {run!r} in workspace {self.path}; see Workspace.runs()")
        return str(found[0])

    def _writable(self, db: duckdb.DuckDBPyConnection, run: str) -> None:
        """Check the run exists and that no other live process is writing it; claim it."""
        if self._owns(run):
            return
        if self._require_run(db, run) != "running":
            return
        if not self._claim(run, timeout=1.0):
            raise LoomError(
                f"run {run!r} in {self.path} is being written by another live process; wait "
                "for it to finish, or start a new run (e.g. `--no-resume`)"
            )
        # taken over from a process that died: its half-written temporary files are garbage
        for tmp in (self.path / "runs" / run).iterdir():
            if is_temp_file(tmp.name):
                log.info("removing %s, left by an interrupted write to run %s", tmp, run)
                tmp.unlink(missing_ok=True)

    def _prepare_write(self, run: str) -> None:
        if not self._owns(run):
            with self._db() as db:
                self._writable(db, run)

    # tables -----------------------------------------------------------------------------
    def save_table(self, run: str, name: str, df: pd.DataFrame) -> Path:
        """Write `df` as `runs/<run>/<name>.parquet` atomically, then record it in the catalog.

        A reader sees the old file or the new one, never a part; a crash between the two steps
        leaves a file the catalog does not list, which `check()` reports.
        """
        _check_name("table name", name)
        if not isinstance(df, pd.DataFrame):
            raise LoomError(f"save_table({name!r}) needs a pandas DataFrame, got {type(df)}")
        data = table_bytes(name, df)
        self._prepare_write(run)
        path = self.path / "runs" / run / f"{name}.parquet"
        atomic_write_bytes(path, data)
        row = [
            run,
            name,
            str(path.relative_to(self.path)),
            len(df),
            json.dumps([str(c) for c in df.columns]),
            datetime.now(UTC),
        ]
        with self._db() as db:
            db.execute("BEGIN TRANSACTION")
            db.execute("DELETE FROM tables WHERE run_id = ? AND name = ?", [run, name])
            db.execute(
                "INSERT INTO tables (run_id, name, path, rows, columns, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            db.execute("COMMIT")
        return path

    def table_path(self, run: str, name: str) -> Path:
        _check_name("table name", name)
        path = self.path / "runs" / _check_name("run id", run) / f"{name}.parquet"
        if not path.exists():
            raise LoomError(
                f"run {run!r} has no table {name!r} in {self.path}; tables: "
                f"{', '.join(self.tables(run)['name']) or 'none'}"
            )
        return path

    def load_table(
        self,
        run: str,
        name: str,
        columns: list[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        where: str | None = None,
    ) -> pd.DataFrame:
        """Read a table (or a page of it: limit/offset, an SQL `where` filter) from Parquet."""
        path = self.table_path(run, name)
        try:
            columns, sql = read_plan(name, path, columns, limit, offset, where)
            if sql is None:
                return pq.read_table(path, columns=columns).to_pandas()
        except LoomError:
            raise
        except Exception as e:  # pyarrow raises several types for damaged files
            raise self._unreadable(run, name, path, e) from e
        return self._query(run, name, path, sql)

    def count_rows(self, run: str, name: str, where: str | None = None) -> int:
        """Number of rows of a table (optionally matching an SQL filter) without loading it."""
        path = self.table_path(run, name)
        sql = "SELECT count(*) AS n FROM read_parquet(?)" + (f" WHERE {where}" if where else "")
        return int(self._query(run, name, path, sql)["n"].iloc[0])

    def _query(self, run: str, name: str, path: Path, sql: str) -> pd.DataFrame:
        con = duckdb.connect()
        try:
            return con.execute(sql, [str(path)]).fetchdf()
        except (duckdb.InvalidInputException, duckdb.IOException) as e:
            raise self._unreadable(run, name, path, e) from e
        except duckdb.Error as e:
            raise LoomError(f"cannot read table {name!r} of run {run!r}: {e}") from e
        finally:
            con.close()

    def _unreadable(self, run: str, name: str, path: Path, e: Exception) -> LoomError:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return LoomError(
            f"table {name!r} of run {run!r} is unreadable: {path} is truncated or not valid "
            f"Parquet ({why}). Re-run the command that made run {run!r}; Workspace.check() "
            "lists every damaged table."
        )

    def tables(self, run: str) -> pd.DataFrame:
        """The tables of a run: name, rows, columns, path."""
        with self._db() as db:
            df = db.execute(
                "SELECT name, rows, columns, path FROM tables WHERE run_id = ? ORDER BY name",
                [run],
            ).fetchdf()
        df["columns"] = [parse_json(c, []) for c in df["columns"]]
        return df

    # small JSON artefacts ---------------------------------------------------------------
    def save_json(self, run: str, name: str, obj: Any) -> Path:
        """Store a small JSON document (a report, function code) with the run, atomically."""
        _check_name("artefact name", name)
        self._prepare_write(run)
        path = self.path / "runs" / run / f"{name}.json"
        atomic_write_bytes(path, json.dumps(obj, indent=1, default=json_default).encode())
        return path

    def load_json(self, run: str, name: str) -> Any:
        path = self.path / "runs" / _check_name("run id", run) / f"{_check_name('name', name)}.json"
        if not path.exists():
            raise LoomError(f"run {run!r} has no JSON artefact {name!r} in {self.path}")
        try:
            return json.loads(path.read_bytes())
        except ValueError as e:
            raise LoomError(
                f"JSON artefact {name!r} of run {run!r} ({path}) is damaged ({e}); re-run the "
                f"command that made run {run!r}"
            ) from e

    # consistency ------------------------------------------------------------------------
    def check(self, deep: bool = True) -> WorkspaceReport:
        """Report what disagrees between the catalog and the files; change nothing.

        Findings: runs left `running` by a process that died (interrupted), catalog rows whose
        file is missing, unreadable (truncated/corrupt Parquet: `deep` reads every footer) or
        holds other rows, table files and run folders the catalog does not list, temporary
        files of interrupted writes. See docs/workspace.md, Guarantees.
        """
        with self._db() as db:
            snapshot = self._snapshot(db)
        return scan(self.path, *snapshot, self._active, deep=deep)

    def _snapshot(self, db: duckdb.DuckDBPyConnection) -> tuple:
        """Catalog rows and folder listing taken together, under the lock."""
        runs_dir = self.path / "runs"
        runs = db.execute("SELECT run_id, kind, status FROM runs").fetchdf()
        tables = db.execute("SELECT run_id, name, path, rows FROM tables").fetchdf()
        listing = {
            d.name: sorted(f.name for f in d.iterdir() if f.name != OWNER_LOCK)
            for d in (runs_dir.iterdir() if runs_dir.is_dir() else [])
            if d.is_dir()
        }
        return runs, tables, listing
