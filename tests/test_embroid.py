"""Embroid on clustered synthetic data with known truth, several embedding spaces, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.embroid import Embroid, neighbourhood_votes, tfidf_svd_embeddings
from labeling.label_model import get_label_model
from labeling.smoothing import smooth
from toolkit.errors import LoomError


def prompt_like(n=1000, m=3, k=3, d=16, n_clusters=12, acc=0.6, spread=0.3, seed=0):
    """Dense noisy sources (every source always answers) on clustered points, one label per cluster."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d))
    cl = rng.integers(n_clusters, size=n)
    Y = rng.integers(k, size=n_clusters)[cl]
    X = (centers[cl] + spread * rng.normal(size=(n, d))).astype(np.float32)
    right = rng.random((n, m)) < acc
    P = np.where(right, Y[:, None], (Y[:, None] + rng.integers(1, k, size=(n, m))) % k)
    return P.astype(np.int64), X, Y


def accuracy(probs, Y):
    return float((np.asarray(probs).argmax(1) == Y).mean())


@pytest.fixture(scope="module")
def data():
    return prompt_like()


def test_smoothing_lifts_noisy_sources(data):
    P, X, Y = data
    vanilla = accuracy(get_label_model("TripletModel", 3).fit(P).predict_proba(P), Y)
    emb = Embroid(k_neighbors=10, base="TripletModel", cardinality=3)
    probs, pred = emb.fit_predict(P, [X])
    assert probs.shape == (len(P), 3) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert pred.shape == (len(P),)
    assert accuracy(probs, Y) > vanilla + 0.15, (vanilla, accuracy(probs, Y))
    # neighbourhood votes of each source are far more accurate than the source itself
    V = emb.neighbor_votes_[0]
    ok = V >= 0
    assert (V[ok] == np.broadcast_to(Y[:, None], V.shape)[ok]).mean() > 0.85
    assert emb.L_aug_.shape == (len(P), 2 * P.shape[1])


def test_two_spaces_one_useless(data):
    """A random space adds noise votes; with a good space alongside, smoothing still helps."""
    P, X, Y = data
    R = np.random.default_rng(9).normal(size=(len(P), 8)).astype(np.float32)
    vanilla = accuracy(get_label_model("TripletModel", 3).fit(P).predict_proba(P), Y)
    probs, _ = Embroid(k_neighbors=10, base="TripletModel", cardinality=3).fit_predict(P, [X, R])
    assert accuracy(probs, Y) > vanilla + 0.05


def test_must_not_hurt_much_without_structure():
    P, _, Y = prompt_like(n=800, m=5, acc=0.7, seed=4)
    R = np.random.default_rng(1).normal(size=(800, 8)).astype(np.float32)
    vanilla = accuracy(get_label_model("TripletModel", 3).fit(P).predict_proba(P), Y)
    emb = Embroid(k_neighbors=10, base="TripletModel", cardinality=3)
    with pytest.warns(UserWarning, match="not smooth"):
        probs, _ = emb.fit_predict(P, [R])
    # random neighbours agree with a source only by chance: the smoothness check drops them all
    assert not emb.smoothness_["used"].any() and emb.smoothness_["kappa"].abs().max() < 0.1
    assert accuracy(probs, Y) > vanilla - 0.05


def test_neighbourhood_votes_threshold():
    P = np.array([[0], [0], [1], [-1], [1]])
    ids = np.array([[1, 2], [0, 2], [0, 1], [0, 1], [2, 3]])
    V = neighbourhood_votes(P, ids, cardinality=2, threshold=0.5)
    # row 0: neighbours vote 0 and 1 -> tie -> abstain; row 3: both 0 -> 0; row 4: 1 and abstain -> 1
    assert V[:, 0].tolist() == [-1, -1, 0, 0, 1]
    V = neighbourhood_votes(P, ids, cardinality=2, threshold=1.0)
    assert V[:, 0].tolist() == [-1, -1, 0, 0, -1]


def test_texts_with_tfidf_and_callable_embedders():
    rng = np.random.default_rng(0)
    topics = [
        ["goal", "match", "team", "cup"],
        ["stock", "market", "shares", "bank"],
        ["film", "actor", "music", "star"],
    ]
    Y = rng.integers(3, size=300)
    texts = [
        " ".join(rng.choice(topics[y], 5)) + " " + " ".join(rng.choice(["the", "a", "of"], 3))
        for y in Y
    ]
    P = np.where(rng.random((300, 3)) < 0.6, Y[:, None], (Y[:, None] + 1) % 3).astype(np.int64)
    T = tfidf_svd_embeddings(texts, 16)
    assert T.shape[0] == 300 and np.allclose(np.linalg.norm(T, axis=1), 1, atol=1e-4)

    def bag(ts):  # a user embedding function
        return np.array([[t.count(w) for w in sum(topics, [])] for t in ts], float) + 1e-3

    emb = Embroid(k_neighbors=8, embedders=["tfidf-svd:16", bag], base="TripletModel")
    probs, _ = emb.fit_predict(P, texts=texts)
    assert emb.space_names_ == ["tfidf-svd:16", "bag"]
    assert accuracy(probs, Y) > 0.85
    with pytest.raises(LoomError, match="texts"):
        Embroid(embedders=["tfidf-svd"]).fit_predict(P)


def test_default_minilm_space_on_real_text():
    """The default embedder (MiniLM) as a space: same-topic sentences become neighbours."""
    sport = [
        "The striker scored twice in the cup final.",
        "The team won the league match.",
        "A late goal sealed victory for the home side.",
        "The coach praised his defenders.",
    ]
    money = [
        "Shares fell sharply on the stock market.",
        "The bank raised interest rates.",
        "Profits at the firm doubled this year.",
        "Investors sold bonds amid inflation fears.",
    ]
    texts = sport + money
    Y = np.array([0] * 4 + [1] * 4)
    P = np.array([[0], [0], [1], [0], [1], [1], [0], [1]])  # one wrong vote per topic
    emb = Embroid(k_neighbors=3, embedders=[None], base="MajorityVoter")
    emb.fit_predict(P, texts=texts)
    V = emb.neighbor_votes_[0][:, 0]
    assert (V[V >= 0] == Y[V >= 0]).mean() >= 0.85 and (V >= 0).sum() >= 6


def test_workspace_tables(tmp_path, data):
    from toolkit.workspace import Workspace

    P, X, Y = data
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("label", {"smooth": "embroid"})
    probs, preds, model = smooth("embroid", P, 3, embeddings=X, ws=ws, run=run, base="TripletModel")
    cov = ws.load_table(run, "coverage")
    assert list(cov.columns) == ["lf", "before", "after"] and len(cov) == 3
    pa = ws.load_table(run, "partition_accuracy")
    assert len(pa) == 6 and pa["lf"].str.contains("@").sum() == 3
    assert accuracy(probs, Y) > 0.8


def test_bad_input(data):
    P, X, Y = data
    with pytest.raises(LoomError, match="rows"):
        Embroid(cardinality=3).fit_predict(P, [X[:10]])
    Xn = X.copy()
    Xn[0, 0] = np.inf
    with pytest.raises(LoomError, match="NaN"):
        Embroid(cardinality=3).fit_predict(P, [Xn])
    Xz = X.copy()
    Xz[2] = 0
    with pytest.raises(LoomError, match="zero vectors"):
        Embroid(cardinality=3).fit_predict(P, [Xz])
    with pytest.raises(LoomError, match="k_neighbors"):
        Embroid(k_neighbors=20, cardinality=3).fit_predict(P[:10], [X[:10]])
    with pytest.raises(LoomError, match="embedding space"):
        Embroid(cardinality=3).fit_predict(P)
    with pytest.raises(LoomError, match="threshold"):
        Embroid(cardinality=3, threshold=[0.5, 0.5]).fit_predict(P, [X])
    with pytest.raises(LoomError):
        Embroid(cardinality=2).fit_predict(P, [X])  # votes of class 2 with cardinality 2
