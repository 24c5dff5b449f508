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


def brute64(x, q, k, metric):
    """float64 top-k (scores, ids) of float32 inputs; l2 scores are squared distances."""
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    if metric == "l2":
        s = ((q[:, None, :] - x[None]) ** 2).sum(-1)
        ids = np.argsort(s, axis=1, kind="stable")[:, :k]
    else:
        s = q @ x.T
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids, s


def assert_same_ids_ties_aside(ids, ref_ids, all_scores, tol=1e-9):
    """ids equal the float64 reference, except where the two ids' exact scores tie."""
    for r in range(len(ids)):
        for a, b in zip(ids[r], ref_ids[r]):
            if a != b:
                assert abs(all_scores[r, a] - all_scores[r, b]) <= tol * (
                    1 + abs(all_scores[r, b])
                ), (r, a, b, all_scores[r, a], all_scores[r, b])


def near_tie_data(rng, n, d, scale=1.0, group=60):
    """Vectors in tight groups larger than the first candidate set, whose scores differ
    below float16's resolution."""
    base = rng.normal(size=(n // group, d))
    x = np.repeat(base, group, axis=0)[:n] + 1e-4 * rng.normal(size=(n, d))
    return (scale * x).astype(np.float32)


@pytest.mark.parametrize("shards", [["cpu"], ["cpu", "cpu", "cpu"]], ids=["1shard", "3shards"])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("data", ["normal", "near_ties", "large_values"])
def test_torch_exact_backend_is_exact(metric, shards, data):
    """The GPU path without faiss-gpu (half-precision candidates, float64 rescoring and an
    error bound), run here on the CPU: the same ids as float64 brute force, ties aside, also
    where float16 cannot tell neighbours apart and where values overflow float16. With
    several shards (one per GPU on a multi-GPU machine) the per-shard lists are merged."""
    from toolkit.index import normalize_rows
    from toolkit.index_torch import TorchFlat

    rng = np.random.default_rng(4)
    if data == "normal":
        x = rng.normal(size=(300, 16)).astype(np.float32)
        q = rng.normal(size=(7, 16)).astype(np.float32)
    else:
        scale = 1e5 if data == "large_values" else 1.0
        x = near_tie_data(rng, 300, 16, scale)
        q = (x[rng.choice(300, 7)] + scale * 1e-4 * rng.normal(size=(7, 16))).astype(np.float32)
    if metric == "cosine":
        x, q = normalize_rows(x), normalize_rows(q)
    flat = TorchFlat(16, metric, shards)
    flat.add(x[:100])
    flat.add(x[100:])
    k = 12
    scores, ids = flat.search(q, k, budget=3 * 300)  # 3 queries per block
    ref_scores, ref_ids, all_scores = brute64(x, q, k, "l2" if metric == "l2" else "ip")
    assert_same_ids_ties_aside(ids, ref_ids, all_scores)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6, atol=1e-6 * np.abs(ref_scores).max())
    sign = 1 if metric == "l2" else -1
    assert (sign * np.diff(scores, axis=1) >= 0).all()
    np.testing.assert_array_equal(flat.vectors(), x)  # exact, insertion order (save() uses it)
    if data == "near_ties":
        assert flat.rounds > 0  # float16 could not prove these: they were searched wider
    if len(shards) > 1:
        assert sorted(np.concatenate([g.numpy() for g in flat.gid]).tolist()) == list(range(300))


def test_torch_exact_backend_k_over_n_and_zero_query():
    from toolkit.index_torch import TorchFlat

    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    flat = TorchFlat(8, "ip", ["cpu"])
    flat.add(x)
    q = np.vstack([np.zeros(8, np.float32), x[:1]])
    scores, ids = flat.search(q, 7)
    assert (ids[:, 5:] == -1).all() and np.isnan(scores[:, 5:]).all()
    assert sorted(ids[0, :5].tolist()) == list(range(5))  # all tie at 0
    _, ref_ids, _ = brute64(x, q[1:], 5, "ip")
    np.testing.assert_array_equal(ids[1, :5], ref_ids[0])


def test_interrupted_save_leaves_the_previous_index(tmp_path, monkeypatch):
    """A save that fails half way (here: writing the ids) leaves the folder's previous index
    whole: the old code had already replaced index.faiss, pairing new vectors with old ids."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(100, 8)), rng.normal(size=(50, 8))
    first = VectorIndex(8, "cosine").add(a)
    first.save(tmp_path / "idx")
    want = first.search(a[:5], 3)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        VectorIndex(8, "cosine").add(b, ids=np.arange(50) + 500).save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = VectorIndex.load(tmp_path / "idx")
    assert len(loaded) == 100
    got = loaded.search(a[:5], 3)
    np.testing.assert_array_equal(got[1], want[1])
    # a later save replaces it whole and leaves no stale files behind
    VectorIndex(8, "cosine").add(b, ids=np.arange(50) + 500).save(tmp_path / "idx")
    again = VectorIndex.load(tmp_path / "idx")
    assert len(again) == 50 and again.search(b[:1], 1)[1][0, 0] == 500
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len(names) == 3 and "meta.json" in names, names


@pytest.mark.parametrize("damage", ["cut_index", "cut_ids", "garbage_meta", "flip_byte"])
def test_corrupt_saved_index_is_a_clear_error(tmp_path, damage):
    """A cut or altered file of a saved index: a LoomError naming the file, not a FAISS or
    numpy traceback (a flipped byte is caught by the sha256 in meta.json)."""
    import json

    folder = VectorIndex(8).add(np.random.default_rng(8).normal(size=(200, 8))).save(tmp_path / "i")
    meta = json.loads((folder / "meta.json").read_text())
    index_file = folder / meta["files"]["index"]["name"]
    ids_file = folder / meta["files"]["ids"]["name"]
    if damage == "cut_index":
        data = index_file.read_bytes()
        index_file.write_bytes(data[: len(data) // 2])
        culprit = index_file.name
    elif damage == "cut_ids":
        data = ids_file.read_bytes()
        ids_file.write_bytes(data[: len(data) // 2])
        culprit = ids_file.name
    elif damage == "garbage_meta":
        (folder / "meta.json").write_bytes(b'{"dim": 8, "metr')
        culprit = "meta.json"
    else:
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
        culprit = index_file.name
    with pytest.raises(LoomError, match=culprit):
        VectorIndex.load(folder)


def test_loads_folders_of_the_first_layout(tmp_path):
    """Folders saved before (index.faiss, ids.npy, meta.json without "files") still load."""
    import json

    import faiss

    x = np.random.default_rng(9).normal(size=(20, 4)).astype(np.float32)
    flat = faiss.IndexFlat(4, faiss.METRIC_L2)
    flat.add(x)
    faiss.write_index(flat, str(tmp_path / "index.faiss"))
    np.save(tmp_path / "ids.npy", np.arange(20, dtype=np.int64) + 7)
    meta = {"dim": 4, "metric": "l2", "kind": "flat", "params": {}, "n": 20}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    index = VectorIndex.load(tmp_path)
    assert len(index) == 20 and index.search(x[3:4], 1)[1][0, 0] == 10


def test_without_faiss_gpu_count_is_zero_and_cpu_search_says_what_to_install(monkeypatch):
    """Exact GPU search runs in torch, so a machine without FAISS must not fail on asking
    how many GPUs FAISS has; CPU search still needs FAISS and says so."""
    import sys

    from toolkit.index import VectorIndex, gpu_count

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert gpu_count() == 0
    index = VectorIndex(4, kind="flat", device="cpu")
    with pytest.raises(LoomError, match="pip install faiss-cpu"):
        index.add(np.eye(4, dtype=np.float32))
