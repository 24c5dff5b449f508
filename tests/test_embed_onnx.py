"""The int8 ONNX Runtime backend of the default encoder: a cached atomic export, agreement
with the torch vectors, and backend="auto" choosing by that agreement (threshold=)."""

import json

import numpy as np
import pytest

from toolkit.embed import LOADED, LOADED_LOCK, get_embedder, load_embedder
from toolkit.embed.backends import OnnxEmbedder, agreement
from toolkit.embed.onnx_export import RECIPE, ensure_export, export_folder
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def exported(embedder, onnx_dir):
    """The default MiniLM exported once into a temporary cache folder (about 5 s on a quiet
    2-core CPU, 25-45 s on a loaded one)."""
    return ensure_export(embedder.model, embedder.fingerprint, onnx_dir)


@pytest.fixture(scope="module")
def fast(embedder, exported):
    return OnnxEmbedder(embedder, exported)


def texts_of(bbc_sample, n=30):
    rows = bbc_sample.sample(n, random_state=2)
    # headlines, summaries and a few texts past the 256-token window (chunked and averaged)
    return [
        [t, s, f"{t}. {s} " * 6][i % 3]
        for i, (t, s) in enumerate(zip(rows["title"], rows["summary"]))
    ]


def test_export_is_cached_by_fingerprint(embedder, onnx_dir, exported):
    assert exported == export_folder(embedder.fingerprint, onnx_dir)
    assert exported.name.endswith(RECIPE)
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["fingerprint"] == embedder.fingerprint and meta["recipe"] == RECIPE
    assert [p.name for p in onnx_dir.iterdir()] == [exported.name]  # no temporary folder left
    stamp = (exported / "model.onnx").stat().st_mtime_ns
    assert ensure_export(embedder.model, embedder.fingerprint, onnx_dir) == exported
    assert (exported / "model.onnx").stat().st_mtime_ns == stamp  # not exported again
    # int8 weights: well under the float32 model's 90 MB
    assert (exported / "model.onnx").stat().st_size < 75e6


def test_onnx_agrees_with_torch(embedder, fast, bbc_sample):
    texts = texts_of(bbc_sample)
    ref = embedder.encode(texts, progress=False)
    ours = fast.encode(texts, batch_size=7, progress=False)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    cos = (ours * ref).sum(1)
    assert np.quantile(cos, 0.05) >= 0.99 and cos.min() >= 0.98
    assert cos.min() < 0.9999  # the int8 graph ran, not the torch model
    # neighbours are kept: each text's nearest other text is the same under both
    off = np.eye(len(texts)) * -2
    same = ((ours @ ours.T + off).argmax(1) == (ref @ ref.T + off).argmax(1)).mean()
    assert same >= 0.9
    # activations are quantized per batch, so a text's vector moves a little with the batch
    # it is in (docs/embedding.md); alone or batched, it stays the same vector for search
    one = np.stack([fast.encode([t], progress=False)[0] for t in texts[:6]])
    assert (one * ours[:6]).sum(1).min() >= 0.99


def test_onnx_vectors_cached_apart_from_torch(embedder, fast, tmp_path):
    assert fast.cache_key() != embedder.cache_key() and fast.fingerprint == embedder.fingerprint
    texts = ["Northern Steel Works Ltd", "12 main street sydney"]
    embedder.encode(texts, cache=tmp_path)  # torch vectors land in the cache first
    np.testing.assert_allclose(
        fast.encode(texts, cache=tmp_path), fast.encode(texts), atol=1e-6
    )  # and are not served as int8 ones


def test_auto_chooses_by_agreement(onnx_dir, exported):
    chosen = load_embedder(None, "cpu", backend="auto", onnx_cache=onnx_dir)
    assert isinstance(chosen, OnnxEmbedder) and chosen.backend == "onnx"
    assert chosen.backend_check["p05"] >= 0.99 and chosen.backend_check["threshold"] == 0.99
    # a threshold the int8 vectors cannot meet keeps the torch model
    kept = load_embedder(None, "cpu", backend="auto", onnx_cache=onnx_dir, onnx_threshold=1.0)
    assert kept.backend == "torch" and not isinstance(kept, OnnxEmbedder)
    assert kept.backend_check["p05"] < 1.0
    assert [p.name for p in onnx_dir.iterdir()] == [exported.name]  # the export was reused


def test_backend_is_part_of_the_shared_key(embedder, onnx_dir, exported):
    try:
        fast = get_embedder(None, "cpu", backend="onnx", onnx_cache=onnx_dir)
        assert isinstance(fast, OnnxEmbedder)
        assert get_embedder(None, "cpu") is embedder and embedder.backend == "torch"
        assert get_embedder(None, "cpu", backend="onnx", onnx_cache=onnx_dir) is fast
    finally:
        with LOADED_LOCK:
            for key in [k for k, v in LOADED.items() if isinstance(v, OnnxEmbedder)]:
                del LOADED[key]


def test_agreement_statistics(embedder):
    stats = agreement(embedder, embedder, ["a", "b c", "a longer text here"])
    assert stats["n"] == 3 and stats["min"] == pytest.approx(1.0, abs=1e-5)


def test_bad_backend_options(monkeypatch):
    with pytest.raises(LoomError, match="backend='tensorrt': use one of"):
        load_embedder(None, "cpu", backend="tensorrt")
    with pytest.raises(LoomError, match="onnx_threshold=1.5"):
        load_embedder(None, "cpu", backend="auto", onnx_threshold=1.5)
    monkeypatch.setenv("LOOM_EMBED_BACKEND", "fast")
    with pytest.raises(LoomError, match="LOOM_EMBED_BACKEND='fast'"):
        load_embedder(None, "cpu")
