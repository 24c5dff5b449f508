"""Linking page: matched pairs with scores, a threshold slider that updates precision/recall
against gold, score distributions, and a cluster browser for dedup runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from apps.app.common import metrics_row, paginate, pick_run, section
from apps.app.data import WorkspaceReader, quote_ident
from toolkit import plots
from toolkit.metrics import precision_recall_f1_curve

KEYS = {
    "link": ("left_row", "right_row"),
    "dedup": ("row_a", "row_b"),
    "cluster": ("row_a", "row_b"),
}


def scored_pairs(
    reader: WorkspaceReader, run_id: str, kind: str
) -> tuple[pd.DataFrame, int | None]:
    """(score, is_gold) per pair and the number of gold pairs (None without gold)."""
    a, b = KEYS[kind]
    reader.require(run_id, "pairs")
    if not reader.has_table(run_id, "gold"):
        return reader.query(f"SELECT score FROM {reader.rel(run_id, 'pairs')}"), None
    reader.require(run_id, "gold")
    if kind in ("dedup", "cluster"):  # unordered pairs
        key = "least({x}.row_a, {x}.row_b) = least({y}.row_a, {y}.row_b) AND greatest({x}.row_a, {x}.row_b) = greatest({y}.row_a, {y}.row_b)"
        cond = key.format(x="p", y="g")
        gold_sql = f"SELECT DISTINCT least(row_a, row_b) AS row_a, greatest(row_a, row_b) AS row_b FROM {reader.rel(run_id, 'gold')}"
    else:
        cond = f"p.{a} = g.{a} AND p.{b} = g.{b}"
        gold_sql = f"SELECT DISTINCT {a}, {b} FROM {reader.rel(run_id, 'gold')}"
    df = reader.query(
        f"SELECT p.score, g.{a} IS NOT NULL AS is_gold FROM {reader.rel(run_id, 'pairs')} p "
        f"LEFT JOIN ({gold_sql}) g ON {cond}"
    )
    n_gold = int(reader.query(f"SELECT count(*) AS n FROM ({gold_sql})")["n"].iloc[0])
    return df, n_gold


def precision_recall(
    scores: np.ndarray, is_gold: np.ndarray, n_gold: int, thresholds
) -> pd.DataFrame:
    """Precision, recall and F1 of keeping pairs with score >= t, for each threshold t."""
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], is_gold[order].astype(np.int64)
    tp_cum = np.r_[0, np.cumsum(g)]
    t = np.asarray(list(thresholds), dtype=float)
    kept = np.searchsorted(-s, -t, side="right").astype(np.int64)
    tp = tp_cum[kept]
    p, r, f1 = precision_recall_f1_curve(tp, kept, n_gold)
    p = np.where(kept > 0, p, 1.0)  # nothing kept: no false positive, precision 1
    return pd.DataFrame(
        {
            "threshold": t,
            "kept": kept,
            "tp": tp,
            "precision": p,
            "recall": r,
            "f1": f1,
        }
    )


def render(reader: WorkspaceReader) -> None:
    run_id = pick_run(reader, ("link", "dedup", "cluster"), key="link_run")
    if run_id is None:
        return
    info = reader.run(run_id)
    kind = info["kind"]
    metrics_row(info["summary"])
    if kind in ("dedup", "cluster"):
        tab_pairs, tab_clusters = st.tabs(["Pairs", "Clusters"])
        with tab_pairs, section("Pairs"):
            _pairs(reader, run_id, kind)
        with tab_clusters, section("Clusters"):
            _clusters(reader, run_id)
    else:
        with section("Pairs"):
            _pairs(reader, run_id, kind)


def _pairs(reader: WorkspaceReader, run_id: str, kind: str) -> None:
    if not reader.has_table(run_id, "pairs"):
        st.info("This run wrote no pairs table.")
        return
    a, b = KEYS[kind]
    df, n_gold = scored_pairs(reader, run_id, kind)
    if df.empty:
        st.info("The run found no candidate pairs.")
        return
    scores = df["score"].to_numpy(dtype=np.float64)
    lo, hi = float(np.nanmin(scores)), float(np.nanmax(scores))
    default = float(info_threshold(reader, run_id, lo, hi))
    step = max((hi - lo) / 200, 1e-4)
    t = st.slider(
        "Threshold (keep pairs with score ≥ threshold)",
        lo,
        max(hi, lo + step),
        default,
        step,
        key="link_threshold",
    )
    kept = int((scores >= t).sum())
    cols = st.columns(4)
    cols[0].metric("pairs kept", f"{kept:,} of {len(scores):,}")
    if n_gold is not None:
        is_gold = df["is_gold"].to_numpy(dtype=bool)
        at = precision_recall(scores, is_gold, n_gold, [t]).iloc[0]
        cols[1].metric("precision", f"{at.precision:.3f}")
        cols[2].metric("recall", f"{at.recall:.3f}")
        cols[3].metric("F1", f"{at.f1:.3f}")
        c1, c2 = st.columns(2)
        c1.altair_chart(plots.score_distribution(scores, is_gold, threshold=t), width="stretch")
        curve = precision_recall(scores, is_gold, n_gold, np.linspace(lo, hi, 60))
        c2.altair_chart(plots.precision_recall_curve(curve, threshold=t), width="stretch")
    else:
        st.caption("No gold pairs in this run: precision/recall cannot be computed.")
        st.altair_chart(plots.score_distribution(scores, threshold=t), width="stretch")

    st.subheader("Pairs")
    c1, c2 = st.columns([2, 3])
    views = ["above threshold", "below threshold", "all"]
    if n_gold is not None:
        views += ["false positives (above, not gold)", "near misses (below, gold)"]
    view = c1.selectbox("Show", views, key="link_view")
    search = c2.text_input("Key text contains", key="link_search")
    cols_all = reader.columns(run_id, "pairs")
    text_cols = [c for c in cols_all if c not in (a, b, "score")]
    where, params = [], []
    if view.startswith("above") or view.startswith("false"):
        where.append("p.score >= ?")
        params.append(t)
    elif view.startswith("below") or view.startswith("near"):
        where.append("p.score < ?")
        params.append(t)
    gold_join = ""
    if n_gold is not None:
        if kind in ("dedup", "cluster"):
            gold_join = (
                f" LEFT JOIN (SELECT DISTINCT least(row_a, row_b) AS ga, greatest(row_a, row_b) AS gb "
                f"FROM {reader.rel(run_id, 'gold')}) g ON least(p.row_a, p.row_b) = g.ga "
                "AND greatest(p.row_a, p.row_b) = g.gb"
            )
        else:
            gold_join = (
                f" LEFT JOIN (SELECT DISTINCT {a} AS ga, {b} AS gb FROM {reader.rel(run_id, 'gold')})"
                f" g ON p.{a} = g.ga AND p.{b} = g.gb"
            )
        if view.startswith("false"):
            where.append("g.ga IS NULL")
        elif view.startswith("near"):
            where.append("g.ga IS NOT NULL")
    if search and text_cols:
        hay = " || ' ' || ".join(
            f"coalesce(CAST(p.{quote_ident(c)} AS VARCHAR), '')" for c in text_cols
        )
        where.append(f"({hay}) ILIKE ?")
        params.append(f"%{search}%")
    gold_col = ", g.ga IS NOT NULL AS gold" if n_gold is not None else ""
    base = f"SELECT p.*{gold_col} FROM {reader.rel(run_id, 'pairs')} p{gold_join}"
    if where:
        base += " WHERE " + " AND ".join(where)
    total = int(reader.query(f"SELECT count(*) AS n FROM ({base})", params)["n"].iloc[0])
    limit, offset = paginate(total, "link_pages")
    page = reader.query(f"{base} ORDER BY p.score DESC LIMIT {limit} OFFSET {offset}", params)
    st.dataframe(page, hide_index=True, width="stretch")


def info_threshold(reader: WorkspaceReader, run_id: str, lo: float, hi: float) -> float:
    """The run's own threshold (params or summary) when it lies in the score range, else the middle."""
    info = reader.run(run_id)
    for src in (info["summary"], info["params"]):
        t = src.get("threshold") if isinstance(src, dict) else None
        if isinstance(t, int | float) and lo <= t <= hi:
            return float(t)
    return (lo + hi) / 2


def _clusters(reader: WorkspaceReader, run_id: str) -> None:
    if not reader.has_table(run_id, "clusters"):
        st.info("This dedup run wrote no clusters table.")
        return
    reader.require(run_id, "clusters")
    rel = reader.rel(run_id, "clusters")
    sizes = reader.query(
        f"SELECT size, count(*) AS clusters FROM (SELECT cluster_id, count(*) AS size FROM {rel} "
        "GROUP BY cluster_id) GROUP BY size ORDER BY size"
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("records", f"{int((sizes['size'] * sizes['clusters']).sum()):,}")
    c2.metric("clusters", f"{int(sizes['clusters'].sum()):,}")
    c3.metric(
        "clusters with duplicates", f"{int(sizes.loc[sizes['size'] > 1, 'clusters'].sum()):,}"
    )
    sizes["size"] = sizes["size"].astype(str)
    st.altair_chart(
        plots.bar_chart(sizes, "size", "clusters", title="Cluster sizes"), width="stretch"
    )
    cols = reader.columns(run_id, "clusters")
    text_cols = [c for c in cols if c not in ("row", "cluster_id")]
    c1, c2 = st.columns([1, 3])
    min_size = c1.number_input("Minimum cluster size", 1, 1000, 2, key="dedup_min_size")
    search = c2.text_input("Record text contains", key="dedup_search")
    params: list = [int(min_size)]
    having = "count(*) >= ?"
    match = ""
    if search and text_cols:
        hay = " || ' ' || ".join(
            f"coalesce(CAST({quote_ident(c)} AS VARCHAR), '')" for c in text_cols
        )
        match = f" WHERE cluster_id IN (SELECT cluster_id FROM {rel} WHERE ({hay}) ILIKE ?)"
        params = [f"%{search}%", int(min_size)]
    first = quote_ident(text_cols[0]) if text_cols else "CAST(row AS VARCHAR)"
    base = (
        f"SELECT cluster_id, count(*) AS size, min(CAST({first} AS VARCHAR)) AS example FROM {rel}"
        f"{match} GROUP BY cluster_id HAVING {having}"
    )
    total = int(reader.query(f"SELECT count(*) AS n FROM ({base})", params)["n"].iloc[0])
    limit, offset = paginate(total, "dedup_pages")
    page = reader.query(
        f"{base} ORDER BY size DESC, cluster_id LIMIT {limit} OFFSET {offset}", params
    )
    st.dataframe(page, hide_index=True, width="stretch")
    if not page.empty:
        cid = st.selectbox("Open cluster", page["cluster_id"].tolist(), key="dedup_cluster")
        members = reader.page(
            run_id, "clusters", where="cluster_id = ?", params=[cid], order_by="row", limit=500
        )
        st.dataframe(members, hide_index=True, width="stretch")
