"""Sparse (CSR) label matrices, the torch matrix completion and many classes (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from labeling.model import (
    DawidSkene,
    LabelDtypeError,
    LabelMatrixError,
    LabelModel,
    MajorityVoter,
    from_sparse_votes,
    to_sparse_votes,
)
from labeling.model.completion import DenseOverlap, SparseOverlap, fit_mu
from labeling.model.sparse import check_sparse_L, sparse_onehot, unique_sparse_rows
from labeling.synthetic import make_sparse_synthetic, make_synthetic
from toolkit.errors import LoomError


def naive_fit_mu(overlap, mu0, p, k, n_epochs, lr, l2, excluded=()):
    """Reference: the numpy float64 matrix completion LabelModel used before the torch port."""
    d = overlap.shape[0]
    mask = np.ones((d, d))
    for i in range(0, d, k):
        mask[i : i + k, i : i + k] = 0.0
    for i, j in excluded:
        mask[i * k : (i + 1) * k, j * k : (j + 1) * k] = 0.0
        mask[j * k : (j + 1) * k, i * k : (i + 1) * k] = 0.0
    diag_o = np.diag(overlap)
    mu = mu0.copy()
    m1, m2 = np.zeros_like(mu), np.zeros_like(mu)
    b1, b2, eps = 0.9, 0.999, 1e-8
    loss = 0.0
    for t in range(1, n_epochs + 1):
        muP = mu * p
        R = mask * (overlap - muP @ mu.T)
        r2 = muP.sum(1) - diag_o
        loss = float((R**2).sum() + (r2**2).sum() + l2 * ((mu - mu0) ** 2).sum())
        grad = -4.0 * (R @ muP) + 2.0 * r2[:, None] * p[None, :] + 2.0 * l2 * (mu - mu0)
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad**2
        step = lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
        mu = np.clip(mu - step, 1e-6, 1.0)
    return mu, loss


@pytest.fixture(scope="module")
def small():
    d = make_synthetic(4000, 10, cardinality=3, seed=3)
    return d["L"], d["Y"]


def test_to_and_from_sparse_votes_roundtrip(small):
    L, _ = small
    S = to_sparse_votes(L)
    assert sp.issparse(S) and S.format == "csr"
    assert S.nnz == int((L >= 0).sum())
    assert set(np.unique(S.data)) <= {1, 2, 3}  # vote + 1; abstains not stored
    np.testing.assert_array_equal(from_sparse_votes(S), L)


def test_check_sparse_L_names_the_problem():
    ok = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]]))
    with pytest.raises(LabelMatrixError, match="vote \\+ 1"):
        check_sparse_L(sp.csr_matrix(np.array([[-1, 1], [0, 2]])), 3)
    with pytest.raises(LabelMatrixError, match="cardinality is 2"):
        check_sparse_L(ok, 2)
    with pytest.raises(LabelDtypeError, match="astype"):
        check_sparse_L(ok.astype(float), 3)
    dup = sp.csr_matrix((np.array([1, 2]), np.array([0, 0]), np.array([0, 2, 2])), shape=(2, 2))
    with pytest.raises(LabelMatrixError, match="twice"):
        check_sparse_L(dup, 3)
    with pytest.raises(LabelMatrixError, match="fitted on 4"):
        check_sparse_L(ok, 3, m=4)
    # an explicitly stored 0 is an abstain, as scipy reads it
    explicit = sp.csr_matrix((np.array([0, 2]), np.array([0, 1]), np.array([0, 2])), shape=(1, 2))
    assert check_sparse_L(explicit, 3).nnz == 1
    assert explicit.nnz == 2  # the user's matrix is left alone


@pytest.mark.parametrize("excluded", [(), ((0, 1), (2, 5))])
def test_torch_matrix_completion_equals_numpy(small, excluded):
    L, _ = small
    k, m, n = 3, L.shape[1], len(L)
    A = sparse_onehot(to_sparse_votes(L), k, np.float64)
    ov = (A.T @ A).toarray() / n
    rng = np.random.default_rng(0)
    mu0 = np.clip(rng.random((m * k, k)) * 0.3, 1e-3, 1.0)
    p = np.array([0.3, 0.3, 0.4])
    ref, ref_loss = naive_fit_mu(ov, mu0, p, k, 60, 0.01, 0.1, excluded)
    t = [torch.from_numpy(x) for x in (mu0, p)]
    dense, dense_loss = fit_mu(
        DenseOverlap(torch.from_numpy(ov), k, excluded),
        *t[:1],
        t[1],
        k,
        60,
        0.01,
        0.1,
        False,
        None,
        excluded,
    )
    np.testing.assert_allclose(dense.numpy(), ref, atol=1e-10)
    assert dense_loss == pytest.approx(ref_loss, rel=1e-9)
    over = SparseOverlap(A, None, n, k, "cpu", excluded)  # float32 products
    sparse, sparse_loss = fit_mu(over, t[0], t[1], k, 60, 0.01, 0.1, False, None, excluded)
    np.testing.assert_allclose(sparse.numpy(), ref, atol=1e-5)
    assert sparse_loss == pytest.approx(ref_loss, rel=1e-4)


def test_label_model_sparse_equals_dense(small):
    L, Y = small
    S = to_sparse_votes(L)
    dense = LabelModel(3).fit(L, seed=0)
    sparse = LabelModel(3).fit(S, seed=0)
    assert sparse.fit_info["vote_format"] == "sparse"
    np.testing.assert_allclose(sparse.predict_proba(S), dense.predict_proba(L), atol=1e-4)
    np.testing.assert_array_equal(sparse.predict(S), dense.predict(L))
    assert sparse.score(S, Y) == dense.score(L, Y)
    np.testing.assert_allclose(sparse.log_joint(S), dense.log_joint(L), atol=1e-3)
    np.testing.assert_allclose(sparse.get_weights(), dense.get_weights(), atol=1e-5)


def test_sparse_rows_without_votes_predict_abstain(small):
    L, _ = small
    L = L.copy()
    L[:5] = -1
    S = to_sparse_votes(L)
    with pytest.warns(UserWarning, match="rows have no votes"):
        model = LabelModel(3).fit(S)
    assert (model.predict(S)[:5] == -1).all()


def test_majority_voter_sparse_equals_dense(small):
    L, Y = small
    S = to_sparse_votes(L)
    a, b = MajorityVoter(3).fit(L), MajorityVoter(3).fit(S)
    np.testing.assert_array_equal(b.predict_proba(S), a.predict_proba(L))
    np.testing.assert_allclose(b.get_weights(), a.get_weights())
    assert b.score(S, Y) == a.score(L, Y)


def test_model_without_sparse_support_says_so(small):
    with pytest.raises(LabelMatrixError, match="from_sparse_votes"):
        DawidSkene(3).fit(to_sparse_votes(small[0]))


def test_unique_sparse_rows_roundtrip():
    L = np.array([[0, -1, 1], [0, -1, 1], [-1, -1, -1], [1, 0, -1], [-1, -1, -1]])
    S = to_sparse_votes(L)
    U, inverse, counts = unique_sparse_rows(S)
    assert U.shape[0] == 3 and counts.sum() == 5
    np.testing.assert_array_equal(from_sparse_votes(U[inverse]), L)


@pytest.mark.slow
def test_many_classes_sparse_k25_pooled_prior_helps():
    """k = 25 from the sparse generator: most wrong-vote cells are never observed, and
    without the pooled (one-coin) prior one unexpected wrong vote vetoes the true class."""
    d = make_sparse_synthetic(
        5000, 60, cardinality=25, acc_range=(0.3, 0.8), cov_range=(0.03, 0.08), seed=5
    )
    S, Y = d["S"], d["Y"]
    scores = {}
    for pooled in (0.0, 200.0):
        model = LabelModel(25).fit(S, seed=0, n_epochs=50, pooled=pooled)
        assert model.fit_info["vote_format"] == "sparse"
        scores[pooled] = model.score(S, Y, tie_break_policy="random")["accuracy"]
        assert np.abs(model.get_weights() - d["acc"]).mean() < 0.05
    assert scores[200.0] > scores[0.0] + 0.01
    with pytest.raises(LoomError, match="pooled"):
        LabelModel(25).fit(S, pooled=-1.0)
