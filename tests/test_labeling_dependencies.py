"""Issue 22: dependent LFs: the generator, structure learning, LabelModel.fit(dependencies=...)
and LFAnalysis.dependencies()/warnings()."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labeling import DawidSkene, LabelModel, LFAnalysis, MajorityVoter
from labeling.dependencies import learn_dependencies
from labeling.model.label_model import _fit_mu
from labeling.synthetic import make_correlated, make_synthetic
from toolkit.errors import LoomError


def _acc(model, L, Y):
    covered = (L >= 0).any(1)
    return float((model.predict(L, tie_break_policy="random") == Y)[covered].mean())


def test_make_correlated_plants_groups_deterministically():
    d = make_correlated(20_000, 12, 3, group_sizes=(4, 2), correlation=0.7, seed=1)
    again = make_correlated(20_000, 12, 3, group_sizes=(4, 2), correlation=0.7, seed=1)
    assert np.array_equal(d["L"], again["L"]) and np.array_equal(d["Y"], again["Y"])
    assert [len(g) for g in d["groups"]] == [4, 2]
    assert len(d["pairs"]) == 6 + 1 and len(d["edges"]) == 3 + 1
    L, Y = d["L"], d["Y"]
    for leader, follower in d["edges"]:
        # copied on 70% of the rows, its own independent vote elsewhere (agrees by chance)
        same = float((L[:, leader] == L[:, follower]).mean())
        assert 0.7 < same < 0.7 + 0.3 * 0.8, same
    votes = L >= 0
    emp = ((L == Y[:, None]) & votes).sum(0) / votes.sum(0)
    np.testing.assert_allclose(d["acc"], emp)
    assert set(np.unique(L)) <= {-1, 0, 1, 2}
    with pytest.raises(LoomError, match="group_sizes"):
        make_correlated(100, 4, 2, group_sizes=(3, 3))


@pytest.mark.parametrize(
    "k,sizes,corr",
    [(2, (2, 2, 2), 0.5), (2, (5,), 0.5), (2, (4, 3), 0.95), (3, (3,), 0.7), (4, (5,), 0.8)],
)
def test_learn_dependencies_finds_the_planted_pairs(k, sizes, corr):
    d = make_correlated(10_000, 15, k, group_sizes=sizes, correlation=corr, seed=2)
    table = learn_dependencies(d["L"], k)
    found = {(int(i), int(j)) for i, j in zip(table["i"], table["j"])}
    assert found == {tuple(sorted(e)) for e in d["edges"]}
    assert (table["strength"] > table["threshold"]).all()


def test_learn_dependencies_finds_nothing_in_independent_lfs():
    for k, seed in ((2, 0), (3, 1), (4, 2)):
        d = make_synthetic(5_000, 20, k, seed=seed)
        assert len(learn_dependencies(d["L"], k)) == 0


def test_fit_mu_leaves_excluded_pairs_out():
    """The overlap block of a dependent pair must not pull the estimate (Ratner et al. 2019)."""
    rng = np.random.default_rng(0)
    m, k = 6, 2
    p = np.array([0.5, 0.5])
    acc = rng.uniform(0.6, 0.9, m)
    cov = rng.uniform(0.3, 0.7, m)
    mu = np.zeros((m * k, k))
    for i in range(m):
        for y in range(k):
            mu[i * k + y, y] = cov[i] * acc[i]
            mu[i * k + 1 - y, y] = cov[i] * (1 - acc[i])
    overlap = (mu * p) @ mu.T
    overlap[np.arange(m * k), np.arange(m * k)] = (mu * p).sum(1)
    corrupt = overlap.copy()  # LF 1 copies LF 0: their joint votes agree far more
    corrupt[0:2, 2:4] = corrupt[2:4, 0:2] = np.diag(np.diag(overlap)[0:2]) * 0.9
    start = np.clip(mu + rng.normal(0, 0.03, mu.shape), 1e-3, 1)
    args = (start, p, k, 3000, 0.01, 0.0, False)
    plain, _ = _fit_mu(corrupt, *args)
    kept, _ = _fit_mu(corrupt, *args, excluded_pairs=[(0, 1)])
    assert np.abs(kept - mu).max() < 0.01
    assert np.abs(plain - mu).max() > 0.03


# group sizes 2-5 x correlation 0.5-0.95: the issue's grid (benchmarks/labeling.py runs it all)
GRID = [(2, 0.5), (2, 0.95), (3, 0.7), (4, 0.95), (5, 0.5), (5, 0.95)]


@pytest.mark.parametrize("size,corr", GRID)
def test_label_model_with_dependencies_on_the_grid(size, corr):
    d = make_correlated(
        10_000, 16, 2, group_sizes=(size,) * (2 if size < 5 else 1), correlation=corr, seed=4
    )
    L, Y = d["L"], d["Y"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dep = LabelModel(2).fit(L, dependencies="auto")
        ind = LabelModel(2).fit(L)
    mv = MajorityVoter(2).fit(L)
    assert sorted(map(sorted, dep.groups_)) == sorted(map(sorted, d["groups"]))
    assert np.abs(dep.get_weights() - d["acc"]).mean() <= 0.03
    assert _acc(dep, L, Y) >= _acc(mv, L, Y)
    assert _acc(dep, L, Y) >= _acc(ind, L, Y)


def test_given_pairs_by_index_or_name_and_save_load(tmp_path):
    d = make_correlated(8_000, 10, 3, group_sizes=(3,), correlation=0.8, seed=6)
    L, Y = d["L"], d["Y"]
    names = [f"lf{j}" for j in range(10)]
    leader, f1, f2 = d["groups"][0]
    pairs = [(names[leader], names[f1]), (leader, f2)]
    model = LabelModel(3).fit(L, dependencies=pairs, lf_names=names)
    assert model.dependencies_ == sorted({tuple(sorted(e)) for e in d["edges"]})
    assert model.groups_ == [tuple(sorted(d["groups"][0]))]
    # fit on a small sample: rows of L whose group votes were never seen use the fallback
    small = LabelModel(3).fit(L, dependencies=pairs, lf_names=names, fit_sample=500)
    P = small.predict_proba(L)
    assert np.isfinite(P).all() and np.allclose(P.sum(1), 1, atol=1e-5)
    assert _acc(small, L, Y) > _acc(MajorityVoter(3).fit(L), L, Y) - 0.02
    path = model.save(tmp_path / "lm.npz")
    back = LabelModel.load(path)
    assert back.groups_ == model.groups_ and back.dependencies_ == model.dependencies_
    np.testing.assert_allclose(back.predict_proba(L), model.predict_proba(L), atol=1e-6)
    ll = model.log_joint(L)
    P = np.exp(ll - ll.max(1, keepdims=True))
    np.testing.assert_allclose(P / P.sum(1, keepdims=True), model.predict_proba(L), atol=1e-5)


def test_bad_dependencies_are_named():
    L = make_synthetic(500, 5, 2, seed=0)["L"]
    with pytest.raises(LoomError, match="'auto'"):
        LabelModel(2).fit(L, dependencies="yes")
    with pytest.raises(LoomError, match="with itself"):
        LabelModel(2).fit(L, dependencies=[(1, 1)])
    with pytest.raises(LoomError, match="0..4"):
        LabelModel(2).fit(L, dependencies=[(0, 7)])
    with pytest.raises(LoomError, match="unknown LF 'nope'"):
        LabelModel(2).fit(L, dependencies=[("lf_0", "nope")])
    with pytest.raises(LoomError, match="pairs"):
        LabelModel(2).fit(L, dependencies=[(0, 1, 2)])
    with pytest.raises(TypeError, match="only LabelModel models dependencies"):
        DawidSkene(2).fit(L, dependencies=[(0, 1)])
    wide = np.random.default_rng(0).integers(-1, 2, size=(50, 501))  # m*k = 1002 > 1000
    with pytest.raises(LoomError, match=r"pass the dependent pairs yourself"):
        learn_dependencies(wide, 2)


def test_lf_analysis_dependencies_and_warnings():
    d = make_correlated(6_000, 10, 2, group_sizes=(2,), correlation=0.98, seed=3)
    L = d["L"].copy()
    leader, follower = d["groups"][0]
    quiet, flipped = [j for j in range(10) if j not in (leader, follower)][:2]
    L[:, quiet] = -1
    L[:, flipped] = np.where(L[:, flipped] >= 0, 1 - L[:, flipped], -1)  # worse than chance
    names = [f"lf{j}" for j in range(10)]
    analysis = LFAnalysis(L, names)
    deps = analysis.dependencies(cardinality=2)
    assert list(deps.columns) == ["lf_i", "lf_j", "i", "j", "strength", "threshold", "agreement"]
    assert {(r.i, r.j) for r in deps.itertuples()} == {tuple(sorted((leader, follower)))}
    assert deps["agreement"].iloc[0] > 0.98
    found = analysis.warnings(cardinality=2)
    assert {(r.lf, r.issue) for r in found.itertuples()} == {
        (names[quiet], "never_fires"),
        (names[flipped], "below_chance"),
        (names[max(leader, follower)], "near_duplicate"),
    }
    assert names[min(leader, follower)] in found.set_index("issue").loc["near_duplicate", "detail"]
    clean = LFAnalysis(make_synthetic(4_000, 8, 2, seed=1)["L"])
    assert clean.warnings().empty and clean.dependencies().empty
    with pytest.raises(ValueError, match="est_weights"):
        clean.warnings(est_weights=[0.9])
