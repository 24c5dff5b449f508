"""Property tests (hypothesis): linking.merge and linking.dedup do not depend on row order.

Permuting the rows of the inputs permutes the output rows and nothing else: the same pairs
and the same clusters up to relabelling. Small frames over a fixed vocabulary of near-duplicate
names, the default encoder and one embedding cache, so each name is embedded once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import linking

NAMES = [
    "anna smith",
    "ana smith",
    "anna smyth",
    "bob jones",
    "bob jone",
    "carl brown",
    "karl brown",
    "dora lee",
    "",  # an empty key: kept, never matched
]
pytestmark = pytest.mark.filterwarnings("ignore:.*empty key")
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("linking-properties-cache")


@st.composite
def frame_and_permutation(draw, min_size: int = 1, max_size: int = 7):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=min_size, max_size=max_size))
    perm = draw(st.permutations(range(len(names))))
    return pd.DataFrame({"name": names, "id": range(len(names))}), np.asarray(perm, dtype=int)


def merged_pairs(out: pd.DataFrame, left: pd.DataFrame, right: pd.DataFrame) -> dict:
    """{left id: (right name or None, score)}: right rows with the same name are equivalent."""
    pairs = {}
    for _, row in out.iterrows():
        lid = int(left["id"].iloc[int(row["left_row"])])
        if pd.isna(row["right_row"]):
            pairs[lid] = (None, None)
        else:
            pairs[lid] = (right["name"].iloc[int(row["right_row"])], float(row["score"]))
    return pairs


def same_pairs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        (name_a, score_a), (name_b, score_b) = a[key], b[key]
        assert name_a == name_b, (key, a[key], b[key])
        if score_a is not None:
            assert score_b is not None and abs(score_a - score_b) < 1e-5


@SETTINGS
@given(left=frame_and_permutation(), right=frame_and_permutation())
def test_merge_commutes_with_row_permutations(cache, left, right):
    (a, pa), (b, pb) = left, right
    kw = {"on": "name", "threshold": 0.5, "cache": cache, "progress": False}
    out = linking.merge(a, b, **kw)
    a2, b2 = a.iloc[pa].reset_index(drop=True), b.iloc[pb].reset_index(drop=True)
    out2 = linking.merge(a2, b2, **kw)
    # output rows follow the left rows: permuted the same way
    assert out2["left_row"].tolist() == list(range(len(a2)))
    assert out2["id_left"].tolist() == out["id_left"].to_numpy()[pa].tolist()
    same_pairs(merged_pairs(out, a, b), merged_pairs(out2, a2, b2))
    assert out.attrs["linking"] == out2.attrs["linking"]


def partition(ids: np.ndarray, labels: np.ndarray) -> set[frozenset]:
    return {frozenset(ids[labels == c].tolist()) for c in np.unique(labels)}


@SETTINGS
@given(data=frame_and_permutation(min_size=1, max_size=8))
def test_dedup_commutes_with_row_permutations(cache, data):
    df, perm = data
    kw = {"on": "name", "threshold": 0.85, "cache": cache, "progress": False}
    out, pairs = linking.dedup(df, return_pairs=True, **kw)
    df2 = df.iloc[perm].reset_index(drop=True)
    out2, pairs2 = linking.dedup(df2, return_pairs=True, **kw)
    # same rows in the permuted order, same clusters up to relabelling
    assert out2["id"].tolist() == df2["id"].tolist()
    ids, ids2 = out["id"].to_numpy(), out2["id"].to_numpy()
    assert partition(ids, out["cluster_id"].to_numpy()) == partition(
        ids2, out2["cluster_id"].to_numpy()
    )

    # the same pairs (as unordered pairs of records) with the same scores
    def as_set(p: pd.DataFrame, ids: np.ndarray) -> dict:
        return {
            frozenset((int(ids[r.row_a]), int(ids[r.row_b]))): round(float(r.score), 4)
            for r in p.itertuples()
        }

    got, want = as_set(pairs2, ids2), as_set(pairs, ids)
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) < 1e-3 for k in got)
    # `duplicate` marks every row of a cluster after its first, in the order given
    for frame in (out, out2):
        first = ~frame["cluster_id"].duplicated()
        assert (frame["duplicate"] == ~first).all()
