"""linking's public API on unusual but legitimate input, and on bad input: clear errors,
nothing silently dropped or matched wrongly."""

from __future__ import annotations

import logging
import random

import numpy as np
import pandas as pd
import pytest

import linking
from toolkit.errors import LoomError

NAMES = [
    "Acme Corp",
    "Globex Inc",
    "Initech LLC",
    "Umbrella Corp",
    "Stark Industries",
    "Wayne Enterprises",
    "Wonka Industries",
    "Cyberdyne Systems",
]


@pytest.fixture(scope="module")
def firms():
    return pd.DataFrame({"name": NAMES, "city": ["NY", "LA", "SF", "RC", "NY", "GC", "UK", "LA"]})


def test_nan_of_any_float_type_is_an_empty_key():
    """A NaN held as np.float32 in an object column is missing, not the text "nan" that
    matched every other such NaN with score 1."""
    df = pd.DataFrame(
        {"name": pd.Series(["Acme Corp", np.float32("nan"), "Globex Inc"], dtype=object)}
    )
    with pytest.warns(linking.EmptyKeyWarning):
        out = linking.merge(df, df, on="name", how="inner")
    assert sorted(out["left_row"].tolist()) == [0, 2]
    assert out.attrs["linking"]["left_empty_keys"] == 1


def test_numpy_datetime_cells_are_dates():
    """np.datetime64 cells in an object column are dates like a datetime column's (NaT is
    missing), not a 'convert the column' error."""
    cells = [np.datetime64("2020-01-01"), np.datetime64("NaT"), "2021-05-06"]
    df = pd.DataFrame({"when": pd.Series(cells, dtype=object)})
    with pytest.warns(linking.EmptyKeyWarning):
        pairs, report = linking.link(df, df, on="when", threshold=None, char_weight=0.5)
    assert report["left_empty_keys"] == 1
    assert 1 not in pairs["left_row"].tolist() and 0 in pairs["left_row"].tolist()


def test_integer_column_labels(firms):
    """Tables read without a header have columns 0, 1, ...: they can be linked on them."""
    left = firms.set_axis([0, 1], axis=1)
    right = left.iloc[::-1].reset_index(drop=True)
    out = linking.merge(left, right, on=0)
    assert out["right_row"].tolist() == list(range(7, -1, -1))
    assert "0_left" in out.columns and "1_right" in out.columns
    dups = linking.dedup(pd.concat([left, left], ignore_index=True), on=[0, 1])
    assert dups["cluster_id"].iloc[:8].tolist() == dups["cluster_id"].iloc[8:].tolist()
    for bad in (True, 1.5):
        with pytest.raises(LoomError, match="on must"):
            linking.merge(left, right, on=bad)


def test_cluster_graph_methods_check_their_options(firms):
    df = pd.concat([firms, firms], ignore_index=True)
    for threshold in ("auto", None):
        with pytest.raises(LoomError, match="agglomerative"):
            linking.cluster(df, on="name", method="agglomerative", threshold=threshold)
    for size in (-3, 1, "x", 2.5):
        with pytest.raises(LoomError, match="min_cluster_size"):
            linking.cluster(df, on="name", method="hdbscan", min_cluster_size=size)
    # char_weight="auto" outside the cascade is the encoder cosine, as in dedup
    for method in ("agglomerative", "hdbscan"):
        auto = linking.cluster(df, on="name", method=method, char_weight="auto")
        plain = linking.cluster(df, on="name", method=method, char_weight=0.0)
        assert auto["cluster_id"].tolist() == plain["cluster_id"].tolist()
        assert auto["cluster_id"].iloc[:8].tolist() == auto["cluster_id"].iloc[8:].tolist()


def test_aggregate_refuses_auto_threshold(firms):
    with pytest.raises(LoomError, match="aggregate\\(threshold='auto'\\)"):
        linking.aggregate(firms, ["technology", "food"], on="name", threshold="auto")


def test_tune_threshold_needs_gold_pairs(firms):
    out = linking.merge(firms, firms, on="name", threshold=None, k=2)
    with pytest.raises(LoomError, match="gold holds no pairs"):
        linking.tune_threshold(out, [])


def test_train_batches_use_every_pair():
    """Pairs of a few large clusters: every pair lands in some batch (only the first few of
    each epoch did), and no batch holds one cluster twice."""
    from linking.train import _batches

    groups = [i // 45 for i in range(135)]
    texts = [f"text {i}" for i in range(135)]
    batches = _batches(groups, texts, 32, random.Random(0))
    used = [i for b in batches for i in b]
    assert sorted(used) == list(range(135))
    assert all(len({groups[i] for i in b}) == len(b) >= 2 for b in batches)
    assert _batches([0] * 5, texts[:5], 32, random.Random(0)) == []


def test_train_checks_its_inputs(tmp_path):
    pairs = [(f"firm {i}", f"firm {i} inc") for i in range(12)]
    for frac in (-0.2, 1.0, 1.5, "x"):
        with pytest.raises(LoomError, match="eval_fraction"):
            linking.train(pairs, eval_fraction=frac, output_dir=tmp_path / "m", progress=False)
    one_cluster = pd.DataFrame({"name": ["acme", "acme corp", "acme inc"], "entity": [0, 0, 0]})
    with pytest.raises(LoomError, match="cannot form a batch"):
        linking.train(
            one_cluster, cluster_col="entity", on="name", output_dir=tmp_path / "m", progress=False
        )
    assert not (tmp_path / "m").exists()


def test_multimodal_thresholds_are_numbers(firms):
    from linking.multimodal import ClipEncoder, cluster, dedup, merge

    enc = ClipEncoder.tiny()
    df = firms.assign(img=None)
    with pytest.raises(LoomError, match="threshold='auto'"):
        merge(df, df, image_col="img", on="name", model=enc, threshold="auto")
    for threshold in ("auto", None):  # None chained every row into one cluster
        with pytest.raises(LoomError, match="dedup\\(threshold="):
            dedup(df, image_col="img", on="name", model=enc, threshold=threshold)
    with pytest.raises(LoomError, match="agglomerative"):
        cluster(df, image_col="img", on="name", model=enc, method="agglomerative", threshold=None)
    with pytest.raises(LoomError, match="min_cluster_size"):
        cluster(df, image_col="img", on="name", model=enc, method="hdbscan", min_cluster_size=0)


def test_auto_threshold_from_few_scores_is_said(firms, caplog):
    # every duplicate an exact copy: the exact pairs are left out of the mixture, whose "match"
    # mode is then the more alike non-matches ("... Corp", "... Industries") and cuts through
    # them; the threshold stays as the data give it, but the log says it rests on few scores
    twice = pd.concat([firms[["name"]]] * 2, ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="linking.select"):
        out = linking.dedup(twice, on="name")
    report = out.attrs["linking"]
    assert report["threshold_source"] == "mixture"
    assert f"threshold='auto' chose {report['threshold']} from only" in caplog.text
    assert "linking.tune_threshold" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="linking.select"):
        linking.dedup(twice, on="name", threshold=0.9)  # a given threshold: nothing to say
    assert "from only" not in caplog.text


def test_multimodal_merge_checks_how_and_one_to_one_before_encoding(firms, monkeypatch):
    import linking.multimodal as mm

    def no_encoder(*args, **kwargs):  # the checks must come before any record is encoded
        raise AssertionError("encoded before the options were checked")

    monkeypatch.setattr(mm, "clip_encoder", no_encoder)
    df = firms.assign(img=None)
    with pytest.raises(LoomError, match="how='one_to_one'"):
        mm.merge(df, df, image_col="img", on="name", how="one_to_one")
    with pytest.raises(LoomError, match="one_to_one=True keeps one match per row"):
        mm.merge(df, df, image_col="img", on="name", k=3, one_to_one=True)


def test_train_says_which_rows_it_leaves_out(tmp_path, caplog):
    rows = pd.DataFrame(
        {"name": ["acme", "acme corp", "", "acme co", "acme inc"], "entity": [0, 0, 0, 0, np.nan]}
    )
    with caplog.at_level(logging.WARNING, logger="linking.train"):
        with pytest.raises(LoomError, match="cannot form a batch"):  # one cluster: no batch
            linking.train(rows, cluster_col="entity", on="name", output_dir=tmp_path / "m")
    assert "1 of 5 rows/pairs left out: no 'entity' (NaN)" in caplog.text
    assert "1 of 5 rows/pairs left out: empty text" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="linking.train"):
        with pytest.raises(LoomError, match="at least 2 matching pairs"):
            linking.train([("acme", "acme corp"), ("  ", "globex")], output_dir=tmp_path / "n")
    assert "1 of 2 rows/pairs left out: an empty text" in caplog.text
