"""Altair charts shared by the Streamlit app and notebooks.

Every function aggregates (or samples) its data before building the chart, so a chart
carries at most a few thousand points to the browser whatever the size of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from toolkit.errors import LoomError

MAX_POINTS = 5000


def _as_2d_int(L: np.ndarray | pd.DataFrame, what: str = "L") -> tuple[np.ndarray, list[str]]:
    if isinstance(L, pd.DataFrame):
        names = [str(c) for c in L.columns]
        arr = L.to_numpy()
    else:
        arr = np.asarray(L)
        names = [f"lf_{j}" for j in range(arr.shape[1])] if arr.ndim == 2 else []
    if arr.ndim != 2:
        raise LoomError(f"{what} must be a 2-D label matrix (rows x LFs), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise LoomError(f"{what} must hold integer votes (-1 = abstain, 0..k-1 = class)")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < -1:
        raise LoomError(f"{what} has votes below -1; use -1 for abstain and 0..k-1 for classes")
    return arr, names


def lf_pair_stats(L: np.ndarray | pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table of LF pairs: `lf_a`, `lf_b`, `overlap` and `conflict` (fractions of rows).

    The diagonal holds each LF's coverage (overlap) and 0 conflict.
    """
    arr, default = _as_2d_int(L)
    names = list(names) if names is not None else default
    if len(names) != arr.shape[1]:
        raise LoomError(f"got {len(names)} LF names for a label matrix with {arr.shape[1]} LFs")
    n = max(arr.shape[0], 1)
    fired = (arr != -1).astype(np.float64)
    overlap = fired.T @ fired / n
    rows = []
    for a in range(arr.shape[1]):
        for b in range(arr.shape[1]):
            both = (arr[:, a] != -1) & (arr[:, b] != -1)
            conflict = 0.0 if a == b else float(np.sum(both & (arr[:, a] != arr[:, b])) / n)
            rows.append(
                {
                    "lf_a": names[a],
                    "lf_b": names[b],
                    "overlap": float(overlap[a, b]),
                    "conflict": conflict,
                }
            )
    return pd.DataFrame(rows, columns=["lf_a", "lf_b", "overlap", "conflict"])


def lf_heatmap(
    stats: pd.DataFrame | np.ndarray,
    value: str = "conflict",
    names: Sequence[str] | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Heat map between LFs of `overlap` (coverage on the diagonal) or `conflict`.

    `stats` is the output of `lf_pair_stats` or a label matrix (then it is computed here).
    """
    if not isinstance(stats, pd.DataFrame) or not {"lf_a", "lf_b"} <= set(stats.columns):
        stats = lf_pair_stats(stats, names)
    if value not in ("overlap", "conflict"):
        raise LoomError(f"lf_heatmap value must be 'overlap' or 'conflict', got {value!r}")
    order = list(dict.fromkeys(stats["lf_a"]))
    base = alt.Chart(stats).encode(
        x=alt.X("lf_b:N", sort=order, title=None),
        y=alt.Y("lf_a:N", sort=order, title=None),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            f"{value}:Q",
            scale=alt.Scale(scheme="oranges" if value == "conflict" else "blues"),
            title=value,
        ),
        tooltip=[
            "lf_a",
            "lf_b",
            alt.Tooltip("overlap:Q", format=".3f"),
            alt.Tooltip("conflict:Q", format=".3f"),
        ],
    )
    text = base.mark_text(fontSize=10).encode(text=alt.Text(f"{value}:Q", format=".2f"))
    return (rect + text).properties(title=title or f"LF {value} (fraction of rows)")


def _max_confidence(probs: np.ndarray | pd.DataFrame | pd.Series) -> np.ndarray:
    if isinstance(probs, pd.DataFrame):
        cols = [c for c in probs.columns if str(c).startswith("prob_")] or list(probs.columns)
        probs = probs[cols].to_numpy(dtype=np.float64)
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr.max(axis=1)
    if arr.ndim != 1:
        raise LoomError(f"probs must be (n, k) probabilities or n confidences, got {arr.shape}")
    return arr[~np.isnan(arr)]


def histogram_table(
    values: np.ndarray, bins: int | np.ndarray = 20, lo=None, hi=None
) -> pd.DataFrame:
    """Counts per bin: `start`, `end`, `count` (what the histogram charts draw)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if isinstance(bins, int):
        lo = float(values.min()) if lo is None and values.size else (lo if lo is not None else 0.0)
        hi = float(values.max()) if hi is None and values.size else (hi if hi is not None else 1.0)
        if hi <= lo:
            hi = lo + 1e-9
        edges = np.linspace(lo, hi, bins + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    counts, edges = np.histogram(values, bins=edges)
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:], "count": counts.astype(int)})


def confidence_histogram(
    probs: np.ndarray | pd.DataFrame | pd.Series,
    bins: int = 20,
    k: int | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Histogram of the label model's confidence (max class probability) per row.

    `probs` is (n, k) probabilities, a `probs` table (prob_* columns) or n confidences;
    `k` (number of classes) sets the lower end of the axis, 1/k.
    """
    conf = _max_confidence(probs)
    if k is None:
        k = probs.shape[1] if getattr(probs, "ndim", 1) == 2 else 2
        if isinstance(probs, pd.DataFrame):
            k = sum(str(c).startswith("prob_") for c in probs.columns) or probs.shape[1]
    table = histogram_table(conf, bins, lo=1.0 / k if k > 1 else 0.0, hi=1.0)
    return (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("start:Q", bin="binned", title="max class probability"),
            x2="end:Q",
            y=alt.Y("count:Q", title="rows"),
            tooltip=[
                alt.Tooltip("start:Q", format=".2f"),
                alt.Tooltip("end:Q", format=".2f"),
                "count:Q",
            ],
        )
        .properties(title=title or f"Label confidence ({len(conf):,} rows)")
    )


def score_distribution(
    scores: np.ndarray | pd.Series,
    is_match: np.ndarray | pd.Series | None = None,
    bins: int = 30,
    threshold: float | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Histograms of pair scores for gold matches vs non-matches (or all pairs without gold)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise LoomError("score_distribution needs at least one score")
    lo, hi = float(np.nanmin(scores)), float(np.nanmax(scores))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, bins + 1)
    if is_match is None:
        groups = {"all pairs": scores}
    else:
        is_match = np.asarray(is_match, dtype=bool)
        if is_match.shape != scores.shape:
            raise LoomError(
                f"is_match has {is_match.shape[0]} entries but scores has {scores.shape[0]}"
            )
        groups = {"match": scores[is_match], "non-match": scores[~is_match]}
    parts = []
    for name, vals in groups.items():
        t = histogram_table(vals, edges)
        t["group"] = name
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    chart = (
        alt.Chart(table)
        .mark_bar(opacity=0.6)
        .encode(
            x=alt.X("start:Q", bin="binned", title="score"),
            x2="end:Q",
            y=alt.Y("count:Q", stack=None, title="pairs"),
            color=alt.Color(
                "group:N",
                scale=alt.Scale(
                    domain=list(groups),
                    range=["#2ca02c", "#d62728", "#1f77b4"][: len(groups)]
                    if is_match is not None
                    else ["#1f77b4"],
                ),
            ),
            tooltip=["group", alt.Tooltip("start:Q", format=".3f"), "count:Q"],
        )
    )
    if threshold is not None:
        rule = (
            alt.Chart(pd.DataFrame({"threshold": [threshold]}))
            .mark_rule(strokeDash=[4, 3])
            .encode(x="threshold:Q")
        )
        chart = chart + rule
    return chart.properties(title=title or "Score distribution")


def project_2d(
    vectors: np.ndarray,
    method: str = "auto",
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Project vectors to 2-D: UMAP when installed ('auto'), else t-SNE (<= 3,000 rows) or PCA.

    Returns (coords (n, 2), the method used). Project a sample, not millions of rows.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise LoomError(f"project_2d needs at least 3 vectors as an (n, dim) array, got {x.shape}")
    if method == "auto":
        try:
            import umap  # noqa: F401

            method = "umap"
        except ImportError:
            method = "tsne" if x.shape[0] <= 3000 else "pca"
    if method == "umap":
        try:
            import umap
        except ImportError as e:
            raise LoomError("method 'umap' needs umap-learn: pip install umap-learn") from e
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "umap"
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x), "pca"
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30, max(2, (x.shape[0] - 1) // 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        # Barnes-Hut's OpenMP threads spin-wait on a busy machine (30x slower measured on
        # 2 shared cores); on a few thousand points one thread is as fast anyway.
        with threadpool_limits(limits=1 if x.shape[0] <= 5000 else None):
            coords = tsne.fit_transform(x)
        return coords, "tsne"
    raise LoomError(f"unknown projection method {method!r}: use auto, umap, tsne or pca")


def embedding_projection(
    df: pd.DataFrame,
    color: str | None = None,
    tooltip: Sequence[str] = (),
    x: str = "x",
    y: str = "y",
    max_points: int = MAX_POINTS,
    seed: int = 0,
    title: str | None = None,
) -> alt.Chart:
    """Scatter of 2-D coordinates coloured by a column (label, LF vote, cluster), with hover text."""
    for col in [x, y, *([color] if color else []), *tooltip]:
        if col not in df.columns:
            raise LoomError(f"embedding_projection: no column {col!r}; columns: {list(df.columns)}")
    if len(df) > max_points:
        df = df.sample(max_points, random_state=seed)
    df = df.copy()
    for col in tooltip:
        if df[col].dtype == object:
            df[col] = df[col].astype(str).str.slice(0, 160)
    enc = {
        "x": alt.X(f"{x}:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
        "y": alt.Y(f"{y}:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
        "tooltip": list(tooltip) + ([color] if color and color not in tooltip else []),
    }
    if color:
        df[color] = df[color].astype(str)
        enc["color"] = alt.Color(f"{color}:N", title=color)
    return (
        alt.Chart(df)
        .mark_circle(size=28, opacity=0.75)
        .encode(**enc)
        .properties(title=title or f"2-D projection ({len(df):,} points)")
        .interactive()
    )


def accuracy_comparison(
    df: pd.DataFrame,
    estimated: str = "est_acc",
    empirical: str = "emp_acc",
    label: str = "lf",
    title: str | None = None,
) -> alt.Chart:
    """Label model's estimated accuracy vs the empirical (gold) accuracy per LF, with y = x."""
    for col in (estimated, empirical, label):
        if col not in df.columns:
            raise LoomError(f"accuracy_comparison: no column {col!r}; columns: {list(df.columns)}")
    d = df[[label, estimated, empirical]].dropna()
    if d.empty:
        raise LoomError(
            "accuracy_comparison: no LF has both an estimated and an empirical accuracy"
        )
    lo = float(min(d[estimated].min(), d[empirical].min(), 0.5))
    diag = pd.DataFrame({"a": [lo, 1.0], "b": [lo, 1.0]})
    line = alt.Chart(diag).mark_line(strokeDash=[4, 3], color="gray").encode(x="a:Q", y="b:Q")
    pts = (
        alt.Chart(d)
        .mark_circle(size=80)
        .encode(
            x=alt.X(
                f"{empirical}:Q",
                scale=alt.Scale(domain=[lo, 1.0]),
                title="empirical accuracy (gold)",
            ),
            y=alt.Y(
                f"{estimated}:Q", scale=alt.Scale(domain=[lo, 1.0]), title="estimated accuracy"
            ),
            color=alt.Color(f"{label}:N", legend=None),
            tooltip=[
                label,
                alt.Tooltip(f"{estimated}:Q", format=".3f"),
                alt.Tooltip(f"{empirical}:Q", format=".3f"),
            ],
        )
    )
    labels = pts.mark_text(align="left", dx=6, fontSize=10).encode(text=f"{label}:N")
    return (line + pts + labels).properties(title=title or "Estimated vs empirical LF accuracy")


def bar_chart(
    df: pd.DataFrame, x: str, y: str, color: str | None = None, title: str | None = None
) -> alt.Chart:
    """A plain (grouped when `color` is given) bar chart, e.g. class balance or tokens by stage."""
    enc = {
        "x": alt.X(f"{x}:N", title=x, sort=None),
        "y": alt.Y(f"{y}:Q", title=y),
        "tooltip": [x, y] + ([color] if color else []),
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N")
        enc["xOffset"] = alt.XOffset(f"{color}:N")
    return alt.Chart(df).mark_bar().encode(**enc).properties(title=title or "")


def coverage_before_after(df: pd.DataFrame, title: str | None = None) -> alt.Chart:
    """Per-LF coverage before and after smoothing (Liger vote extension, Embroid neighbours)."""
    for col in ("lf", "before", "after"):
        if col not in df.columns:
            raise LoomError(
                f"coverage_before_after: no column {col!r}; columns: {list(df.columns)}"
            )
    long = df.melt(
        id_vars="lf", value_vars=["before", "after"], var_name="stage", value_name="coverage"
    )
    return bar_chart(
        long, "lf", "coverage", color="stage", title=title or "Coverage before / after"
    )


def partition_heatmap(df: pd.DataFrame, title: str | None = None) -> alt.Chart:
    """Liger's per-partition LF accuracy: partitions x LFs, colour = accuracy, hover = size."""
    for col in ("partition", "lf", "accuracy"):
        if col not in df.columns:
            raise LoomError(f"partition_heatmap: no column {col!r}; columns: {list(df.columns)}")
    tooltip = ["partition", "lf", alt.Tooltip("accuracy:Q", format=".3f")]
    if "size" in df.columns:
        tooltip.append("size:Q")
    base = alt.Chart(df).encode(x=alt.X("lf:N", title="LF"), y=alt.Y("partition:O"))
    rect = base.mark_rect().encode(
        color=alt.Color("accuracy:Q", scale=alt.Scale(scheme="viridis")), tooltip=tooltip
    )
    text = base.mark_text(fontSize=10, color="white").encode(
        text=alt.Text("accuracy:Q", format=".2f")
    )
    return (rect + text).properties(title=title or "LF accuracy per partition")


def precision_recall_curve(df: pd.DataFrame, threshold: float | None = None) -> alt.Chart:
    """Precision and recall against the threshold, from a table `threshold, precision, recall`."""
    long = df.melt(id_vars="threshold", value_vars=["precision", "recall", "f1"], var_name="metric")
    chart = (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("threshold:Q"),
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
            color="metric:N",
            tooltip=[
                "metric",
                alt.Tooltip("threshold:Q", format=".3f"),
                alt.Tooltip("value:Q", format=".3f"),
            ],
        )
    )
    if threshold is not None:
        rule = (
            alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(strokeDash=[4, 3]).encode(x="t:Q")
        )
        chart = chart + rule
    return chart.properties(title="Precision / recall vs threshold")
