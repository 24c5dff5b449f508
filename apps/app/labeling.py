"""Labeling page: LF summary, LF overlap/conflict heat map, estimated vs empirical accuracy,
class balance, label confidence, an example browser, and Liger/Embroid smoothing results."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.app.common import metrics_row, paginate, pick_run, section
from apps.app.data import WorkspaceReader, quote_ident
from toolkit import plots

MAX_HEATMAP_LFS = 40
RESERVED = {"row", "text", "gold", "pred", "confidence", "_pos"}


def lf_names(reader: WorkspaceReader, run_id: str) -> list[str]:
    """LF names: the columns of L (a stray `row` column is not an LF)."""
    return [c for c in reader.columns(run_id, "L") if c not in ("row", "file_row_number")]


def prob_columns(reader: WorkspaceReader, run_id: str) -> list[str]:
    cols = [c for c in reader.require(run_id, "probs") if c.startswith("prob_")]
    return sorted(cols, key=lambda c: int(c.split("_", 1)[1]) if c[5:].isdigit() else 0)


def pair_stats(reader: WorkspaceReader, run_id: str, names: list[str]) -> pd.DataFrame:
    """Overlap and conflict fractions of every LF pair, computed in SQL over the Parquet file."""
    q = [quote_ident(n) for n in names]
    exprs = ["count(*) AS n"]
    for i, a in enumerate(q):
        for j, b in enumerate(q):
            if j < i:
                continue
            exprs.append(f"sum(CASE WHEN {a} <> -1 AND {b} <> -1 THEN 1 ELSE 0 END) AS o_{i}_{j}")
            if i != j:
                exprs.append(
                    f"sum(CASE WHEN {a} <> -1 AND {b} <> -1 AND {a} <> {b} THEN 1 ELSE 0 END)"
                    f" AS c_{i}_{j}"
                )
    res = reader.query(f"SELECT {', '.join(exprs)} FROM {reader.rel(run_id, 'L')}").iloc[0]
    n = max(int(res["n"]), 1)
    rows = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            lo, hi = min(i, j), max(i, j)
            rows.append(
                {
                    "lf_a": a,
                    "lf_b": b,
                    "overlap": float(res[f"o_{lo}_{hi}"] or 0) / n,
                    "conflict": 0.0 if i == j else float(res[f"c_{lo}_{hi}"] or 0) / n,
                }
            )
    return pd.DataFrame(rows)


def example_query(
    reader: WorkspaceReader,
    run_id: str,
    names: list[str],
    mode: str,
    lf: str | None,
    threshold: float,
    classes: list[int],
    search: str,
) -> tuple[str, str, list]:
    """(select-from SQL, where SQL, params) joining data, L (by position) and probs."""
    data_cols = reader.require(run_id, "data")
    has_probs = reader.has_table(run_id, "probs")
    has_gold = "gold" in data_cols
    votes = [f"nullif(l.{quote_ident(n)}, -1)" for n in names]
    sel = ["d.row", "d.text"] + (["d.gold"] if has_gold else [])
    joins = (
        f"FROM (SELECT *, file_row_number AS _pos FROM {reader.rel(run_id, 'data', True)}) d "
        f"JOIN (SELECT * EXCLUDE (file_row_number), file_row_number AS _pos "
        f"FROM {reader.rel(run_id, 'L', True)}) l USING (_pos)"
    )
    if has_probs:
        pcols = prob_columns(reader, run_id)
        conf = f"greatest({', '.join('p.' + quote_ident(c) for c in pcols)})" if pcols else "NULL"
        sel += ["p.pred", f"{conf} AS confidence"]
        joins += f" LEFT JOIN {reader.rel(run_id, 'probs')} p ON p.row = d.row"
    for n in names:
        alias = n if n not in RESERVED else f"lf:{n}"
        sel.append(f"l.{quote_ident(n)} AS {quote_ident(alias)}")
    where, params = [], []
    if mode == "an LF fired" and lf:
        where.append(f"l.{quote_ident(lf)} <> -1")
    elif mode == "LFs disagree" and votes:
        where.append(f"greatest({', '.join(votes)}) <> least({', '.join(votes)})")
    elif mode == "no LF fired" and votes:
        where.append(f"coalesce({', '.join(votes)}) IS NULL")
    elif mode == "label model unsure" and has_probs:
        where.append(f"({conf}) < ?")
        params.append(float(threshold))
    elif mode == "prediction wrong (gold)" and has_gold and has_probs:
        where.append("d.gold <> -1 AND p.pred <> d.gold")
    if classes and has_probs:
        where.append(f"p.pred IN ({', '.join('?' for _ in classes)})")
        params += [int(c) for c in classes]
    if search:
        where.append("d.text ILIKE ?")
        params.append(f"%{search}%")
    return f"SELECT {', '.join(sel)} {joins}", " AND ".join(where), params


def render(reader: WorkspaceReader) -> None:
    run_id = pick_run(reader, ("label",), key="label_run")
    if run_id is None:
        return
    info = reader.run(run_id)
    metrics_row(info["summary"])
    names: list[str] = []
    with section("Label matrix"):
        names = lf_names(reader, run_id)
        st.caption(f"{len(names)} labeling functions · {reader.count(run_id, 'L'):,} rows")

    tab_lfs, tab_model, tab_examples, tab_smooth = st.tabs(
        ["LFs", "Label model", "Examples", "Liger / Embroid"]
    )
    with tab_lfs:
        with section("LF summary"):
            st.subheader("LF summary")
            summary = reader.load(run_id, "lf_summary")
            reader.require(run_id, "lf_summary")
            st.dataframe(summary, hide_index=True, width="stretch")
        if names:
            with section("LF heat map"):
                st.subheader("Overlaps and conflicts between LFs")
                c1, c2 = st.columns([3, 1])
                chosen = c1.multiselect(
                    "LFs in the heat map",
                    names,
                    default=names[: min(len(names), 15)],
                    key="label_heat_lfs",
                )
                value = c2.radio("Show", ["conflict", "overlap"], key="label_heat_value")
                if chosen:
                    stats = pair_stats(reader, run_id, chosen[:MAX_HEATMAP_LFS])
                    st.altair_chart(plots.lf_heatmap(stats, value=value), width="stretch")
    with tab_model:
        with section("Estimated vs empirical accuracy"):
            st.subheader("Estimated vs empirical LF accuracy")
            acc = _accuracy_table(reader, run_id)
            if acc is None:
                st.info("This run has no label-model accuracy estimates (no `weights` table).")
            elif acc["emp_acc"].notna().any():
                st.altair_chart(plots.accuracy_comparison(acc), width="stretch")
                st.dataframe(acc, hide_index=True)
            else:
                st.info("No gold labels in this run, so only the estimated accuracies are shown.")
                st.dataframe(acc, hide_index=True)
        if reader.has_table(run_id, "probs"):
            c1, c2 = st.columns(2)
            with c1, section("Class balance"):
                st.subheader("Class balance")
                st.altair_chart(_class_balance(reader, run_id), width="stretch")
            with c2, section("Label confidence"):
                st.subheader("Label confidence")
                pcols = prob_columns(reader, run_id)
                conf = reader.query(
                    f"SELECT greatest({', '.join(quote_ident(c) for c in pcols)}) AS c "
                    f"FROM {reader.rel(run_id, 'probs')}"
                )["c"]
                bins = st.slider("Bins", 5, 50, 20, key="label_bins")
                st.altair_chart(
                    plots.confidence_histogram(conf, bins=bins, k=len(pcols)), width="stretch"
                )
        else:
            st.info("This run has no probabilistic labels (no `probs` table).")
    with tab_examples, section("Example browser"):
        _examples(reader, run_id, names)
    with tab_smooth:
        _smoothing(reader, run_id)


def _accuracy_table(reader: WorkspaceReader, run_id: str) -> pd.DataFrame | None:
    summary = reader.load(run_id, "lf_summary") if reader.has_table(run_id, "lf_summary") else None
    est = None
    if reader.has_table(run_id, "weights"):
        reader.require(run_id, "weights")
        est = reader.load(run_id, "weights", ["lf", "accuracy"]).rename(
            columns={"accuracy": "est_acc"}
        )
    elif summary is not None and "est_acc" in summary.columns:
        est = summary[["lf", "est_acc"]]
    if est is None:
        return None
    emp = (
        summary[["lf", "emp_acc"]]
        if summary is not None and "emp_acc" in summary.columns
        else pd.DataFrame({"lf": est["lf"], "emp_acc": float("nan")})
    )
    return est.merge(emp, on="lf", how="left")


def _class_balance(reader: WorkspaceReader, run_id: str):
    pred = reader.query(
        f"SELECT pred AS class, count(*) AS n FROM {reader.rel(run_id, 'probs')} GROUP BY pred"
    ).assign(source="label model")
    parts = [pred]
    if "gold" in reader.columns(run_id, "data"):
        gold = reader.query(
            f"SELECT gold AS class, count(*) AS n FROM {reader.rel(run_id, 'data')} "
            "WHERE gold <> -1 GROUP BY gold"
        ).assign(source="gold")
        parts.append(gold)
    df = pd.concat(parts, ignore_index=True)
    df["class"] = df["class"].map(lambda c: "abstain" if c == -1 else str(c))
    df["fraction"] = df["n"] / df.groupby("source")["n"].transform("sum")
    return plots.bar_chart(df.sort_values("class"), "class", "fraction", color="source")


def _examples(reader: WorkspaceReader, run_id: str, names: list[str]) -> None:
    st.subheader("Examples")
    has_probs = reader.has_table(run_id, "probs")
    has_gold = "gold" in reader.columns(run_id, "data")
    modes = ["all rows", "an LF fired", "LFs disagree", "no LF fired"]
    if has_probs:
        modes.append("label model unsure")
    if has_probs and has_gold:
        modes.append("prediction wrong (gold)")
    c1, c2, c3 = st.columns([2, 2, 3])
    mode = c1.selectbox("Show rows where", modes, key="label_mode")
    lf = threshold = None
    if mode == "an LF fired":
        lf = c2.selectbox("LF", names, key="label_lf")
    elif mode == "label model unsure":
        threshold = c2.slider("confidence below", 0.0, 1.0, 0.7, 0.05, key="label_unsure")
    classes: list[int] = []
    if has_probs:
        present = reader.query(
            f"SELECT DISTINCT pred FROM {reader.rel(run_id, 'probs')} ORDER BY pred"
        )["pred"].tolist()
        classes = c3.multiselect("Predicted class", present, key="label_classes")
    search = st.text_input("Text contains", key="label_search")
    select, where, params = example_query(
        reader, run_id, names, mode, lf, threshold or 0.0, classes, search
    )
    base = f"{select}" + (f" WHERE {where}" if where else "")
    total = int(reader.query(f"SELECT count(*) AS n FROM ({base})", params)["n"].iloc[0])
    limit, offset = paginate(total, "label_pages")
    page = reader.query(f"{base} ORDER BY d.row LIMIT {limit} OFFSET {offset}", params)
    st.dataframe(
        page,
        hide_index=True,
        width="stretch",
        column_config={"text": st.column_config.TextColumn(width="large")},
    )


def _smoothing(reader: WorkspaceReader, run_id: str) -> None:
    has_cov = reader.has_table(run_id, "coverage")
    has_part = reader.has_table(run_id, "partition_accuracy")
    if not (has_cov or has_part):
        st.info(
            "This run has no Liger or Embroid results (no `coverage` or `partition_accuracy` "
            "table). Pick a smoothing run above to see coverage before/after and per-partition "
            "accuracies."
        )
        return
    if has_cov:
        with section("Coverage before/after"):
            st.subheader("Coverage before / after smoothing")
            reader.require(run_id, "coverage")
            cov = reader.load(run_id, "coverage")
            st.altair_chart(plots.coverage_before_after(cov), width="stretch")
            st.dataframe(cov, hide_index=True)
    if has_part:
        with section("Per-partition accuracy"):
            st.subheader("Per-partition LF accuracy")
            reader.require(run_id, "partition_accuracy")
            part = reader.load(run_id, "partition_accuracy")
            st.altair_chart(plots.partition_heatmap(part), width="stretch")
            st.dataframe(part, hide_index=True)
