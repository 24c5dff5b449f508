"""Liger on clustered synthetic data with known truth, bad input, fallbacks and the workspace."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labeling.label_model import get_label_model
from labeling.liger import Liger
from labeling.partitions import spherical_kmeans
from labeling.smoothing import smooth
from toolkit.errors import LoomError


def clustered(n=1200, m=6, k=2, d=24, n_clusters=16, cov=0.15, acc=(0.65, 0.8), spread=0.3, seed=0):
    """Points in tight clusters with one label per cluster; sparse, noisy, independent LFs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d))
    cl = rng.integers(n_clusters, size=n)
    Y = rng.integers(k, size=n_clusters)[cl]
    X = (centers[cl] + spread * rng.normal(size=(n, d))).astype(np.float32)
    L = np.full((n, m), -1, np.int64)
    accs = rng.uniform(*acc, size=m)
    for j in range(m):
        fires = rng.random(n) < cov
        right = rng.random(n) < accs[j]
        L[:, j] = np.where(fires, np.where(right, Y, (Y + rng.integers(1, k, size=n)) % k), -1)
    return L, X, Y


def accuracy(probs, Y):
    return float((np.asarray(probs).argmax(1) == Y).mean())


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(scope="module")
def fitted(data):
    L, X, Y = data
    return Liger(cardinality=2, base="TripletModel", n_partitions=2).fit(L, X)


def test_extension_raises_coverage_and_accuracy(data, fitted):
    L, X, Y = data
    vanilla = get_label_model("TripletModel", 2).fit(L)
    base_acc = accuracy(vanilla.predict_proba(L), Y)
    lig_acc = accuracy(fitted.predict_proba(L, X), Y)
    assert fitted.coverage_after_.mean() > fitted.coverage_before_.mean() + 0.15
    assert lig_acc > base_acc + 0.1, (base_acc, lig_acc)
    # extended votes are about as accurate as the originals on clustered data
    new = (L < 0) & (fitted.extended_L >= 0)
    assert new.any()
    assert (fitted.extended_L[new] == np.broadcast_to(Y[:, None], L.shape)[new]).mean() > 0.6
    # original votes are never changed
    assert (fitted.extended_L[L >= 0] == L[L >= 0]).all()


@pytest.mark.parametrize("base", ["LabelModel", "DawidSkene"])
def test_models_that_read_abstentions_gain_too(data, base):
    """Extension fills dense regions for every LF at once; fitted on extended votes, a model
    that reads abstentions as class evidence learns density instead of the class (it fell
    to chance here before Liger fitted on the LFs' own votes)."""
    L, X, Y = data
    vanilla = accuracy(get_label_model(base, 2).fit(L).predict_proba(L), Y)
    lig = accuracy(Liger(2, base=base, n_partitions=2).fit(L, X).predict_proba(L, X), Y)
    assert lig > vanilla + 0.1, (base, vanilla, lig)


def test_reports_and_predict(data, fitted):
    L, X, Y = data
    pa = fitted.partition_accuracies_
    assert set(pa.columns) >= {"partition", "lf", "accuracy", "size"}
    assert len(pa) == 2 * L.shape[1]
    assert pa.groupby("partition")["size"].first().sum() == len(L)
    assert pa["accuracy"].dropna().between(0, 1).all()
    cov = fitted.coverage_
    assert list(cov.columns[:3]) == ["lf", "before", "after"]
    assert (cov["after"] >= cov["before"]).all()
    pred = fitted.predict(L, X)
    assert pred.shape == (len(L),) and set(np.unique(pred)) <= {-1, 0, 1}
    probs = fitted.predict_proba(L, X)
    assert np.allclose(probs.sum(1), 1, atol=1e-4)


def test_new_points_extend_from_training_votes(data, fitted):
    L, X, Y = data
    # new points: jittered copies of training points with no votes of their own
    rng = np.random.default_rng(1)
    Xn = X[:200] + 0.01 * rng.normal(size=X[:200].shape).astype(np.float32)
    Ln = np.full((200, L.shape[1]), -1, np.int64)
    ext = fitted.extend(Ln, Xn)
    assert (ext >= 0).mean() > 0.3
    assert accuracy(fitted.predict_proba(Ln, Xn), Y[:200]) > 0.7


def test_must_not_hurt_much_without_structure():
    """Embeddings unrelated to the labels: Liger may not help but must not hurt much."""
    L, _, Y = clustered(n=1000, cov=0.5, seed=3)
    X = np.random.default_rng(5).normal(size=(1000, 16)).astype(np.float32)
    base = accuracy(get_label_model("TripletModel", 2).fit(L).predict_proba(L), Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lig = Liger(2, base="TripletModel", n_partitions=1).fit(L, X)
    assert accuracy(lig.predict_proba(L, X), Y) > base - 0.05


def test_unsmooth_embedding_turns_extension_off(data, fitted):
    """Sparse LFs (10% coverage) and embeddings that ignore the labels: without the smoothness
    check, extension copied noise and cost 7 points on 20k rows; now Liger stays vanilla."""
    L, X, Y = clustered(n=3000, m=8, cov=0.1, seed=7)
    R = np.random.default_rng(8).normal(size=(3000, 64)).astype(np.float32)
    vanilla = accuracy(get_label_model("LabelModel", 2).fit(L).predict_proba(L), Y)
    with pytest.warns(UserWarning, match="do not share labels beyond chance"):
        lig = Liger(2).fit(L, R)
    assert abs(lig.smoothness_["kappa"]) < 0.1
    assert (lig.extended_L == L).all() and len(lig.centroids_) == 1
    assert accuracy(lig.predict_proba(L, R), Y) > vanilla - 0.01
    # the same LFs on the clustered embedding: smooth, extended
    assert fitted.smoothness_["kappa"] > 0.2
    forced = Liger(2, min_smoothness=None).fit(L, R)
    assert (forced.extended_L >= 0).mean() > (L >= 0).mean()


def test_dev_set_tunes_radius(data):
    L, X, Y = data
    ydev = np.full(len(Y), -1)
    ydev[:300] = Y[:300]
    lig = Liger(2, base="TripletModel", n_partitions=1).fit(L, X, Y_dev=ydev)
    assert (lig.radius_ > 0).any()
    assert accuracy(lig.predict_proba(L, X), Y) > 0.75


def test_fixed_radius_zero_is_vanilla(data):
    L, X, Y = data
    lig = Liger(2, base="TripletModel", n_partitions=1, radius=0.0).fit(L, X)
    assert (lig.extended_L == L).all()


def test_bad_input(data):
    L, X, Y = data
    with pytest.raises(LoomError, match="rows"):
        Liger(2).fit(L, X[:-5])
    Xn = X.copy()
    Xn[3, 0] = np.nan
    with pytest.raises(LoomError, match="NaN"):
        Liger(2).fit(L, Xn)
    Xz = X.copy()
    Xz[7] = 0
    with pytest.raises(LoomError, match="zero vectors"):
        Liger(2).fit(L, Xz)
    with pytest.raises(LoomError, match="k_neighbors"):
        Liger(2, k_neighbors=50).fit(L[:20], X[:20])
    with pytest.raises(LoomError, match="cardinality"):
        Liger(2).fit(np.where(L >= 0, 2, -1), X)
    with pytest.raises(LoomError, match="radius"):
        Liger(2, radius=[0.1, 0.2]).fit(L, X)


def test_partition_where_an_lf_never_votes():
    """LF 0 only votes in one of two well-separated regions: fallback is warned and documented."""
    L, X, Y = clustered(n=800, m=4, cov=0.3, seed=2)
    X[:400] += 50.0  # two far-apart regions
    L[400:, 0] = -1
    with pytest.warns(UserWarning, match="never vote"):
        lig = Liger(2, base="TripletModel", n_partitions=2, radius=0.0).fit(L, X)
    pa = lig.partition_accuracies_
    silent_part = int(np.bincount(lig.partitions_[400:]).argmax())
    row = pa[(pa["partition"] == silent_part) & (pa["lf"] == "lf_0")]
    assert np.isnan(row["accuracy"].iloc[0])
    assert np.isfinite(lig.predict_proba(L, X)).all()


def test_small_partition_uses_global_model(data):
    L, X, Y = data
    with pytest.warns(UserWarning, match="global label model"):
        lig = Liger(2, base="TripletModel", n_partitions=3, min_partition_size=5000).fit(L, X)
    assert all(m is None for m in lig.models_)
    assert np.allclose(lig.predict_proba(L, X), lig.global_model_.predict_proba(lig.extended_L))


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 8)) * 0.05 + c for c in np.eye(8)[:3] * 5])
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    _, a = spherical_kmeans(X, 3)
    assert len({tuple(np.unique(a[i * 100 : (i + 1) * 100])) for i in range(3)}) == 3


def test_smooth_writes_workspace_tables(tmp_path, data):
    from toolkit.workspace import Workspace

    L, X, Y = data
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("label", {"smooth": "liger"})
    probs, preds, model = smooth(
        "liger", L, 2, embeddings=X, ws=ws, run=run, base="TripletModel", n_partitions=2
    )
    cov = ws.load_table(run, "coverage")
    assert list(cov.columns) == ["lf", "before", "after"] and len(cov) == L.shape[1]
    pa = ws.load_table(run, "partition_accuracy")
    assert list(pa.columns) == ["partition", "lf", "accuracy", "size"]
    assert accuracy(probs, Y) > 0.75
    with pytest.raises(LoomError, match="liger"):
        smooth("bogus", L, 2, embeddings=X)


LFS_PY = """
from labeling.lf import labeling_function

cardinality = 5
WORDS = {0: ["shares", "profit", "bank", "economy", "firm", "sales"],
         1: ["film", "music", "star", "award", "band", "show"],
         2: ["labour", "minister", "election", "party", "blair", "tory"],
         3: ["match", "cup", "coach", "win", "england", "champion"],
         4: ["mobile", "software", "net", "computer", "phone", "games"]}


def make(c):
    @labeling_function(name=f"kw_{c}")
    def lf(x):
        words = set(x.text.lower().replace(",", " ").split())
        return c if words & set(WORDS[c]) else -1
    return lf


lfs = [make(c) for c in range(5)]
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["liger", "embroid"])
def test_cli_label_smooth(tmp_path, method):
    """`loom label --smooth` end to end on the bundled BBC sample (MiniLM embeddings)."""
    from apps.cli import main
    from toolkit.datasets import sample_corpus
    from toolkit.workspace import Workspace

    df = sample_corpus()
    data = tmp_path / "bbc.csv"
    df.assign(
        text=df["title"] + ". " + df["summary"],
        label=df["category"].map(sorted(df["category"].unique()).index),
    )[["text", "label"]].to_csv(data, index=False)
    (tmp_path / "lfs.py").write_text(LFS_PY)
    out = tmp_path / "ws"
    argv = ["label", "--data", str(data), "--lfs", str(tmp_path / "lfs.py"), "--out", str(out)]
    assert main([*argv, "--gold-column", "label", "--smooth", method]) == 0
    ws = Workspace(out)
    run = ws.runs()["run_id"].iloc[-1]
    cov = ws.load_table(run, "coverage")
    assert len(cov) == 5 and (cov["after"] >= cov["before"]).all()
    assert (cov["after"] > cov["before"]).any()
    pa = ws.load_table(run, "partition_accuracy")
    assert pa["accuracy"].dropna().between(0, 1).all()
    probs = ws.load_table(run, "probs")
    assert len(probs) == len(df) and (probs["pred"] >= -1).all()


def test_extend_uses_the_embeddings_given(data):
    """Issue 20: extend() returned the training extension whenever L equalled the training
    matrix, whatever embeddings were passed."""
    L, X, _ = data
    lig = Liger(2, base="MajorityVoter", n_partitions=1, radius=0.3).fit(L, X)
    assert np.array_equal(lig.extend(L, X), lig.extended_L)  # the training rows themselves
    perm = np.random.default_rng(0).permutation(len(L))
    ext = lig.extend(L, X[perm])
    # row i now sits exactly on training point perm[i]: its nearest voted neighbour for an LF
    # that voted there is that point itself (distance 0), so it takes that vote
    take = (L < 0) & (L[perm] >= 0)
    assert take.sum() > 100
    assert np.array_equal(ext[take], L[perm][take])
    assert np.array_equal(ext[L >= 0], L[L >= 0])  # own votes are kept


def test_smooth_names_close_matches_of_unknown_arguments(data):
    L, X, _ = data
    with pytest.raises(TypeError, match=r"'n_partition'.*did you mean 'n_partitions'"):
        smooth("liger", L, 2, embeddings=X, n_partition=2)
    with pytest.raises(TypeError, match=r"'k_neighbours'.*did you mean 'k_neighbors'"):
        smooth("embroid", L, 2, embeddings=X, k_neighbours=5)
