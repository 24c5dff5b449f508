"""Embeddings page: a 2-D projection coloured by label, LF vote or cluster, with hover text.

Label runs that stored `embeddings_2d` are drawn as stored; for `embed` runs the app
projects a sample of the stored vectors (UMAP when installed, else t-SNE or PCA) and caches it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from apps.app.common import pick_run, section
from apps.app.data import WorkspaceReader, quote_ident
from toolkit import plots

METHODS = ("auto", "pca", "tsne", "umap")


@st.cache_data(max_entries=16, show_spinner="Projecting embeddings ...")
def _projection(
    path: str,
    stamp: float,
    run_id: str,
    n: int,
    method: str,
    clusters: int,
    _reader: WorkspaceReader,
) -> tuple[pd.DataFrame, str]:
    return project_embed_run(_reader, run_id, n, method, clusters)


def project_embed_run(
    reader: WorkspaceReader, run_id: str, n: int, method: str = "auto", clusters: int = 5
) -> tuple[pd.DataFrame, str]:
    """Project a repeatable sample of an embed run's vectors; adds a k-means `cluster` column."""
    reader.require(run_id, "embeddings")
    sample = reader.query(
        f"SELECT id, text, embedding FROM {reader.rel(run_id, 'embeddings')} "
        f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7) ORDER BY id"
    )
    vecs = np.stack([np.asarray(v, dtype=np.float32) for v in sample["embedding"]])
    coords, used = plots.project_2d(vecs, method=method)
    out = sample[["id", "text"]].copy()
    out["x"], out["y"] = coords[:, 0], coords[:, 1]
    if clusters > 1:
        from sklearn.cluster import KMeans

        k = min(clusters, len(out))
        out["cluster"] = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(vecs)
    return out, used


def label_points(reader: WorkspaceReader, run_id: str, n: int) -> pd.DataFrame:
    """A label run's stored 2-D points joined with text, gold, prediction and LF votes."""
    reader.require(run_id, "embeddings_2d")
    data_cols = reader.require(run_id, "data")
    sel = ["e.row", "e.x", "e.y", "d.text"] + (["d.gold"] if "gold" in data_cols else [])
    joins = (
        f"FROM {reader.rel(run_id, 'embeddings_2d')} e JOIN (SELECT *, file_row_number AS _pos "
        f"FROM {reader.rel(run_id, 'data', True)}) d ON d.row = e.row"
    )
    if reader.has_table(run_id, "probs"):
        sel.append("p.pred")
        joins += f" LEFT JOIN {reader.rel(run_id, 'probs')} p ON p.row = e.row"
    if reader.has_table(run_id, "L"):
        lfs = [c for c in reader.columns(run_id, "L") if c != "row"]
        sel += [f"l.{quote_ident(c)} AS {quote_ident('LF ' + c)}" for c in lfs]
        joins += (
            " LEFT JOIN (SELECT * EXCLUDE (file_row_number), file_row_number AS _pos FROM "
            f"{reader.rel(run_id, 'L', True)}) l ON l._pos = d._pos"
        )
    return reader.query(
        f"SELECT {', '.join(sel)} {joins} USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)"
    )


def render(reader: WorkspaceReader) -> None:
    run_id = pick_run(reader, ("label", "embed"), key="emb_run")
    if run_id is None:
        return
    kind = reader.run(run_id)["kind"]
    with section("Projection"):
        if kind == "label":
            _label_run(reader, run_id)
        else:
            _embed_run(reader, run_id)


def _label_run(reader: WorkspaceReader, run_id: str) -> None:
    if not reader.has_table(run_id, "embeddings_2d"):
        st.info(
            "This label run stored no 2-D embedding (`embeddings_2d` table). Pick an `embed` run, "
            "or a label run made by `loom demo`, which stores one."
        )
        return
    total = reader.count(run_id, "embeddings_2d")
    c1, c2 = st.columns(2)
    n = (
        c1.slider("Points", min(50, total), max(total, 1), min(total, 2000), key="emb_label_n")
        if total > 50
        else total
    )
    pts = label_points(reader, run_id, n)
    options = [c for c in ("pred", "gold") if c in pts.columns] + [
        c for c in pts.columns if c.startswith("LF ")
    ]
    color = c2.selectbox("Colour by", options or ["(none)"], key="emb_label_color")
    color = None if color == "(none)" else color
    if color:
        pts[color] = pts[color].map(lambda v: "abstain" if v == -1 else str(v))
    tooltip = [c for c in ("row", "text", "gold", "pred") if c in pts.columns]
    st.altair_chart(
        plots.embedding_projection(
            pts, color=color, tooltip=tooltip, title=f"{len(pts):,} rows of {total:,}"
        ),
        width="stretch",
    )
    if color:
        counts = pts[color].value_counts().rename_axis(color).reset_index(name="points")
        st.dataframe(counts, hide_index=True)


def _embed_run(reader: WorkspaceReader, run_id: str) -> None:
    total = reader.count(run_id, "embeddings")
    if total < 3:
        st.info("This embed run has fewer than 3 vectors: nothing to project.")
        return
    c1, c2, c3 = st.columns(3)
    n = c1.slider("Sample size", min(3, total), min(total, 5000), min(total, 1000), key="emb_n")
    try:
        import umap  # noqa: F401

        methods = METHODS
    except ImportError:
        methods = METHODS[:3]
    method = c2.selectbox(
        "Projection",
        methods,
        key="emb_method",
        help="auto: UMAP if installed, else t-SNE (≤3,000 points) or PCA",
    )
    clusters = c3.number_input("k-means clusters", 1, 20, 5, key="emb_clusters")
    pts, used = _projection(
        str(reader.path), reader.stamp(), run_id, n, method, int(clusters), reader
    )
    color = "cluster" if "cluster" in pts.columns else None
    st.altair_chart(
        plots.embedding_projection(
            pts,
            color=color,
            tooltip=["id", "text"],
            title=f"{used.upper()} of {len(pts):,} of {total:,} texts",
        ),
        width="stretch",
    )
    if color:
        st.dataframe(
            pts.groupby("cluster")
            .agg(size=("id", "size"), example=("text", "first"))
            .reset_index(),
            hide_index=True,
            width="stretch",
        )
