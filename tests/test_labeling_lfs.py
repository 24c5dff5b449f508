"""LFs, appliers (pandas, forked processes, dask), LF analysis and metrics."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from labeling import (
    DaskLFApplier,
    LFAnalysis,
    LFApplier,
    LFError,
    filter_unlabeled_dataframe,
    keyword_lf,
    labeling_function,
    metric_score,
    model_lf,
    preprocessor,
    prompt_lf,
    regex_lf,
    threshold_lf,
)
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def reviews():
    from toolkit.datasets import load_rotten_tomatoes

    return load_rotten_tomatoes().sample(3000, random_state=0).reset_index(drop=True)


@labeling_function()
def lf_exclaim(x):
    return 1 if "!" in x.text else -1


@labeling_function()
def lf_long(x):
    return 0 if len(x["text"]) > 200 else -1


def _vector_lfs():
    return [
        keyword_lf("kw_good", ["great", "best", "wonderful", "funny"], 1),
        keyword_lf("kw_bad", ["dull", "boring", "worst", "mess"], 0),
        regex_lf("rx_fail", r"\bfails?\b|\bdisappoint", 0),
        threshold_lf("short", lambda df: df.text.str.len(), 60, label_above=-1, label_below=1),
    ]


def test_vectorized_and_row_lfs(reviews):
    lfs = [*_vector_lfs(), lf_exclaim, lf_long]
    L = LFApplier(lfs).apply(reviews, progress=False)
    assert L.shape == (len(reviews), 6) and L.dtype == np.int64
    text = reviews.text.str.lower()
    assert np.array_equal(
        L[:, 0] == 1, text.str.contains(r"\b(?:wonderful|great|funny|best)\b").to_numpy()
    )
    assert np.array_equal(L[:, 4] == 1, reviews.text.str.contains("!", regex=False).to_numpy())
    assert set(np.unique(L[:, 3])) <= {-1, 1}


def test_snorkel_lfs_run_unchanged(reviews):
    from snorkel.labeling import PandasLFApplier
    from snorkel.labeling import labeling_function as snorkel_lf
    from snorkel.preprocess import preprocessor as snorkel_pre

    @snorkel_pre()
    def add_words(x):
        x.n_words = len(x.text.split())
        return x

    @snorkel_lf(pre=[add_words])
    def wordy(x):
        return 0 if x.n_words > 30 else -1

    @snorkel_lf(resources={"good": {"great", "fun"}})
    def good(x, good):
        return 1 if good & set(x.text.lower().split()) else -1

    df = reviews.head(400)
    ours = LFApplier([wordy, good]).apply(df, progress=False)
    ours_series = LFApplier([wordy, good], row_type="series").apply(df, progress=False)
    theirs = PandasLFApplier([wordy, good]).apply(df, progress_bar=False)
    assert np.array_equal(ours, theirs) and np.array_equal(ours_series, theirs)
    assert (ours >= 0).any(0).all()


def test_processes_match_serial(reviews):
    lfs = [lf_exclaim, lf_long, *_vector_lfs()]
    serial = LFApplier(lfs).apply(reviews, progress=False)
    forked = LFApplier(lfs).apply(reviews, n_jobs=2, progress=False, min_rows_per_job=500)
    assert np.array_equal(serial, forked)


def test_lf_errors_name_lf_and_row(reviews):
    @labeling_function()
    def fragile(x):
        if x.text.startswith("A"):
            raise RuntimeError("boom")
        return -1

    df = reviews.head(300)
    with pytest.raises(LFError, match=r"fragile.*row \d+"):
        LFApplier([fragile]).apply(df, progress=False)
    with pytest.warns(UserWarning, match="fragile"):
        L, meta = LFApplier([fragile]).apply(
            df, progress=False, fault_tolerant=True, return_meta=True
        )
    expected = int(df.text.str.startswith("A").sum())
    assert meta.faults["fragile"] == expected > 0
    assert (L == -1).all()

    @labeling_function()
    def bad_vote(x):
        return "yes"

    with pytest.raises(LFError, match="bad_vote"):
        LFApplier([bad_vote]).apply(df, progress=False)
    with pytest.raises(LFError, match="kw_good"):
        LFApplier([keyword_lf("kw_good", ["great"], 5)], cardinality=2).apply(df, progress=False)
    with pytest.raises(LoomError, match="unique"):
        LFApplier([lf_exclaim, lf_exclaim])
    with pytest.raises(LoomError, match="lacks"):
        LFApplier([keyword_lf("k", ["a"], 1, column="body")]).apply(df, progress=False)


def test_nan_text_warns_and_abstains():
    df = pd.DataFrame({"text": ["great fun", None, np.nan, "boring"]})
    with pytest.warns(UserWarning, match="2 missing values"):
        L = LFApplier(_vector_lfs()[:2]).apply(df, progress=False)
    assert L[1:3].tolist() == [[-1, -1], [-1, -1]]
    assert L[0, 0] == 1 and L[3, 1] == 0


def test_preprocessor_memoizes():
    calls = []

    @preprocessor(memoize=True)
    def words(x):
        calls.append(1)
        x.words = x.text.split()
        return x

    @labeling_function(pre=[words])
    def many(x):
        return 1 if len(x.words) > 2 else 0

    @labeling_function(pre=[words])
    def few(x):
        return 0 if len(x.words) < 2 else -1

    df = pd.DataFrame({"text": ["a b c", "a", "a b c"]})
    L = LFApplier([many, few]).apply(df, progress=False)
    assert L.tolist() == [[1, -1], [0, 0], [1, -1]]
    assert len(calls) == 2  # two distinct rows, each computed once for both LFs


def test_dask_applier_matches_pandas(reviews):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    lfs = [lf_exclaim, lf_long, *_vector_lfs()]
    df = reviews.head(1200)
    expected = LFApplier(lfs).apply(df, progress=False)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with Client(cluster):
            L = DaskLFApplier(lfs).apply(dd.from_pandas(df, npartitions=4))
    assert np.array_equal(L, expected)
    with pytest.raises(LoomError, match="dask DataFrame"):
        DaskLFApplier(lfs).apply(df)


def test_lf_analysis_matches_snorkel(reviews):
    from snorkel.labeling import LFAnalysis as SnorkelAnalysis

    lfs = [*_vector_lfs(), lf_exclaim, lf_long]
    L = LFApplier(lfs).apply(reviews, progress=False)
    Y = reviews.label.to_numpy()
    ours = LFAnalysis(L, lfs).lf_summary(Y)
    theirs = SnorkelAnalysis(L, lfs).lf_summary(Y)
    assert np.allclose(ours.coverage, theirs.Coverage)
    assert np.allclose(ours.overlaps, theirs.Overlaps)
    assert np.allclose(ours.conflicts, theirs.Conflicts)
    assert np.array_equal(ours.correct, theirs.Correct)
    assert np.allclose(ours.emp_acc, theirs["Emp. Acc."])
    a = LFAnalysis(L, lfs)
    sa = SnorkelAnalysis(L, lfs)
    assert a.label_coverage() == pytest.approx(sa.label_coverage())
    assert a.label_overlap() == pytest.approx(sa.label_overlap())
    assert a.label_conflict() == pytest.approx(sa.label_conflict())
    assert "coverage" in a._repr_html_()


def test_metrics_and_filter():
    golds = np.array([0, 1, 1, 0, 1])
    preds = np.array([0, 1, -1, 1, 1])
    assert metric_score(golds, preds, metric="accuracy", filter_dict={"preds": [-1]}) == 0.75
    assert metric_score(golds, preds, metric="coverage") == 0.8
    assert metric_score(golds, preds, metric="f1", filter_dict={"preds": [-1]}) == pytest.approx(
        0.8
    )
    X = pd.DataFrame({"a": range(3)})
    L = np.array([[-1, -1], [0, -1], [1, 1]])
    Xf, yf = filter_unlabeled_dataframe(X, np.eye(3), L)
    assert Xf.a.tolist() == [1, 2] and yf.shape == (2, 3)


def test_model_lf_sklearn_and_zero_shot(reviews):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train, test = reviews.iloc[:2000], reviews.iloc[2000:2200].reset_index(drop=True)
    clf = make_pipeline(TfidfVectorizer(min_df=2), LogisticRegression(max_iter=200))
    clf.fit(train.text, train.label)
    lf = model_lf("tfidf", clf, threshold=0.7)
    votes = LFApplier([lf]).apply(test, progress=False)[:, 0]
    voted = votes >= 0
    assert 0.1 < voted.mean() < 1.0
    assert (votes[voted] == test.label.to_numpy()[voted]).mean() > 0.65

    zs = model_lf(
        "zero_shot",
        class_descriptions={
            0: "a bad, boring, disappointing movie",
            1: "a great, enjoyable, moving movie",
        },
        margin=0.03,
    )
    small = test.head(60)
    v = LFApplier([zs]).apply(small, progress=False)[:, 0]
    assert (v >= 0).mean() > 0.2
    assert (v[v >= 0] == small.label.to_numpy()[v >= 0]).mean() > 0.6
    with pytest.raises(LoomError, match="exactly one"):
        model_lf("x")


def test_prompt_lf_maps_answers():
    # a user-supplied answer function (the LLM client interface is any callable prompt -> text)
    def answer(prompt: str) -> str:
        return "Answer: Positive." if "love" in prompt else "I think it is negative"

    lf = prompt_lf(
        "ask",
        "Is this review positive or negative? {text}",
        {"positive": 1, "negative": 0},
        llm=answer,
    )
    df = pd.DataFrame({"text": ["I love it", "meh"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert LFApplier([lf]).apply(df, progress=False)[:, 0].tolist() == [1, 0]
    with pytest.raises(LoomError, match="body"):
        LFApplier([prompt_lf("p", "{body}", {"yes": 1}, llm=answer)]).apply(df, progress=False)


def test_regex_lf_falls_back_for_patterns_re2_rejects(reviews):
    # RE2 (Arrow's fast path) has no look-arounds: Python's re takes over with the same result
    lf = regex_lf("not_followed", r"\bgood(?! grief)\b", 1)
    L = LFApplier([lf]).apply(reviews, progress=False)[:, 0]
    expected = reviews.text.str.contains(r"(?i)\bgood(?! grief)\b").to_numpy()
    assert np.array_equal(L == 1, expected) and expected.any()


@pytest.mark.slow
def test_prompt_lf_with_the_embedded_llm():
    """The default toolkit.llm client: one batched call; votes follow the model's own answers."""
    from labeling.lf import parse_label_answer
    from toolkit.llm import get_llm

    df = pd.DataFrame({"text": ["I loved this film, wonderful!", "Awful, boring and too long."]})
    template = "Review: {text}\nIs this review positive or negative? Answer in one word:"
    lf = prompt_lf("smol", template, {"positive": 1, "negative": 0}, max_tokens=4)
    L = LFApplier([lf]).apply(df, progress=False)
    answers = get_llm().complete([template.format(text=t) for t in df["text"]], max_tokens=4)
    expected = [parse_label_answer(a.text, {"positive": 1, "negative": 0}) for a in answers]
    assert L[:, 0].tolist() == expected
    assert all(a.cached for a in answers)  # the LF's call filled the completion cache


def _bad_values_frame(n=400):
    return pd.DataFrame({"text": [f"row {i}" for i in range(n)], "i": np.arange(n)})


@labeling_function()
def lf_bad_values(x):
    """Votes i % 2, but 'yes' on rows 5, 15, ..., 7 on 7, 17, ... and 0.5 on 9, 19, ..."""
    return {5: "yes", 7: 7, 9: 0.5}.get(x.i % 10, x.i % 2)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_fault_tolerant_records_bad_return_values(n_jobs):
    """Issue 20: a bad return value raised even with fault_tolerant=True (row and vectorized)."""
    df = _bad_values_frame()

    def vec(d):
        out = (d.i % 2).to_numpy().astype(object)
        out[(d.i % 10 == 5).to_numpy()] = "yes"
        out[(d.i % 10 == 7).to_numpy()] = 7
        out[(d.i % 10 == 9).to_numpy()] = 0.5
        return out

    lfs = [lf_bad_values, labeling_function(name="vec_bad", vectorized=True)(vec)]
    applier = LFApplier(lfs, cardinality=2)
    with pytest.warns(UserWarning, match="not votes"):
        L, meta = applier.apply(
            df, n_jobs=n_jobs, min_rows_per_job=50, fault_tolerant=True, return_meta=True
        )
    bad = np.isin(df.i.to_numpy() % 10, [5, 7, 9])
    expected = np.where(bad, -1, df.i.to_numpy() % 2)
    assert L[:, 0].tolist() == expected.tolist() and L[:, 1].tolist() == expected.tolist()
    assert meta.faults == {"lf_bad_values": int(bad.sum()), "vec_bad": int(bad.sum())}
    assert "'yes'" in meta.errors["lf_bad_values"] and "'yes'" in meta.errors["vec_bad"]
    if n_jobs == 1:  # the dask applier, per partition, sums the same faults
        import dask.dataframe as dd

        with pytest.warns(UserWarning, match="not votes"):
            Ld, meta_d = DaskLFApplier(lfs, cardinality=2).apply(
                dd.from_pandas(df, npartitions=3),
                fault_tolerant=True,
                return_meta=True,
                scheduler="sync",
            )
        assert np.array_equal(Ld, L) and meta_d.faults == meta.faults
    # without fault_tolerant: the error names the LF, the row and the bad value
    with pytest.raises(LFError, match=r"lf_bad_values.*'yes' on row 5"):
        LFApplier(lfs[:1], cardinality=2).apply(df, n_jobs=n_jobs, min_rows_per_job=50)
    with pytest.raises(LFError, match=r"vec_bad.*'yes' on row 5"):
        LFApplier(lfs[1:], cardinality=2).apply(df)
    with pytest.raises(LFError, match=r"vec_bad.*returned 7 on row 7"):
        LFApplier(
            [
                labeling_function(name="vec_bad", vectorized=True)(
                    lambda d: np.where(d.i == 7, 7, -1)
                )
            ],
            cardinality=2,
        ).apply(df)


def test_row_lf_reading_x_name_gets_a_hint():
    """Issue 21: x.name on a frame with a `name` column is the row's index (pandas)."""

    @labeling_function()
    def starts_a(x):
        return 1 if x.name.startswith("A") else -1

    df = pd.DataFrame({"name": ["Alice", "Bob"], "text": ["a", "b"]})
    for row_type in ("row", "series"):
        with pytest.raises(LFError, match=r"starts_a.*'int' object.*x\['name'\]"):
            LFApplier([starts_a], row_type=row_type).apply(df, progress=False)
    with pytest.warns(UserWarning, match=r"x\['name'\]"):
        LFApplier([starts_a]).apply(df, progress=False, fault_tolerant=True)

    @labeling_function()
    def fragile(x):
        return 1 if x.text.startswith("A") else -1

    bad = pd.DataFrame({"name": ["Alice"], "text": [None]})
    with pytest.raises(LFError, match="fragile") as err:
        LFApplier([fragile]).apply(bad, progress=False)
    assert "x['name']" not in str(err.value)  # the LF never reads x.name: no hint


def test_preprocessor_memo_key_covers_every_field():
    """Issue 20: the memo key ignored non-scalar fields (and 1 == True), so rows shared results."""
    calls = []

    @preprocessor(memoize=True)
    def describe(x):
        calls.append(1)
        x.desc = f"{sorted(x.tags)}:{type(x.n).__name__}"
        return x

    @labeling_function(pre=[describe])
    def tagged(x):
        return 1 if "spam" in x.desc else 0

    @labeling_function(pre=[describe])
    def boolean(x):
        return 1 if x.desc.endswith("bool") else 0

    df = pd.DataFrame(
        {
            "text": ["a", "a", "a", "a"],
            "tags": [["ham"], ["spam"], ["ham"], ["ham"]],
            "n": pd.Series([1, 1, 1, True], dtype=object),
        }
    )
    L = LFApplier([tagged, boolean]).apply(df, progress=False)
    assert L.tolist() == [[0, 0], [1, 0], [0, 0], [0, 1]]
    assert len(calls) == 3  # rows 0 and 2 are equal in every field: computed once


def test_model_lf_cache_is_keyed_by_row_order(embedder):
    """Issue 20: the embedding cache key summed row hashes, so a reordered copy of the frame
    got the cached vectors in the old order."""
    zs = model_lf(
        "zs",
        class_descriptions={0: "a terrible, boring movie", 1: "a wonderful, moving movie"},
        embedder=embedder,
    )
    df = pd.DataFrame(
        {"text": ["a wonderful movie", "terrible and boring", "moving, wonderful", "boring"]}
    )
    v = LFApplier([zs]).apply(df, progress=False)[:, 0]
    assert v.tolist() == [1, 0, 1, 0]
    rev = LFApplier([zs]).apply(df.iloc[::-1], progress=False)[:, 0]
    assert rev.tolist() == v[::-1].tolist()


def test_embedding_cache_key_uses_fingerprint_and_order():
    """A namespace stands in for two embedders of one name with different weights (a test
    double: Embedder.fingerprint comes from toolkit, and no two real models share a name)."""
    from types import SimpleNamespace

    from labeling.lf import embedding_cache_key

    texts = pd.Series(["a", "b", "c"])
    old = SimpleNamespace(name="minilm", fingerprint="w1")
    new = SimpleNamespace(name="minilm", fingerprint="w2")
    assert embedding_cache_key(texts, old) != embedding_cache_key(texts, new)
    assert embedding_cache_key(texts, old) != embedding_cache_key(texts[::-1], old)
    assert embedding_cache_key(texts, old) == embedding_cache_key(texts.copy(), old)
    assert embedding_cache_key(texts, SimpleNamespace(name="minilm"))[0] == "minilm"


def test_prompt_lf_reads_negations():
    """Issue 20: "not positive" voted positive (first label word anywhere).

    The LLM is a test double: prompt_lf takes any callable prompt -> answer."""
    answers = {
        "r1": "Not positive.",
        "r2": "It isn't negative; it is positive.",
        "r3": "Negative, not positive.",
        "r4": "Positive or negative? Hard to say.",
        "r5": "No.",
        "r6": "The review is neither positive nor negative.",
        "r7": "Is it positive or negative? Negative.",
        "r8": "POSITIVE",
    }
    prompts = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return answers[prompt.split("\n")[0]]

    df = pd.DataFrame({"text": list(answers)})
    lf = prompt_lf("sentiment", "{text}", {"positive": 1, "negative": 0}, llm=llm)
    assert LFApplier([lf]).apply(df, progress=False)[:, 0].tolist() == [-1, 1, 0, -1, -1, -1, 0, 1]
    yes_no = prompt_lf("like", "{text}", {"yes": 1, "no": 0}, llm=llm, constrain=True)
    assert LFApplier([yes_no]).apply(df, progress=False)[:, 0].tolist()[4] == 0
    assert prompts[-1].endswith("\nAnswer with one of: yes, no.")
