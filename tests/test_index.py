import numpy as np
import pytest

from toolkit.errors import LoomError
from toolkit.index import VectorIndex, knn


def brute(x, q, k, metric):
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        s = -((q[:, None, :] - x[None]) ** 2).sum(-1)
    else:
        s = q @ x.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_equals_brute_force(metric):
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(500, 24)), rng.normal(size=(20, 24))
    index = VectorIndex(24, metric).add(x, ids=np.arange(500) + 1000)
    scores, ids = index.search(q, 5)
    ref_scores, ref_ids = brute(x, q, 5, metric)
    np.testing.assert_array_equal(ids, ref_ids + 1000)
    np.testing.assert_allclose(np.abs(scores), np.abs(ref_scores), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_approximate_kinds_recall(kind):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(20, 32)) * 4
    x = (centers[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 32))).astype(np.float32)
    q = x[:50] + 0.01 * rng.normal(size=(50, 32))
    index = VectorIndex(32, "cosine", kind=kind, nprobe=8).add(x)
    _, ids = index.search(q, 10)
    _, ref = brute(x, q, 10, "cosine")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
    assert recall > (0.5 if kind == "ivfpq" else 0.9)
    assert (ids[:, 0] == np.arange(50)).mean() > 0.9


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_tune_trades_speed_for_recall(kind):
    """nprobe (and the PQ re-rank depth) change a built index: more lists visited, more recall."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 32)).astype(np.float32)  # no cluster structure: IVF is lossy
    q = rng.normal(size=(100, 32)).astype(np.float32)
    index = VectorIndex(32, "cosine", kind=kind, nlist=64, nprobe=1).add(x)
    _, ref = brute(x, q, 10, "cosine")

    def recall() -> float:
        ids = index.search(q, 10)[1]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)]))

    low = recall()
    wide = {"nprobe": 64, "refine_k_factor": 64} if kind == "ivfpq" else {"nprobe": 64}
    index.tune(**wide)
    high = recall()
    assert low < 0.6 and high > 0.95 and index.params["nprobe"] == 64
    with pytest.raises(LoomError, match="search-time settings"):
        index.tune(nlist=8)


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8))
    index = VectorIndex(8, "cosine").add(x)
    before = index.search(x[:5], 3)
    loaded = VectorIndex.load(index.save(tmp_path / "idx"))
    after = loaded.search(x[:5], 3)
    np.testing.assert_array_equal(before[1], after[1])
    assert len(loaded) == 100 and loaded.metric == "cosine"


def test_k_larger_than_n_and_errors():
    index = VectorIndex(4).add(np.eye(4)[:3])
    scores, ids = index.search(np.eye(4)[:1], 5)
    assert ids[0, 3] == -1 and ids[0, 4] == -1 and np.isneginf(scores[0, 4])
    with pytest.raises(LoomError, match="dimension 5 but the index has dimension 4"):
        index.search(np.ones((1, 5)), 1)
    with pytest.raises(LoomError, match="NaN"):
        index.add(np.full((2, 4), np.nan))
    with pytest.raises(LoomError, match="metric"):
        VectorIndex(4, "hamming")
    with pytest.raises(LoomError, match="ids must be"):
        VectorIndex(4).add(np.ones((3, 4)), ids=[1, 2])


def test_knn_excludes_self():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6))
    scores, ids = knn(x, 4)
    assert ids.shape == (50, 4)
    assert not (ids == np.arange(50)[:, None]).any()
    _, ref = brute(x, x, 5, "cosine")
    np.testing.assert_array_equal(ids, ref[:, 1:])
    with pytest.raises(LoomError, match="k=50"):
        knn(x, 50)


@pytest.mark.parametrize("shards", [["cpu"], ["cpu", "cpu", "cpu"]], ids=["1shard", "3shards"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_torch_exact_backend_matches_brute_force(metric, shards):
    """The GPU path without faiss-gpu (torch matmul + top-k), run here on the CPU; with
    several shards (one per GPU on a multi-GPU machine) the per-shard lists are merged."""
    from toolkit.index import _TorchFlat, normalize_rows

    rng = np.random.default_rng(4)
    x, q = (
        rng.normal(size=(300, 16)).astype(np.float32),
        rng.normal(size=(7, 16)).astype(np.float32),
    )
    if metric == "cosine":
        x, q = normalize_rows(x), normalize_rows(q)
    flat = _TorchFlat(16, metric, shards)
    flat.add(x[:100])
    flat.add(x[100:])
    scores, ids = flat.search(q, 5, budget=3 * 300)  # 3 queries per block
    ref_scores, ref_ids = brute(x, q, 5, "ip" if metric == "cosine" else "l2")
    assert (ids == ref_ids).mean() > 0.95  # fp16 may swap near-ties
    # rescored in fp32; l2 comes back as squared distances (FAISS's convention), ascending
    want = ref_scores if metric == "cosine" else -ref_scores
    np.testing.assert_allclose(scores, want, rtol=5e-3, atol=5e-3)
    sign = -1 if metric == "cosine" else 1
    assert (sign * np.diff(scores, axis=1) >= -1e-6).all()
    np.testing.assert_allclose(flat.vectors(), x, atol=2e-3)  # insertion order (save() uses it)
    if len(shards) > 1:
        assert sorted(np.concatenate([g.numpy() for g in flat.gid]).tolist()) == list(range(300))
