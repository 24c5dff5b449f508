"""Read-only access to a workspace for the app: the catalog and paginated SQL over Parquet.

The app never opens the workspace's `catalog.duckdb` for writing: it takes the workspace
lock for the few milliseconds it needs to copy the catalog, then reads the private copy, so
running `loom` jobs keep writing results while the app is open and the copy is never caught
half-way through a write. Tables are read with DuckDB straight from Parquet, a page at a time;
a table file is replaced atomically, so a page never comes from a half-written table.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from toolkit.errors import LoomError
from toolkit.workspace import SCHEMA_VERSION
from toolkit.workspace_catalog import CatalogLock

log = logging.getLogger(__name__)

# Columns the app needs per (run kind, table), from docs/workspace.md.
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("embed", "embeddings"): ("id", "text", "embedding"),
    ("embed", "neighbours"): ("query", "rank", "id", "text", "score"),
    ("label", "data"): ("row", "text"),
    ("label", "lf_summary"): ("lf", "polarity", "coverage", "overlaps", "conflicts"),
    ("label", "probs"): ("row", "pred"),
    ("label", "weights"): ("lf", "accuracy"),
    ("label", "coverage"): ("lf", "before", "after"),
    ("label", "partition_accuracy"): ("partition", "lf", "accuracy", "size"),
    ("label", "embeddings_2d"): ("row", "x", "y"),
    ("extract", "documents"): ("doc_id", "text"),
    ("extract", "table"): ("doc_id",),
    ("extract", "functions"): ("attribute", "function_id", "code", "kept"),
    ("extract", "provenance"): ("doc_id", "attribute", "value", "start", "end"),
    ("extract", "tokens"): ("mode", "stage", "prompt_tokens", "completion_tokens"),
    ("extract", "gold"): ("doc_id",),
    ("link", "left"): ("row",),
    ("link", "right"): ("row",),
    ("link", "pairs"): ("left_row", "right_row", "score"),
    ("link", "gold"): ("left_row", "right_row"),
    ("dedup", "clusters"): ("row", "cluster_id"),
    ("dedup", "pairs"): ("row_a", "row_b", "score"),
    ("dedup", "gold"): ("row_a", "row_b"),
    ("cluster", "clusters"): ("row", "cluster_id"),
    ("cluster", "pairs"): ("row_a", "row_b", "score"),
    ("cluster", "gold"): ("row_a", "row_b"),
}

RERUN_HINT = {
    "label": "loom label ... (or `loom demo`)",
    "extract": "loom extract ... (or `loom demo`)",
    "link": "loom link ... (or `loom demo`)",
    "dedup": "loom link --dedup ... (or `loom demo`)",
    "cluster": "loom cluster ...",
    "embed": "loom embed ... (or `loom demo`)",
}


class WorkspaceProblem(LoomError):
    """The workspace (or one of its tables) cannot be shown; the message says why and what to do."""


class EmptyWorkspace(WorkspaceProblem):
    """The folder has no catalog or no runs yet."""


class SchemaProblem(WorkspaceProblem):
    """A table lacks the columns this version of the app reads (an older schema)."""


def quote_ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def quote_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class WorkspaceReader:
    """The runs, tables and table pages of one workspace folder, read-only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise EmptyWorkspace(
                f"there is no workspace at {self.path}. Create one with "
                f"`loom demo --out {self.path}` or give the folder of an existing workspace."
            )
        if not self.path.is_dir():
            raise WorkspaceProblem(f"{self.path} is a file, not a workspace folder")
        self.catalog_path = self.path / "catalog.duckdb"
        if not self.catalog_path.exists():
            raise EmptyWorkspace(
                f"{self.path} has no catalog.duckdb, so it holds no loom results yet. Run "
                f"`loom demo --out {self.path}` (or any loom command with --out {self.path})."
            )
        self._runs, self._tables = self._read_catalog()

    # catalog ----------------------------------------------------------------------------
    def stamp(self) -> float:
        """Changes whenever the catalog changes (a run started/finished, a table written)."""
        paths = [self.catalog_path, self.catalog_path.with_name("catalog.duckdb.wal")]
        return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)

    def _locked(self) -> AbstractContextManager:
        """The workspace lock while the catalog is copied; none where the folder is read-only."""
        lock = CatalogLock(self.path, timeout=30.0)
        try:
            lock.path.touch(exist_ok=True)
        except OSError as e:
            log.info("reading %s without its lock (%s); retrying on a torn copy", self.path, e)
            return nullcontext()
        return lock.hold()

    def _copy_catalog(self, copy: Path) -> None:
        with self._locked():
            shutil.copyfile(self.catalog_path, copy)
            wal = self.catalog_path.with_name("catalog.duckdb.wal")
            if wal.exists():
                shutil.copyfile(wal, copy.with_name("catalog.duckdb.wal"))

    def _read_catalog(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        last: Exception | None = None
        for attempt in range(5):
            with tempfile.TemporaryDirectory(prefix="loom-app-") as tmp:
                copy = Path(tmp) / "catalog.duckdb"
                try:
                    self._copy_catalog(copy)
                    con = duckdb.connect(str(copy))
                    try:
                        names = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
                        if "runs" not in names:
                            raise EmptyWorkspace(
                                f"the catalog of {self.path} has no runs table: it is not a loom "
                                "workspace, or it was never written. Run `loom demo --out "
                                f"{self.path}` to create one."
                            )
                        runs = con.execute("SELECT * FROM runs").fetchdf()
                        tables = (
                            con.execute("SELECT * FROM tables").fetchdf()
                            if "tables" in names
                            else pd.DataFrame(columns=["run_id", "name", "path", "rows", "columns"])
                        )
                    finally:
                        con.close()
                    return self._normalise(runs, tables)
                except WorkspaceProblem:
                    raise
                except (duckdb.Error, OSError) as e:
                    last = e
                    time.sleep(0.2 * (attempt + 1))
        raise WorkspaceProblem(
            f"cannot read the catalog {self.catalog_path}: {last}. If a loom job is writing to "
            "it, wait for it and press Reload; if the file is damaged, re-run the job into a new "
            "workspace folder."
        )

    def _normalise(
        self, runs: pd.DataFrame, tables: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        for col, default in (
            ("kind", "unknown"),
            ("status", "unknown"),
            ("created", pd.NaT),
            ("finished", pd.NaT),
            ("params", "{}"),
            ("summary", "{}"),
            ("schema_version", 0),
        ):
            if col not in runs.columns:
                runs[col] = default
        if "run_id" not in runs.columns:
            raise SchemaProblem(
                f"the catalog of {self.path} has no run_id column: it was written by an "
                "incompatible program. Re-run the jobs into a new workspace folder."
            )
        runs["schema_version"] = runs["schema_version"].fillna(0).astype(int)
        for col in ("params", "summary"):
            runs[col] = [_parse_json(v) for v in runs[col]]
        runs = runs.sort_values("created", ascending=False, na_position="last").reset_index(
            drop=True
        )
        if "columns" in tables.columns:
            tables["columns"] = [_parse_json(c, []) for c in tables["columns"]]
        return runs, tables

    def runs(self, kinds: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
        """Runs, newest first: run_id, kind, created, finished, status, params, summary, ..."""
        df = self._runs
        if kinds:
            df = df[df["kind"].isin(list(kinds))]
        return df.reset_index(drop=True)

    def run(self, run_id: str) -> dict[str, Any]:
        hit = self._runs[self._runs["run_id"] == run_id]
        if hit.empty:
            raise WorkspaceProblem(f"run {run_id!r} is not in the workspace {self.path}")
        return hit.iloc[0].to_dict()

    def tables(self, run_id: str) -> pd.DataFrame:
        """The tables the catalog lists for a run: name, rows, columns, path, present (file exists)."""
        df = self._tables[self._tables["run_id"] == run_id].copy()
        df["present"] = [self._file(run_id, n).exists() for n in df["name"]]
        return (
            df[["name", "rows", "columns", "path", "present"]]
            .sort_values("name")
            .reset_index(drop=True)
        )

    def _file(self, run_id: str, name: str) -> Path:
        return self.path / "runs" / run_id / f"{name}.parquet"

    def has_table(self, run_id: str, name: str) -> bool:
        return self._file(run_id, name).exists()

    # tables -----------------------------------------------------------------------------
    def table_file(self, run_id: str, name: str) -> Path:
        path = self._file(run_id, name)
        if not path.exists():
            listed = set(self._tables.loc[self._tables["run_id"] == run_id, "name"])
            why = (
                "the catalog lists it but the file is gone"
                if name in listed
                else "it was not written"
            )
            raise WorkspaceProblem(
                f"run {run_id!r} has no table {name!r} ({why}). Re-run the job to write it: "
                f"{RERUN_HINT.get(self.run(run_id)['kind'], 'the loom command that made the run')}."
            )
        return path

    def columns(self, run_id: str, name: str) -> list[str]:
        """Column names from the Parquet footer; a corrupt file raises a clear WorkspaceProblem."""
        path = self.table_file(run_id, name)
        try:
            return list(pq.read_schema(path).names)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise WorkspaceProblem(
                f"table {name!r} of run {run_id!r} is unreadable ({path.name}: {e}). The file is "
                "damaged or half-written; re-run the job that made this run."
            ) from e

    def require(self, run_id: str, name: str, columns: tuple[str, ...] | None = None) -> list[str]:
        """Check a table has the columns the app reads; returns its columns."""
        have = self.columns(run_id, name)
        info = self.run(run_id)
        need = columns if columns is not None else REQUIRED.get((info["kind"], name), ())
        missing = [c for c in need if c not in have]
        if missing:
            version = int(info.get("schema_version") or 0)
            age = (
                f"it was written by an older loom (schema v{version}, this app reads "
                f"v{SCHEMA_VERSION})"
                if version < SCHEMA_VERSION
                else "its schema does not match docs/workspace.md"
            )
            raise SchemaProblem(
                f"table {name!r} of run {run_id!r} lacks the column(s) {', '.join(missing)}: "
                f"{age}. Re-run it with the current version: "
                f"{RERUN_HINT.get(info['kind'], 'the loom command that made it')}."
            )
        return have

    def rel(self, run_id: str, name: str, row_number: bool = False) -> str:
        """SQL for a table: `read_parquet('<path>')` (with `file_row_number` when asked)."""
        path = quote_str(str(self.table_file(run_id, name)))
        return (
            f"read_parquet({path}, file_row_number=true)" if row_number else f"read_parquet({path})"
        )

    def query(self, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
        """Run SQL (tables referenced through `rel`) on a private in-memory DuckDB."""
        con = duckdb.connect()
        try:
            return con.execute(sql, list(params)).fetchdf()
        except duckdb.Error as e:
            raise WorkspaceProblem(
                f"cannot read from the workspace: {str(e).splitlines()[0]}. A table may be "
                "damaged or from another schema; re-run the job that made it."
            ) from e
        finally:
            con.close()

    def page(
        self,
        run_id: str,
        name: str,
        columns: list[str] | None = None,
        where: str = "",
        params: list[Any] | tuple = (),
        order_by: str = "",
        limit: int = 50,
        offset: int = 0,
    ) -> pd.DataFrame:
        """One page of a table, filtered in SQL."""
        cols = ", ".join(quote_ident(c) for c in columns) if columns else "*"
        sql = f"SELECT {cols} FROM {self.rel(run_id, name)}"
        sql += f" WHERE {where}" if where else ""
        sql += f" ORDER BY {order_by}" if order_by else ""
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return self.query(sql, params)

    def count(self, run_id: str, name: str, where: str = "", params: list[Any] | tuple = ()) -> int:
        sql = f"SELECT count(*) AS n FROM {self.rel(run_id, name)}"
        sql += f" WHERE {where}" if where else ""
        return int(self.query(sql, params)["n"].iloc[0])

    def load(self, run_id: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole (small) table: summaries, functions, tokens. Use `page` for big ones."""
        path = self.table_file(run_id, name)
        try:
            return pq.read_table(path, columns=columns).to_pandas()
        except Exception as e:
            raise WorkspaceProblem(
                f"table {name!r} of run {run_id!r} is unreadable ({path.name}: {e}). Re-run the "
                "job that made this run."
            ) from e


def _parse_json(value: Any, default: Any = None) -> Any:
    if isinstance(value, dict | list):
        return value
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return {} if default is None else default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return {"raw": str(value)}
