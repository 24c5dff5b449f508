"""Shared pieces of the app: the cached workspace reader, run picker, pagination, guards."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from apps.app.data import WorkspaceReader
from toolkit.errors import LoomError
from toolkit.workspace import SCHEMA_VERSION

PAGE_SIZES = (10, 25, 50, 100, 200)


def default_workspace() -> str:
    """The workspace given on the command line (`-- WORKSPACE`), $LOOM_WORKSPACE, or ./workspace."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return os.environ.get("LOOM_WORKSPACE") or (args[0] if args else "workspace")


@st.cache_data(max_entries=512, show_spinner=False)
def _cached_query(path: str, stamp: float, sql: str, params: tuple, _reader: WorkspaceReader):
    return WorkspaceReader.query(_reader, sql, params)


@st.cache_data(max_entries=128, show_spinner=False)
def _cached_load(
    path: str, stamp: float, run_id: str, name: str, columns: tuple | None, _reader: WorkspaceReader
):
    return WorkspaceReader.load(_reader, run_id, name, list(columns) if columns else None)


class CachedReader(WorkspaceReader):
    """A WorkspaceReader whose queries are cached until the catalog changes."""

    def query(self, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
        return _cached_query(str(self.path), self._stamp, sql, tuple(params), self)

    def load(self, run_id: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        cols = tuple(columns) if columns else None
        return _cached_load(str(self.path), self._stamp, run_id, name, cols, self)


@st.cache_resource(max_entries=8, show_spinner=False)
def _reader(path: str, stamp: float) -> CachedReader:
    reader = CachedReader(path)
    reader._stamp = stamp
    return reader


def get_reader(path: str) -> CachedReader:
    """The reader for a workspace folder, rebuilt when its catalog changes."""
    full = Path(path).expanduser().resolve()
    catalog = full / "catalog.duckdb"
    stamps = [
        p.stat().st_mtime for p in (catalog, catalog.with_name("catalog.duckdb.wal")) if p.exists()
    ]
    return _reader(str(full), max(stamps, default=0.0))


def clear_caches() -> None:
    _cached_query.clear()
    _cached_load.clear()
    _reader.clear()


@contextmanager
def section(name: str) -> Iterator[None]:
    """Show a problem inside one part of a page as a message, and keep drawing the rest."""
    try:
        yield
    except LoomError as e:
        st.warning(f"{name}: {e}")
    except Exception as e:  # never show a stack trace to the user
        st.error(
            f"{name} could not be shown ({type(e).__name__}: {e}). The table may be from "
            "another version of loom; re-run the job that made it."
        )


def run_label(reader: WorkspaceReader, run_id: str) -> str:
    info = reader.run(run_id)
    created = info.get("created")
    when = created.strftime("%Y-%m-%d %H:%M") if hasattr(created, "strftime") else ""
    return f"{run_id} · {info['status']} {when}".strip()


def pick_run(reader: WorkspaceReader, kinds: tuple[str, ...], key: str) -> str | None:
    """A run selector for runs of `kinds`; defaults to the run picked on the Runs page."""
    runs = reader.runs(kinds)
    if runs.empty:
        st.info(
            f"No {' or '.join(kinds)} run in this workspace yet. `loom demo --out "
            f"{reader.path}` writes one of each kind."
        )
        return None
    options = runs["run_id"].tolist()
    chosen = st.session_state.get("selected_run")
    if chosen in options:
        index = options.index(chosen)
    else:
        complete = runs.index[runs["status"] == "complete"]
        index = int(complete[0]) if len(complete) else 0
    followed = f"{key}_follows"
    if st.session_state.get(key) not in options or (
        chosen in options and st.session_state.get(followed) != chosen
    ):
        st.session_state.pop(key, None)  # a new pick on the Runs page wins
    st.session_state[followed] = chosen
    run_id = st.selectbox(
        "Run", options, index=index, key=key, format_func=lambda r: run_label(reader, r)
    )
    info = reader.run(run_id)
    if info["status"] != "complete":
        st.warning(
            f"Run {run_id} is {info['status']!r}, not complete: it crashed or is still running, "
            "so some tables may be missing or partial."
        )
    if int(info.get("schema_version") or 0) > SCHEMA_VERSION:
        st.warning(
            f"Run {run_id} was written by a newer loom (schema v{info['schema_version']}); "
            "upgrade loom to see all of it."
        )
    return run_id


def paginate(total: int, key: str, default_size: int = 25) -> tuple[int, int]:
    """Page-size and page-number widgets; returns (limit, offset) for SQL."""
    c1, c2, c3 = st.columns([1, 1, 3])
    size = c1.selectbox(
        "Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(default_size), key=f"{key}_size"
    )
    pages = max(1, math.ceil(total / size))
    page_key = f"{key}_page"
    if st.session_state.get(page_key, 1) > pages:
        st.session_state[page_key] = pages
    page = c2.number_input("Page", min_value=1, max_value=pages, value=1, step=1, key=page_key)
    offset = (int(page) - 1) * size
    if total:
        c3.caption(
            f"rows {offset + 1:,}–{min(offset + size, total):,} of {total:,} ({pages:,} pages)"
        )
    else:
        c3.caption("no rows match")
    return size, offset


def show_json(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)


def metrics_row(summary: dict[str, Any], limit: int = 6) -> None:
    """Headline numbers of a run summary as st.metric tiles."""
    items = [
        (k, v) for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    if not items:
        return
    cols = st.columns(min(limit, len(items)))
    for col, (k, v) in zip(cols, items[:limit]):
        col.metric(k, f"{v:,.3f}" if isinstance(v, float) else f"{v:,}")
