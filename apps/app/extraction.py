"""Extraction page: the extracted table (search, filters), candidate functions per attribute,
a document viewer that highlights where each value came from, and LLM tokens used."""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from apps.app.common import metrics_row, paginate, pick_run, section
from apps.app.data import WorkspaceReader, quote_ident
from toolkit import plots
from toolkit.errors import LoomError

MAX_DOC_CHARS = 20_000
COLOURS = ("#ffe08a", "#a6e3a1", "#9ecbff", "#f5a3c7", "#c3a6ff", "#ffb38a", "#8fe3d9")


def attributes(reader: WorkspaceReader, run_id: str) -> list[str]:
    return [c for c in reader.require(run_id, "table") if c != "doc_id"]


def table_filter(attrs: list[str], search: str, attr: str | None, cond: str, value: str):
    """WHERE clause and params for the extracted table's search box and attribute filter."""
    where, params = [], []
    if search and attrs:
        hay = " || ' ' || ".join(f"coalesce(CAST({quote_ident(a)} AS VARCHAR), '')" for a in attrs)
        where.append(f"(CAST(doc_id AS VARCHAR) || ' ' || {hay}) ILIKE ?")
        params.append(f"%{search}%")
    if attr:
        col = f"CAST({quote_ident(attr)} AS VARCHAR)"
        if cond == "is empty":
            where.append(f"({col} IS NULL OR trim({col}) = '')")
        elif cond == "is filled":
            where.append(f"({col} IS NOT NULL AND trim({col}) <> '')")
        elif cond == "contains" and value:
            where.append(f"{col} ILIKE ?")
            params.append(f"%{value}%")
    return " AND ".join(where), params


def highlight(text: str, spans: pd.DataFrame, attrs: list[str]) -> str:
    """HTML of `text` with each provenance span (start, end, attribute) marked in a colour."""
    text = text[:MAX_DOC_CHARS]
    good = spans[(spans["start"] >= 0) & (spans["end"] > spans["start"])].sort_values("start")
    out, pos = [], 0
    for s in good.itertuples(index=False):
        start, end = int(s.start), min(int(s.end), len(text))
        if start < pos or start >= len(text):
            continue  # overlapping or beyond the shown text
        colour = (
            COLOURS[attrs.index(s.attribute) % len(COLOURS)] if s.attribute in attrs else "#ddd"
        )
        out.append(html.escape(text[pos:start]))
        out.append(
            f'<mark style="background:{colour}" title="{html.escape(str(s.attribute))}">'
            f"{html.escape(text[start:end])}<sub>{html.escape(str(s.attribute))}</sub></mark>"
        )
        pos = end
    out.append(html.escape(text[pos:]))
    body = "".join(out).replace("\n", "<br>")
    return (
        '<div style="font-family:monospace;font-size:0.85rem;max-height:480px;overflow:auto;'
        f'border:1px solid #ddd;padding:0.6rem;border-radius:4px">{body}</div>'
    )


def render(reader: WorkspaceReader) -> None:
    run_id = pick_run(reader, ("extract",), key="extract_run")
    if run_id is None:
        return
    metrics_row(reader.run(run_id)["summary"])
    tab_table, tab_funcs, tab_doc, tab_tokens = st.tabs(
        ["Extracted table", "Candidate functions", "Documents", "LLM tokens"]
    )
    with tab_table, section("Extracted table"):
        _table(reader, run_id)
    with tab_funcs, section("Candidate functions"):
        _functions(reader, run_id)
    with tab_doc, section("Document viewer"):
        _documents(reader, run_id)
    with tab_tokens, section("LLM tokens"):
        _tokens(reader, run_id)


def _table(reader: WorkspaceReader, run_id: str) -> None:
    attrs = attributes(reader, run_id)
    st.subheader(f"Extracted table ({len(attrs)} attributes)")
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    search = c1.text_input("Search all values", key="extract_search")
    attr = c2.selectbox("Filter attribute", ["(none)", *attrs], key="extract_attr")
    cond = c3.selectbox("Condition", ["is filled", "is empty", "contains"], key="extract_cond")
    value = c4.text_input("Value", key="extract_value") if cond == "contains" else ""
    where, params = table_filter(attrs, search, None if attr == "(none)" else attr, cond, value)
    total = reader.count(run_id, "table", where, params)
    limit, offset = paginate(total, "extract_pages")
    st.dataframe(
        reader.page(
            run_id,
            "table",
            where=where,
            params=params,
            order_by="doc_id",
            limit=limit,
            offset=offset,
        ),
        hide_index=True,
        width="stretch",
    )
    if reader.has_table(run_id, "gold"):
        st.subheader("Agreement with gold")
        st.dataframe(_gold_agreement(reader, run_id, attrs), hide_index=True)


def _gold_agreement(reader: WorkspaceReader, run_id: str, attrs: list[str]) -> pd.DataFrame:
    gold_cols = reader.require(run_id, "gold")
    rows = []
    for a in attrs:
        if a not in gold_cols:
            continue
        norm = "lower(trim(CAST({} AS VARCHAR)))"
        res = reader.query(
            f"SELECT count(*) AS n, sum(CASE WHEN {norm.format('t.' + quote_ident(a))} = "
            f"{norm.format('g.' + quote_ident(a))} THEN 1 ELSE 0 END) AS same "
            f"FROM {reader.rel(run_id, 'table')} t JOIN {reader.rel(run_id, 'gold')} g "
            f"USING (doc_id) WHERE g.{quote_ident(a)} IS NOT NULL"
        ).iloc[0]
        n = int(res["n"])
        rows.append(
            {
                "attribute": a,
                "documents": n,
                "exact_match": (float(res["same"] or 0) / n) if n else None,
            }
        )
    return pd.DataFrame(rows, columns=["attribute", "documents", "exact_match"])


def _functions(reader: WorkspaceReader, run_id: str) -> None:
    if not reader.has_table(run_id, "functions"):
        st.info("This run has no candidate functions (direct extraction only).")
        return
    reader.require(run_id, "functions")
    funcs = reader.load(run_id, "functions")
    attrs = sorted(funcs["attribute"].astype(str).unique())
    c1, c2 = st.columns(2)
    attr = c1.selectbox("Attribute", attrs, key="extract_func_attr")
    status = c2.radio(
        "Functions", ["all", "kept", "dropped"], horizontal=True, key="extract_func_kept"
    )
    shown = funcs[funcs["attribute"].astype(str) == attr]
    if status != "all":
        shown = shown[shown["kept"].astype(bool) == (status == "kept")]
    st.caption(
        f"{len(shown)} of {int((funcs['attribute'].astype(str) == attr).sum())} candidates for "
        f"{attr!r}; {int(funcs.loc[funcs['attribute'].astype(str) == attr, 'kept'].astype(bool).sum())} kept"
    )
    cols = [c for c in shown.columns if c != "code"]
    st.dataframe(shown[cols], hide_index=True, width="stretch")
    if not shown.empty:
        fid = st.selectbox(
            "Show the code of", shown["function_id"].astype(str).tolist(), key="extract_func_id"
        )
        row = shown[shown["function_id"].astype(str) == fid].iloc[0]
        if "reason" in row and isinstance(row["reason"], str) and row["reason"]:
            st.caption(f"{'kept' if bool(row['kept']) else 'dropped'}: {row['reason']}")
        st.code(str(row["code"]), language="python")


def _documents(reader: WorkspaceReader, run_id: str) -> None:
    if not reader.has_table(run_id, "documents"):
        st.info("This run did not store its documents, so there is nothing to highlight.")
        return
    reader.require(run_id, "documents")
    total = reader.count(run_id, "documents")
    if total == 0:
        st.info("The run has no documents.")
        return
    c1, c2 = st.columns([1, 3])
    i = c1.number_input(f"Document (1–{total:,})", 1, total, 1, key="extract_doc_i")
    doc = reader.page(run_id, "documents", order_by="doc_id", limit=1, offset=int(i) - 1).iloc[0]
    c2.markdown(f"**{doc['doc_id']}** · `{doc.get('path', '')}`")
    attrs = attributes(reader, run_id) if reader.has_table(run_id, "table") else []
    if attrs:
        values = reader.page(run_id, "table", where="doc_id = ?", params=[doc["doc_id"]], limit=1)
        if len(values):
            st.dataframe(values, hide_index=True, width="stretch")
    spans = pd.DataFrame(columns=["attribute", "start", "end"])
    if reader.has_table(run_id, "provenance"):
        reader.require(run_id, "provenance")
        spans = reader.page(
            run_id, "provenance", where="doc_id = ?", params=[doc["doc_id"]], limit=10_000
        )
    text = str(doc["text"])
    if len(text) > MAX_DOC_CHARS:
        st.caption(f"Showing the first {MAX_DOC_CHARS:,} of {len(text):,} characters.")
    located = (
        int(((spans["start"] >= 0) & (spans["end"] > spans["start"])).sum()) if len(spans) else 0
    )
    st.caption(f"{located} value(s) located in the text; hover a highlight for its attribute.")
    st.html(highlight(text, spans, attrs))


def direct_estimate(reader: WorkspaceReader, run_id: str, tok: pd.DataFrame) -> dict | None:
    """Tokens direct extraction would need for every document, from the sampled direct stage."""
    sampled = tok[tok["stage"].astype(str) == "sample_direct"]
    if sampled.empty:
        return None
    try:
        report = reader_json(reader, run_id, "report")
        n_docs, n_sample = int(report["documents"]), len(report["sample"])
    except (LoomError, KeyError, TypeError, ValueError):
        return None
    if not n_sample:
        return None
    per_doc = float(sampled["total_tokens"].sum()) / n_sample
    return {
        "documents": n_docs,
        "sampled": n_sample,
        "per_doc": per_doc,
        "tokens": per_doc * n_docs,
    }


def reader_json(reader: WorkspaceReader, run_id: str, name: str):
    """A run's small JSON artefact (e.g. the extraction report)."""
    import json

    path = reader.path / "runs" / run_id / f"{name}.json"
    if not path.exists():
        raise LoomError(f"run {run_id!r} has no {name}.json")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise LoomError(f"{name}.json of run {run_id!r} is not valid JSON: {e}") from e


def _tokens(reader: WorkspaceReader, run_id: str) -> None:
    if not reader.has_table(run_id, "tokens"):
        st.info("This run recorded no LLM token counts.")
        return
    reader.require(run_id, "tokens")
    tok = reader.load(run_id, "tokens")
    tok["total_tokens"] = tok["prompt_tokens"].fillna(0) + tok["completion_tokens"].fillna(0)
    by_mode = tok.groupby("mode", as_index=False)["total_tokens"].sum()
    cols = st.columns(len(by_mode) + 1)
    for col, r in zip(cols, by_mode.itertuples(index=False)):
        col.metric(f"{r.mode} tokens", f"{int(r.total_tokens):,}")
    modes = dict(zip(by_mode["mode"], by_mode["total_tokens"]))
    direct = next((v for k, v in modes.items() if str(k) == "direct"), None)
    code = next((v for k, v in modes.items() if str(k).startswith("code")), None)
    if direct and code:
        cols[-1].metric("direct / code tokens", f"{direct / code:,.1f}x")
    est = direct_estimate(reader, run_id, tok)
    if est is not None:
        used = float(tok["total_tokens"].sum())
        st.markdown(
            f"Direct extraction of all **{est['documents']:,}** documents would take about "
            f"**{est['tokens']:,.0f}** tokens ({est['per_doc']:,.0f} per document, measured on the "
            f"{est['sampled']} sampled documents); this run used **{used:,.0f}**: "
            f"**{est['tokens'] / max(used, 1):,.1f}x** fewer."
        )
    st.altair_chart(
        plots.bar_chart(tok, "stage", "total_tokens", color="mode", title="LLM tokens by stage"),
        width="stretch",
    )
    st.dataframe(tok, hide_index=True)
