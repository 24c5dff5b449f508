"""A workspace: a folder of Parquet tables with a DuckDB catalog of runs.

Every capability writes its results here and the Streamlit app reads them back.
Writes are atomic (temp file, then rename), so a crash never leaves a half-written table,
and a run stays `running` until `finish_run` marks it complete.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from toolkit.errors import LoomError

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_LOCK = threading.RLock()


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith("."):
        raise LoomError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-' or '.' (no slashes)"
        )
    return name


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
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


class Workspace:
    """A folder of results: `runs/<run_id>/<table>.parquet` listed in `catalog.duckdb`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise LoomError(f"workspace path {self.path} is a file; give a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "runs").mkdir(exist_ok=True)
        self.catalog_path = self.path / "catalog.duckdb"
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS runs (run_id VARCHAR PRIMARY KEY, kind VARCHAR,"
                " created TIMESTAMP, finished TIMESTAMP, status VARCHAR, params VARCHAR,"
                " summary VARCHAR, schema_version INTEGER)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS tables (run_id VARCHAR, name VARCHAR, path VARCHAR,"
                " rows BIGINT, columns VARCHAR, created TIMESTAMP, PRIMARY KEY (run_id, name))"
            )

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    @property
    def cache_dir(self) -> Path:
        """Folder for caches (embeddings, LLM completions) that belong to this workspace."""
        d = self.path / "cache"
        d.mkdir(exist_ok=True)
        return d

    @contextmanager
    def _db(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with _LOCK:
            try:
                con = duckdb.connect(str(self.catalog_path), read_only=read_only)
            except duckdb.Error as e:
                raise LoomError(
                    f"cannot open the workspace catalog {self.catalog_path}: {e}. "
                    "Close other programs writing to it, or use another workspace folder."
                ) from e
            try:
                yield con
            finally:
                con.close()

    # runs -------------------------------------------------------------------------------
    def start_run(self, kind: str, params: dict[str, Any] | None = None) -> str:
        """Register a new run of `kind` with its parameters; returns its id."""
        _check_name("run kind", kind)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{kind}-{stamp}-{secrets.token_hex(2)}"
        (self.path / "runs" / run_id).mkdir(parents=True)
        with self._db() as db:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, NULL, 'running', ?, '{}', ?)",
                [
                    run_id,
                    kind,
                    datetime.now(UTC),
                    json.dumps(params or {}, default=str),
                    SCHEMA_VERSION,
                ],
            )
        return run_id

    def finish_run(
        self, run: str, status: str = "complete", summary: dict[str, Any] | None = None
    ) -> None:
        """Mark a run complete (or failed) and store its headline numbers."""
        self._require_run(run)
        with self._db() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished = ?, summary = ? WHERE run_id = ?",
                [status, datetime.now(UTC), json.dumps(summary or {}, default=_json_default), run],
            )

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
            df[col] = [json.loads(v) if v else {} for v in df[col]]
        return df

    def latest_run(self, kind: str, status: str | None = "complete") -> str | None:
        """Id of the newest run of `kind` (with that status), or None."""
        df = self.runs(kind)
        if status is not None:
            df = df[df["status"] == status]
        return None if df.empty else str(df["run_id"].iloc[0])

    def run_dir(self, run: str) -> Path:
        """Folder for a run's other artefacts (models, indexes, logs)."""
        self._require_run(run)
        return self.path / "runs" / run

    def _require_run(self, run: str) -> None:
        _check_name("run id", run)
        with self._db() as db:
            found = db.execute("SELECT 1 FROM runs WHERE run_id = ?", [run]).fetchone()
        if not found:
            raise LoomError(f"no run {run!r} in workspace {self.path}; see Workspace.runs()")

    # tables -----------------------------------------------------------------------------
    def save_table(self, run: str, name: str, df: pd.DataFrame) -> Path:
        """Write `df` as `runs/<run>/<name>.parquet` atomically and record it in the catalog."""
        _check_name("table name", name)
        self._require_run(run)
        if not isinstance(df, pd.DataFrame):
            raise LoomError(f"save_table({name!r}) needs a pandas DataFrame, got {type(df)}")
        path = self.path / "runs" / run / f"{name}.parquet"
        table = pa.Table.from_pandas(df, preserve_index=not isinstance(df.index, pd.RangeIndex))
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        with self._db() as db:
            db.execute("DELETE FROM tables WHERE run_id = ? AND name = ?", [run, name])
            db.execute(
                "INSERT INTO tables VALUES (?, ?, ?, ?, ?, ?)",
                [
                    run,
                    name,
                    str(path.relative_to(self.path)),
                    len(df),
                    json.dumps([str(c) for c in df.columns]),
                    datetime.now(UTC),
                ],
            )
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
        if limit is None and offset is None and where is None:
            try:
                return pq.read_table(path, columns=columns).to_pandas()
            except (pa.ArrowInvalid, OSError) as e:
                raise LoomError(f"table {name!r} of run {run!r} is unreadable: {e}") from e
        cols = "*" if not columns else ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT {cols} FROM read_parquet(?)"
        if where:
            sql += f" WHERE {where}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
        con = duckdb.connect()
        try:
            return con.execute(sql, [str(path)]).fetchdf()
        except duckdb.Error as e:
            raise LoomError(f"cannot read table {name!r} of run {run!r}: {e}") from e
        finally:
            con.close()

    def count_rows(self, run: str, name: str, where: str | None = None) -> int:
        """Number of rows of a table (optionally matching an SQL filter) without loading it."""
        path = self.table_path(run, name)
        sql = "SELECT count(*) FROM read_parquet(?)" + (f" WHERE {where}" if where else "")
        con = duckdb.connect()
        try:
            return int(con.execute(sql, [str(path)]).fetchone()[0])
        finally:
            con.close()

    def tables(self, run: str) -> pd.DataFrame:
        """The tables of a run: name, rows, columns, path."""
        with self._db() as db:
            df = db.execute(
                "SELECT name, rows, columns, path FROM tables WHERE run_id = ? ORDER BY name",
                [run],
            ).fetchdf()
        df["columns"] = [json.loads(c) for c in df["columns"]]
        return df

    # small JSON artefacts ---------------------------------------------------------------
    def save_json(self, run: str, name: str, obj: Any) -> Path:
        """Store a small JSON document (a report, function code) with the run, atomically."""
        _check_name("artefact name", name)
        self._require_run(run)
        path = self.path / "runs" / run / f"{name}.json"
        atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())
        return path

    def load_json(self, run: str, name: str) -> Any:
        path = self.path / "runs" / _check_name("run id", run) / f"{_check_name('name', name)}.json"
        if not path.exists():
            raise LoomError(f"run {run!r} has no JSON artefact {name!r} in {self.path}")
        return json.loads(path.read_text())


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
