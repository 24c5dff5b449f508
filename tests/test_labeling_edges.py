"""Unusual or bad input to the public labeling API: clear errors, never silently wrong results."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from labeling import (
    DawidSkene,
    Embroid,
    LabelingFunction,
    LabelMatrixError,
    LabelModel,
    LFAnalysis,
    LFApplier,
    Liger,
    MajorityVoter,
    MultiLabelModel,
    TripletModel,
    filter_unlabeled_dataframe,
    metric_score,
    threshold_lf,
    to_sparse_votes,
)
from labeling.synthetic import make_multilabel
from toolkit.errors import LoomError

MODELS = [MajorityVoter, LabelModel, DawidSkene, TripletModel]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without votes etc.: not what these tests check
        yield


def votes(n=300, m=5, acc=0.8, cover=0.6, seed=0):
    """(L, Y): binary LFs of one accuracy voting on `cover` of the rows."""
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, 2, n)
    right = rng.random((n, m)) < acc
    L = np.where(rng.random((n, m)) < cover, np.where(right, Y[:, None], 1 - Y[:, None]), -1)
    return L.astype(np.int64), Y


@pytest.mark.parametrize("Model", MODELS)
def test_class_balance_that_does_not_sum_to_one_is_normalised_and_said(Model, caplog):
    # counts (or a slip such as [0.7, 0.7]) are taken as relative weights, with a warning
    L, _ = votes()
    with caplog.at_level(logging.WARNING, logger="labeling.model.base"):
        model = Model(2).fit(L, class_balance=[70, 30])
    assert np.allclose(model.class_balance, [0.7, 0.3])
    assert "sums to 100, not 1: taken as relative weights, prior [0.7, 0.3]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labeling.model.base"):
        rounded = Model(3).fit(L, class_balance=[0.33, 0.33, 0.33]).class_balance
    assert np.allclose(rounded, 1 / 3) and "relative weights" not in caplog.text


def test_majority_voter_refit_forgets_the_earlier_prior():
    L, _ = votes()
    model = MajorityVoter(2).fit(L, class_balance=[0.9, 0.1])
    model.fit(L)
    assert np.allclose(model.class_balance, [0.5, 0.5])
    empty = -np.ones((1, L.shape[1]), dtype=np.int64)
    assert np.allclose(model.predict_proba(empty), [[0.5, 0.5]])


@pytest.mark.parametrize("Model", [LabelModel, DawidSkene])
@pytest.mark.parametrize(
    "kw", [{"lr": float("nan")}, {"lr": -0.01}, {"lr": 0.0}, {"n_epochs": -1}, {"n_epochs": 2.5}]
)
def test_bad_learning_rate_or_epochs_is_an_error(Model, kw):
    L, _ = votes()
    name = next(iter(kw))
    with pytest.raises(LoomError, match=rf"fit\({name}="):
        Model(2).fit(L, **kw)


@pytest.mark.parametrize("rows", [0, -5])
def test_fit_sample_must_be_a_positive_row_count(rows):
    L, _ = votes()
    with pytest.raises(LoomError, match="positive number of rows"):
        LabelModel(2).fit(L, fit_sample=rows)
    assert LabelModel(2).fit(L, fit_sample=50).fit_info["fit_rows"] == 50


def test_a_failed_refit_leaves_the_fitted_model_as_it_was():
    L, _ = votes()
    model = LabelModel(2).fit(L)
    with pytest.raises(LabelMatrixError):
        model.fit(L[:, :3], class_balance=[0.2, 0.3, 0.5])
    assert model.lf_names == [f"lf_{j}" for j in range(5)]
    assert model.weights_frame().shape == (5, 2)


@pytest.mark.parametrize("Model", MODELS)
def test_dataframe_with_the_fitted_columns_in_another_order_is_an_error(Model):
    L, _ = votes()
    cols = list("abcde")
    model = Model(2).fit(pd.DataFrame(L, columns=cols))
    swapped = pd.DataFrame(L, columns=cols)[cols[::-1]]
    for call in (model.predict, model.predict_proba, lambda x: model.score(x, np.zeros(len(L)))):
        with pytest.raises(LabelMatrixError, match="another order"):
            call(swapped)
    same = model.predict_proba(pd.DataFrame(L, columns=cols))
    assert np.allclose(same, model.predict_proba(L))


def test_score_takes_one_metric_name():
    L, Y = votes()
    model = LabelModel(2).fit(L)
    assert model.score(L, Y, metrics="accuracy") == model.score(L, Y, metrics=["accuracy"])


def test_metric_score_rejects_nan_labels():
    with pytest.raises(LoomError, match="golds must hold integer labels"):
        metric_score(np.array([0, 1, np.nan]), np.array([0, 1, 1]))
    with pytest.raises(LoomError, match="preds must hold integer labels"):
        metric_score(np.array([0, 1, 1]), np.array([0.5, 1, 1]))
    assert metric_score(np.array([0.0, 1.0, 1.0]), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_filter_unlabeled_dataframe_takes_sparse_votes_and_checks_L():
    L, Y = votes()
    df = pd.DataFrame({"i": range(len(L))})
    dense_df, dense_y = filter_unlabeled_dataframe(df, Y, L)
    sparse_df, sparse_y = filter_unlabeled_dataframe(df, Y, to_sparse_votes(L))
    assert dense_df.equals(sparse_df) and (dense_y == sparse_y).all()
    assert len(dense_df) == int((L >= 0).any(1).sum())
    with pytest.raises(LoomError, match="dtype float64"):  # a NaN is not a vote
        filter_unlabeled_dataframe(df.iloc[:2], Y[:2], np.array([[np.nan, -1], [-1, -1]]))


def test_dense_only_api_names_sparse_input():
    L, _ = votes()
    S = to_sparse_votes(L)
    X = np.random.default_rng(0).normal(size=(len(L), 8))
    for call in (
        lambda: LFAnalysis(S),
        lambda: Liger(2).fit(S, X),
        lambda: Embroid().fit_predict(S, X),
    ):
        with pytest.raises(LabelMatrixError, match="scipy.sparse.*from_sparse_votes"):
            call()
    assert (to_sparse_votes(S) != S).nnz == 0  # already sparse: returned checked, as is


def test_lf_analysis_names_non_numeric_gold():
    L, _ = votes()
    with pytest.raises(LoomError, match="Y has dtype <U3"):
        LFAnalysis(L).lf_summary(np.array(["pos"] * len(L)))


def clustered(n=300, seed=0):
    """(L, X, Y): noisy binary LFs on embeddings that separate the two classes."""
    L, Y = votes(n, seed=seed)
    X = np.random.default_rng(seed).normal(size=(n, 8)) + 3.0 * Y[:, None]
    return L, X, Y


def test_embroid_takes_one_matrix_as_a_tensor_or_a_list_of_rows():
    torch = pytest.importorskip("torch")
    L, X, _ = clustered()
    ref_probs, _ = Embroid().fit_predict(L, X)
    for E in (torch.tensor(X), X.tolist()):
        probs, _ = Embroid().fit_predict(L, E)
        assert np.allclose(probs, ref_probs, atol=1e-5)


def test_embroid_infers_cardinality_from_gold_labels_too():
    L, X, Y = clustered()
    Y_dev = np.where(np.arange(len(Y)) < 5, 2, Y)  # a class no source votes
    emb = Embroid()
    probs, _ = emb.fit_predict(L, X, Y_dev=Y_dev)
    assert emb.cardinality_ == 3 and probs.shape == (len(L), 3)


def test_vectorized_lf_series_in_another_row_order_is_aligned_by_index():
    df = pd.DataFrame({"x": [1, 5, 3, 7]}, index=[10, 11, 12, 13])
    expected = [0, 1, 1, 1]
    for f in (
        lambda d: (d.x > 2).astype(int).sort_values(),  # the frame's labels, another order
        lambda d: (d.x > 2).astype(int).iloc[::-1],
        lambda d: pd.Series((d.x > 2).astype(int).to_numpy()),  # 0..n-1: by position
        lambda d: (d.x > 2).astype(int).to_numpy(),
    ):
        lf = LabelingFunction("v", f, vectorized=True)
        assert LFApplier([lf]).apply(df, progress=False).ravel().tolist() == expected


@pytest.mark.parametrize("cardinality", ["2", 1, 2.0, True])
def test_applier_cardinality_must_be_a_class_count(cardinality):
    lf = LabelingFunction("v", lambda d: np.zeros(len(d), dtype=int), vectorized=True)
    with pytest.raises(LoomError, match=r"LFApplier\(cardinality="):
        LFApplier([lf], cardinality=cardinality)


def test_applier_min_rows_per_job_must_be_positive():
    lf = LabelingFunction("v", lambda x: 0)
    with pytest.raises(LoomError, match="min_rows_per_job=0"):
        LFApplier([lf]).apply(pd.DataFrame({"x": [1]}), progress=False, min_rows_per_job=0)


@pytest.mark.parametrize("threshold", [float("nan"), "3", None])
def test_threshold_lf_threshold_must_be_a_number(threshold):
    with pytest.raises(LoomError, match="threshold must be a finite number"):
        threshold_lf("t", "x", threshold, 1, 0)


def test_multilabel_score_rejects_gold_that_is_not_0_1_or_minus_1():
    d = make_multilabel(200, 6, n_labels=3)
    model = MultiLabelModel().fit(d["L"], n_epochs=20)
    Y = d["Y"].astype(float)
    Y[:50, 0] = np.nan  # used to drop those rows from the score silently
    with pytest.raises(LabelMatrixError, match="multi-label gold labels"):
        model.score(d["L"], Y)
    with pytest.raises(LabelMatrixError, match="multi-label gold labels"):
        model.score(d["L"], d["Y"] * 2)


def test_triplet_model_does_not_trust_an_lf_that_is_always_wrong():
    L, Y = votes(n=2000, seed=1)
    rng = np.random.default_rng(1)
    L[:, 4] = np.where(rng.random(len(L)) < 0.5, 1 - Y, -1)  # votes, and always wrongly
    model = TripletModel(2).fit(L)
    assert model.get_weights()[4] < 0.1
    assert model.score(L, Y)["accuracy"] > 0.85


def test_metric_score_filter_keys_and_binary_metrics_on_many_classes():
    golds, preds = np.array([0, 1, 2, 1]), np.array([0, 1, 1, -1])
    with pytest.raises(LoomError, match="filter_dict keys must be 'golds' or 'preds'"):
        metric_score(golds, preds, filter_dict={"probs": [-1]})  # filtered the preds before
    with pytest.raises(LoomError, match=r"metric='f1' scores one positive class.*f1_macro"):
        metric_score(golds, preds, metric="f1")
    assert metric_score(golds, preds, metric="f1_macro", filter_dict={"preds": [-1]}) > 0
    assert metric_score([0, 1, 1], [0, 1, 0], metric="f1") == pytest.approx(2 / 3)
