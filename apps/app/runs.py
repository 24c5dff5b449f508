"""Runs page: every run with its kind, time, parameters and sizes; pick one and browse its tables."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.app.common import metrics_row, paginate, run_label, section, show_json
from apps.app.data import WorkspaceReader


def runs_overview(reader: WorkspaceReader) -> pd.DataFrame:
    """One row per run: kind, status, created, seconds, tables, rows, params, summary."""
    runs = reader.runs()
    rows = []
    for r in runs.itertuples(index=False):
        tables = reader.tables(r.run_id)
        seconds = None
        if pd.notna(r.finished) and pd.notna(r.created):
            seconds = round((pd.Timestamp(r.finished) - pd.Timestamp(r.created)).total_seconds(), 1)
        rows.append(
            {
                "run_id": r.run_id,
                "kind": r.kind,
                "status": r.status,
                "created": r.created,
                "seconds": seconds,
                "tables": len(tables),
                "rows": int(tables["rows"].fillna(0).sum()) if len(tables) else 0,
                "params": show_json(r.params),
                "summary": show_json(r.summary),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "run_id",
            "kind",
            "status",
            "created",
            "seconds",
            "tables",
            "rows",
            "params",
            "summary",
        ],
    )


def render(reader: WorkspaceReader) -> None:
    overview = runs_overview(reader)
    c1, c2, c3 = st.columns([2, 2, 3])
    kinds = sorted(overview["kind"].unique())
    statuses = sorted(overview["status"].unique())
    pick_kinds = c1.multiselect("Kind", kinds, default=kinds, key="runs_kind")
    pick_status = c2.multiselect("Status", statuses, default=statuses, key="runs_status")
    search = c3.text_input("Search run id / parameters", key="runs_search")
    shown = overview[overview["kind"].isin(pick_kinds) & overview["status"].isin(pick_status)]
    if search:
        hay = shown["run_id"] + " " + shown["params"] + " " + shown["summary"]
        shown = shown[hay.str.contains(search, case=False, regex=False)]
    st.caption(f"{len(shown)} of {len(overview)} runs")
    st.dataframe(shown, hide_index=True, width="stretch")
    if shown.empty:
        st.info("No run matches these filters.")
        return

    st.subheader("Run details")
    options = shown["run_id"].tolist()
    current = st.session_state.get("selected_run")
    run_id = st.selectbox(
        "Pick a run (the other pages open it)",
        options,
        index=options.index(current) if current in options else 0,
        format_func=lambda r: run_label(reader, r),
        key="runs_pick",
    )
    st.session_state["selected_run"] = run_id
    info = reader.run(run_id)
    metrics_row(info["summary"])
    c1, c2 = st.columns(2)
    c1.markdown("**Parameters**")
    c1.json(info["params"], expanded=False)
    c2.markdown("**Summary**")
    c2.json(info["summary"], expanded=False)

    tables = reader.tables(run_id)
    if tables.empty:
        st.info("This run has no tables (it may still be running, or it failed early).")
        return
    view = tables.assign(columns=[", ".join(map(str, c)) for c in tables["columns"]])
    st.dataframe(view[["name", "rows", "columns", "present"]], hide_index=True, width="stretch")
    name = st.selectbox("Table", tables["name"].tolist(), key="runs_table")
    with section(f"Table {name}"):
        cols = reader.columns(run_id, name)
        show = [c for c in cols if c not in ("embedding",)]  # vectors are for the Embeddings page
        total = reader.count(run_id, name)
        limit, offset = paginate(total, "runs_table_pages")
        st.dataframe(
            reader.page(run_id, name, columns=show, limit=limit, offset=offset),
            hide_index=True,
            width="stretch",
        )
