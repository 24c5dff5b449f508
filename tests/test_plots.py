"""toolkit.plots: the numbers behind each chart, the chart specs, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit import plots
from toolkit.errors import LoomError

# 5 rows x 3 LFs, -1 = abstain
L = np.array(
    [
        [0, 0, -1],
        [1, 0, -1],
        [-1, 1, 1],
        [1, -1, 0],
        [-1, -1, -1],
    ]
)


def chart_rows(chart) -> list[dict]:
    """Every data row embedded in an Altair chart's Vega-Lite spec."""
    spec = chart.to_dict()
    rows = []
    for values in spec.get("datasets", {}).values():
        rows += values
    return rows


def test_lf_pair_stats_matches_hand_counts():
    stats = plots.lf_pair_stats(L, ["a", "b", "c"]).set_index(["lf_a", "lf_b"])
    assert stats.loc[("a", "a"), "overlap"] == pytest.approx(3 / 5)  # coverage on the diagonal
    assert stats.loc[("c", "c"), "overlap"] == pytest.approx(2 / 5)
    assert stats.loc[("a", "b"), "overlap"] == pytest.approx(2 / 5)  # rows 0, 1
    assert stats.loc[("a", "b"), "conflict"] == pytest.approx(1 / 5)  # row 1: 1 vs 0
    assert stats.loc[("b", "c"), "conflict"] == 0  # row 2 agrees
    assert stats.loc[("a", "c"), "conflict"] == pytest.approx(1 / 5)  # row 3: 1 vs 0
    assert stats.loc[("a", "a"), "conflict"] == 0
    assert (stats.loc[("b", "a")] == stats.loc[("a", "b")]).all()


def test_lf_heatmap_from_label_matrix_and_dataframe():
    df = pd.DataFrame(L, columns=["a", "b", "c"])
    chart = plots.lf_heatmap(df, value="overlap")
    rows = chart_rows(chart)
    assert len(rows) == 9
    assert {r["lf_a"] for r in rows} == {"a", "b", "c"}
    assert chart.to_dict()["layer"][0]["mark"]["type"] == "rect"
    with pytest.raises(LoomError, match="overlap' or 'conflict"):
        plots.lf_heatmap(df, value="accuracy")


def test_bad_label_matrices_are_named():
    with pytest.raises(LoomError, match="2-D label matrix"):
        plots.lf_pair_stats(np.array([0, 1, -1]))
    with pytest.raises(LoomError, match="below -1"):
        plots.lf_pair_stats(np.array([[0, -2]]))
    with pytest.raises(LoomError, match="2 LF names"):
        plots.lf_pair_stats(L, ["a", "b"])
    with pytest.raises(LoomError, match="integer votes"):
        plots.lf_pair_stats(np.array([[0.5, 1.0]]))


def test_confidence_histogram_counts_every_row():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=400)
    chart = plots.confidence_histogram(probs, bins=10)
    rows = chart_rows(chart)
    assert sum(r["count"] for r in rows) == 400
    assert rows[0]["start"] == pytest.approx(1 / 3)  # max prob of 3 classes is >= 1/3
    table = pd.DataFrame(probs, columns=["prob_0", "prob_1", "prob_2"]).assign(row=range(400))
    assert chart_rows(plots.confidence_histogram(table, bins=10)) == rows


def test_score_distribution_separates_matches():
    scores = np.array([0.9, 0.95, 0.2, 0.3, 0.85, 0.1])
    gold = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    chart = plots.score_distribution(scores, gold, bins=4, threshold=0.5)
    rows = chart_rows(chart)
    by = {g: sum(r["count"] for r in rows if r.get("group") == g) for g in ("match", "non-match")}
    assert by == {"match": 3, "non-match": 3}
    assert all(r["start"] >= 0.5 for r in rows if r.get("group") == "match" and r["count"])
    assert any(r.get("threshold") == 0.5 for r in rows)
    with pytest.raises(LoomError, match="is_match has 2"):
        plots.score_distribution(scores, gold[:2])
    with pytest.raises(LoomError, match="at least one score"):
        plots.score_distribution(np.array([]))


def test_project_2d_methods_and_errors():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 16)) * 5
    x = np.concatenate([c + rng.normal(size=(30, 16)) for c in centres])
    coords, used = plots.project_2d(x, method="pca")
    assert coords.shape == (60, 2) and used == "pca"
    # the two clusters stay apart along the first component
    a, b = coords[:30, 0].mean(), coords[30:, 0].mean()
    assert abs(a - b) > 3 * coords[:, 0].std() / 2
    coords, used = plots.project_2d(x, method="auto")
    assert coords.shape == (60, 2) and used in ("umap", "tsne")
    with pytest.raises(LoomError, match="at least 3 vectors"):
        plots.project_2d(x[:2])
    with pytest.raises(LoomError, match="unknown projection"):
        plots.project_2d(x, method="mds")


def test_embedding_projection_samples_and_colours():
    df = pd.DataFrame(
        {"x": np.arange(7000.0), "y": np.zeros(7000), "label": [0, 1] * 3500, "text": ["t"] * 7000}
    )
    chart = plots.embedding_projection(df, color="label", tooltip=["text"], max_points=500)
    rows = chart_rows(chart)
    assert len(rows) == 500
    assert {r["label"] for r in rows} == {"0", "1"}
    spec = chart.to_dict()
    assert spec["encoding"]["color"]["field"] == "label"
    with pytest.raises(LoomError, match="no column 'cluster'"):
        plots.embedding_projection(df, color="cluster")


def test_accuracy_comparison_and_coverage_charts():
    acc = pd.DataFrame({"lf": ["a", "b"], "est_acc": [0.8, 0.6], "emp_acc": [0.75, 0.7]})
    rows = chart_rows(plots.accuracy_comparison(acc))
    assert {r["lf"] for r in rows if "lf" in r} == {"a", "b"}
    with pytest.raises(LoomError, match="no LF has both"):
        plots.accuracy_comparison(acc.assign(emp_acc=np.nan))
    cov = pd.DataFrame({"lf": ["a", "b"], "before": [0.1, 0.2], "after": [0.3, 0.2]})
    rows = chart_rows(plots.coverage_before_after(cov))
    assert len(rows) == 4 and {r["stage"] for r in rows} == {"before", "after"}
    part = pd.DataFrame(
        {"partition": [0, 0, 1], "lf": ["a", "b", "a"], "accuracy": [0.9, 0.5, 0.6]}
    )
    assert len(chart_rows(plots.partition_heatmap(part))) == 3
    with pytest.raises(LoomError, match="no column 'after'"):
        plots.coverage_before_after(cov.drop(columns="after"))
