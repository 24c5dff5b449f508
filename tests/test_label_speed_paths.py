"""The fast CPU paths of LabelModel (issue 22) give the answers of the plain computations.

Each test compares a speed path with a reference on random votes: the posterior's
embedding-bag gather with log p + sum_i log P(vote_i | y) in float64 numpy, EM on distinct
rows with counts with EM on every row, the transposed product with A.T @ Q, and a fit
under a thread limit with one under another. Plus the many-classes default of the pooled
prior, which used to leave the model below majority vote.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeling import LabelModel, MajorityVoter
from labeling.model.conditional import default_pooled
from labeling.model.votes import VoteBlocks, compress_rows, onehot, t_matmul
from labeling.synthetic import make_sparse_synthetic, make_synthetic
from toolkit.errors import LoomError


def random_votes(n: int, m: int, k: int, seed: int, patterns: int | None = None) -> np.ndarray:
    """Votes with ~40% abstains; drawn from `patterns` distinct rows when given."""
    rng = np.random.default_rng(seed)
    rows = n if patterns is None else patterns
    L = rng.integers(0, k, size=(rows, m))
    L[rng.random((rows, m)) < 0.4] = -1
    if patterns is not None:
        L = L[rng.integers(0, patterns, size=n)]
    return L


def reference_posterior(L: np.ndarray, cond: np.ndarray, p: np.ndarray) -> np.ndarray:
    """P(y | votes) = softmax(log p + sum_i log cond[i, L_i + 1, :]) in float64."""
    m = L.shape[1]
    s = np.log(p)[None, :] + np.log(cond[np.arange(m)[None, :], L + 1, :]).sum(1)
    s = np.exp(s - s.max(1, keepdims=True))
    return s / s.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_posterior_gather_equals_reference(k):
    L = random_votes(4000, 13, k, seed=k)
    model = LabelModel(k).fit(L, n_epochs=5, em_iters=2)
    rng = np.random.default_rng(100 + k)
    cond = rng.dirichlet(np.ones(k + 1), size=(13, k)).transpose(0, 2, 1)  # (m, k+1, k)
    p = rng.dirichlet(np.ones(k))
    model.cond, model.class_balance = cond, p
    # float32 sums of up to 13 log-probabilities: agreement to a few 1e-6
    np.testing.assert_allclose(model.predict_proba(L), reference_posterior(L, cond, p), atol=5e-6)


def test_em_on_distinct_rows_equals_em_on_all_rows():
    patterns = make_synthetic(60, 12, 3, seed=1)["L"]  # LFs with signal: a well-posed EM
    L = patterns[np.random.default_rng(1).integers(0, 60, size=6000)]
    U, counts = compress_rows(L, "cpu")
    assert counts is not None and len(U) <= 60  # the grouped path is the one under test
    model = LabelModel(3)
    full = VoteBlocks(L, 3, "cpu", model.cache_bytes)
    grouped = VoteBlocks(U, 3, "cpu", model.cache_bytes, counts)
    over_full = torch.zeros(36, 36)
    over_grouped = torch.zeros(36, 36)
    c_full, p_full = model._init_from_votes(full, over_full)
    c_grouped, p_grouped = model._init_from_votes(grouped, over_grouped)
    torch.testing.assert_close(over_grouped, over_full, rtol=0, atol=1e-6)
    torch.testing.assert_close(c_grouped, c_full, rtol=0, atol=1e-6)
    args = (3, 0.0, False, 1.0, False, "em")  # real fits stop after 2-3 iterations
    c_full, p_full, _ = model._em(full, c_full, p_full, *args, pooled=1.0)
    c_grouped, p_grouped, _ = model._em(grouped, c_grouped, p_grouped, *args, pooled=1.0)
    # float32 EM counts summed in different orders: equal to 1e-5
    torch.testing.assert_close(c_grouped, c_full, rtol=0, atol=1e-5)
    torch.testing.assert_close(p_grouped, p_full, rtol=0, atol=1e-5)
    model.m = 12
    post = []
    for c, p in ((c_full, p_full), (c_grouped, p_grouped)):
        model.cond, model.class_balance = c.double().numpy(), p.double().numpy()
        post.append(model.predict_proba(L))
    np.testing.assert_allclose(post[1], post[0], atol=1e-5)


def test_fit_on_repeated_rows_equals_reference_posterior():
    """A fit that groups repeated rows still labels every row by the exact posterior of its
    own tables, scattered back to the right rows."""
    L = make_synthetic(80, 10, 4, seed=2)["L"][np.random.default_rng(2).integers(0, 80, 8000)]
    model = LabelModel(4).fit(L)
    ref = reference_posterior(L, model.cond, model.class_balance)
    np.testing.assert_allclose(model.predict_proba(L), ref, atol=1e-6)


def test_transposed_product_equals_plain():
    gen = torch.Generator().manual_seed(0)
    A = onehot(torch.from_numpy(random_votes(5000, 9, 4, seed=3)), 4, torch.float32)
    Q = torch.rand(5000, 4, generator=gen)
    torch.testing.assert_close(t_matmul(A, Q), A.T @ Q, rtol=1e-5, atol=1e-4)


def test_thread_limit_keeps_the_answer_and_restores_torch():
    d = make_synthetic(20_000, 20, 3, seed=4)
    before = torch.get_num_threads()
    one = LabelModel(3, threads=1).fit(d["L"])
    assert torch.get_num_threads() == before
    two = LabelModel(3, threads=2).fit(d["L"])
    np.testing.assert_allclose(one.predict_proba(d["L"]), two.predict_proba(d["L"]), atol=1e-5)
    assert torch.get_num_threads() == before
    for bad in (0, -2, 1.5, True):
        with pytest.raises(LoomError, match="threads"):
            LabelModel(3, threads=bad)


def test_default_pooled_prior_scales_with_sparsity():
    assert default_pooled(2, 0.05) == 0.0
    assert default_pooled(25, 0.05) == pytest.approx(4.0 * 25 / 0.05)
    # dense votes, few classes: 18 pseudo-rows per class, nothing next to the data's rows
    assert default_pooled(4, 0.9) == pytest.approx(16 / 0.9)
    assert default_pooled(30, 1.0) == 120.0 > 28


def test_many_classes_default_is_not_below_majority_vote():
    """k = 25, LFs voting on 3-8% of rows: with the old default (k - 2 pseudo-rows) the
    model scored 0.687 here against 0.720 for majority vote; the default now scales the
    prior with how few votes each confusion cell sees (0.768)."""
    d = make_sparse_synthetic(
        5000, 60, cardinality=25, acc_range=(0.3, 0.8), cov_range=(0.03, 0.08), seed=5
    )
    S, Y = d["S"], d["Y"]
    with pytest.warns(UserWarning, match="no votes"):
        model = LabelModel(25).fit(S, seed=0)
    lm = model.score(S, Y, tie_break_policy="random")["accuracy"]
    mv = MajorityVoter(25).fit(S).score(S, Y, tie_break_policy="random")["accuracy"]
    assert lm >= mv + 0.02
    assert model.fit_info["pooled"] > 23
