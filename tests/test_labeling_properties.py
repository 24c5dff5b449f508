"""Property tests (hypothesis) of labeling: label-matrix checks, LF analysis, LF application
order (shuffling rows shuffles votes, nothing else), vote checks and the answer parser."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labeling import (
    LabelDtypeError,
    LabelMatrixError,
    LFAnalysis,
    LFApplier,
    keyword_lf,
    labeling_function,
    model_lf,
    preprocessor,
    regex_lf,
    threshold_lf,
)
from labeling.lf import parse_label_answer
from labeling.model import check_L

# deterministic examples (stable CI), no example database in the repository
PROPS = settings(
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)


@st.composite
def label_matrices(draw, max_k=5):
    k = draw(st.integers(2, max_k))
    L = draw(hnp.arrays(np.int64, shapes, elements=st.integers(-1, k - 1)))
    return L, k


@PROPS
@given(label_matrices())
def test_check_L_accepts_every_valid_matrix_unchanged(Lk):
    L, k = Lk
    out = check_L(L, k)
    assert out.dtype == np.int64 and np.array_equal(out, L)
    assert np.array_equal(check_L(L.astype(np.int8), k), L)
    assert np.array_equal(check_L(pd.DataFrame(L), k), L)


@PROPS
@given(label_matrices(), st.data())
def test_check_L_names_the_bad_value(Lk, data):
    L, k = Lk
    i = data.draw(st.integers(0, L.shape[0] - 1))
    j = data.draw(st.integers(0, L.shape[1] - 1))
    bad = data.draw(st.one_of(st.integers(-50, -2), st.integers(k, k + 50)))
    L = L.copy()
    L[i, j] = bad
    with pytest.raises(LabelMatrixError) as err:
        check_L(L, k)
    assert str(int(L.min() if bad < -1 else L.max())) in str(err.value)
    with pytest.raises(LabelDtypeError, match="astype"):
        check_L(np.where(L < -1, 0, L).astype(float), k)


@PROPS
@given(label_matrices(), st.randoms(use_true_random=False))
def test_lf_analysis_invariants(Lk, rnd):
    L, _ = Lk
    a = LFAnalysis(L)
    cov, ov, conf = a.lf_coverages(), a.lf_overlaps(), a.lf_conflicts()
    assert np.all((0 <= conf) & (conf <= ov) & (ov <= cov) & (cov <= 1))
    assert 0 <= a.label_conflict() <= a.label_overlap() <= a.label_coverage() <= 1
    assert a.label_coverage() == pytest.approx((L >= 0).any(1).mean())
    rows = list(range(L.shape[0]))
    cols = list(range(L.shape[1]))
    rnd.shuffle(rows)
    rnd.shuffle(cols)
    b = LFAnalysis(L[rows][:, cols])
    assert np.allclose(b.lf_coverages(), cov[cols]) and np.allclose(b.lf_overlaps(), ov[cols])
    assert np.allclose(b.lf_conflicts(), conf[cols])
    assert b.label_conflict() == pytest.approx(a.label_conflict())


WORDS = ["great", "awful", "fun", "boring", "plot", "actor", "!", "not"]


@st.composite
def frames(draw):
    n = draw(st.integers(2, 10))
    text = draw(
        st.lists(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join),
            min_size=n,
            max_size=n,
        )
    )
    score = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))
    tags = draw(st.lists(st.lists(st.sampled_from(["a", "b"]), max_size=2), min_size=n, max_size=n))
    return pd.DataFrame({"text": text, "score": score, "tags": tags})


@preprocessor(memoize=True)
def count_tags(x):
    x.n_tags = len(x.tags)
    return x


@labeling_function(pre=[count_tags])
def many_tags(x):
    return 1 if x.n_tags >= 2 else 0 if x.n_tags == 0 else -1


@labeling_function()
def exclaim(x):
    return 1 if "!" in x["text"] else -1


RULE_LFS = [
    keyword_lf("kw_good", ["great", "fun"], 1),
    regex_lf("rx_bad", r"\b(awful|boring)\b", 0),
    threshold_lf("high", "score", 5, label_above=1, label_below=0),
    exclaim,
    many_tags,
]


@pytest.fixture(scope="module")
def zero_shot(embedder):
    return model_lf(
        "zs", class_descriptions={0: "awful and boring", 1: "great fun"}, embedder=embedder
    )


def _votes_in_both_orders(lfs, df, rnd):
    perm = list(range(len(df)))
    rnd.shuffle(perm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L = LFApplier(lfs).apply(df, progress=False)
        shuffled = LFApplier(lfs).apply(df.iloc[perm], progress=False)
        renumbered = LFApplier(lfs).apply(df.iloc[perm].reset_index(drop=True), progress=False)
    return L[perm], shuffled, renumbered


@settings(PROPS, max_examples=60)
@given(frames(), st.randoms(use_true_random=False))
def test_shuffling_rows_shuffles_votes_and_nothing_else(df, rnd):
    """Vectorized rules, row LFs and memoized preprocessors vote on a row the same whatever
    the row order."""
    expected, shuffled, renumbered = _votes_in_both_orders(RULE_LFS, df, rnd)
    assert np.array_equal(shuffled, expected) and np.array_equal(renumbered, expected)


@settings(PROPS, max_examples=8)
@given(frames(), st.randoms(use_true_random=False))
def test_embedding_lf_votes_follow_the_rows(zero_shot, df, rnd):
    """The zero-shot embedding LF (and its embedding cache) follows a reordered frame."""
    expected, shuffled, renumbered = _votes_in_both_orders([zero_shot], df, rnd)
    assert np.array_equal(shuffled, expected) and np.array_equal(renumbered, expected)


values = st.one_of(
    st.none(),
    st.integers(-3, 4),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["yes", "1", 1.0, 0.0, True]),
)


@PROPS
@given(st.lists(values, min_size=1, max_size=20), st.integers(2, 3))
def test_row_and_vectorized_lfs_agree_on_bad_values(returned, k):
    """fault_tolerant: every value that is not a vote is an abstain and a fault, the same for
    a row LF and a vectorized LF returning the same values."""
    df = pd.DataFrame({"i": np.arange(len(returned))})
    row = labeling_function(name="row")(lambda x: returned[x.i])
    vec = labeling_function(name="vec", vectorized=True)(lambda d: np.array(returned, dtype=object))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L, meta = LFApplier([row, vec], cardinality=k).apply(
            df, progress=False, fault_tolerant=True, return_meta=True
        )
    ok = [v is None or (v == int(v) and -1 <= v < k) if _number(v) else False for v in returned]
    expected = [-1 if v is None or not good else int(v) for v, good in zip(returned, ok)]
    assert L[:, 0].tolist() == expected and L[:, 1].tolist() == expected
    assert meta.faults["row"] == meta.faults["vec"] == ok.count(False)


def _number(v):
    return v is None or (isinstance(v, (int, float)) and np.isfinite(v))


label_words = st.sampled_from(["positive", "negative", "spam", "ham", "yes"])


@PROPS
@given(
    st.lists(label_words, min_size=2, max_size=4, unique=True),
    st.data(),
    st.sampled_from(["not", "isn't", "never", "neither", "hardly", "no"]),
)
def test_answer_parser_never_votes_a_negated_label(words, data, neg):
    label_map = {w: i for i, w in enumerate(words)}
    w = data.draw(st.sampled_from(words))
    assert parse_label_answer(w, label_map) == label_map[w]
    assert parse_label_answer(f"It is {w.upper()}.", label_map) == label_map[w]
    assert parse_label_answer(f"{neg} {w}", label_map) == -1
    assert parse_label_answer(f"I would {neg} say {w}.", label_map) == -1
    other = data.draw(st.sampled_from([x for x in words if x != w]))
    assert parse_label_answer(f"{w} or {other}?", label_map) == -1
    assert parse_label_answer(f"{neg} {w}, {other}", label_map) == label_map[other]
