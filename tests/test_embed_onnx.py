"""The int8 ONNX Runtime backend of the default encoder: a cached atomic export, agreement
with the torch vectors, vectors that do not depend on the batch, and backend="auto" (the CPU
default) choosing by that agreement (threshold=), its check stored beside the export."""

import json
import os

import numpy as np
import pytest

from toolkit.embed import BACKENDS, LOADED, LOADED_LOCK, get_embedder, load_embedder
from toolkit.embed import backends as backends_module
from toolkit.embed.backends import DEFAULT_BACKEND, OnnxEmbedder, agreement
from toolkit.embed.onnx_export import (
    CHECK_FILE,
    RECIPE,
    ensure_export,
    export_folder,
    read_check,
    write_check,
)
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def exported(torch_embedder, onnx_dir):
    """The default MiniLM exported once into a temporary cache folder (about 5 s on a quiet
    2-core CPU, 25-45 s on a loaded one)."""
    return ensure_export(torch_embedder.model, torch_embedder.fingerprint, onnx_dir)


@pytest.fixture(scope="module")
def fast(torch_embedder, exported):
    return OnnxEmbedder(torch_embedder, exported)


def texts_of(bbc_sample, n=30):
    rows = bbc_sample.sample(n, random_state=2)
    # headlines, summaries and a few texts past the 256-token window (chunked and averaged)
    return [
        [t, s, f"{t}. {s} " * 6][i % 3]
        for i, (t, s) in enumerate(zip(rows["title"], rows["summary"]))
    ]


def test_export_is_cached_by_fingerprint(torch_embedder, onnx_dir, exported):
    assert exported == export_folder(torch_embedder.fingerprint, onnx_dir)
    assert exported.name.endswith(RECIPE)
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["fingerprint"] == torch_embedder.fingerprint and meta["recipe"] == RECIPE
    assert [p.name for p in onnx_dir.iterdir()] == [exported.name]  # no temporary folder left
    stamp = (exported / "model.onnx").stat().st_mtime_ns
    assert ensure_export(torch_embedder.model, torch_embedder.fingerprint, onnx_dir) == exported
    assert (exported / "model.onnx").stat().st_mtime_ns == stamp  # not exported again
    # int8 weights: well under the float32 model's 90 MB
    assert (exported / "model.onnx").stat().st_size < 65e6


def test_onnx_agrees_with_torch(torch_embedder, fast, bbc_sample):
    texts = texts_of(bbc_sample)
    ref = torch_embedder.encode(texts, progress=False)
    ours = fast.encode(texts, batch_size=7, progress=False)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    cos = (ours * ref).sum(1)
    assert np.quantile(cos, 0.05) >= 0.99 and cos.min() >= 0.99
    assert cos.min() < 0.9999  # the int8 graph ran, not the torch model
    # neighbours are kept: each text's nearest other text is the same under both
    off = np.eye(len(texts)) * -2
    same = ((ours @ ours.T + off).argmax(1) == (ref @ ref.T + off).argmax(1)).mean()
    assert same >= 0.9


def test_a_texts_vector_does_not_depend_on_its_batch(fast, bbc_sample):
    """Per-token activation scales: the same text alone, in batches of other texts of other
    lengths (so padded to another width), and in another order gets the same vector."""
    texts = texts_of(bbc_sample, 9)  # one of each three is past the 256-token window
    texts += ["ACME CORP", "j smith 12 main st", "x"]  # a few very short ones
    alone = np.stack([fast.encode([t], progress=False)[0] for t in texts])
    for batch_size in (None, 5):
        batched = fast.encode(texts, batch_size=batch_size, progress=False)
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
    mixed = fast.encode(texts[::-1] + texts[:3], progress=False)
    np.testing.assert_allclose(mixed[: len(texts)][::-1], alone, rtol=0, atol=1e-6)


def test_onnx_vectors_cached_apart_from_torch(torch_embedder, fast, tmp_path):
    assert fast.cache_key() != torch_embedder.cache_key()
    assert fast.fingerprint == torch_embedder.fingerprint
    texts = ["Northern Steel Works Ltd", "12 main street sydney"]
    torch_embedder.encode(texts, cache=tmp_path)  # torch vectors land in the cache first
    np.testing.assert_allclose(
        fast.encode(texts, cache=tmp_path), fast.encode(texts), atol=1e-6
    )  # and are not served as int8 ones


def test_auto_chooses_by_agreement_and_stores_the_check(onnx_dir, exported, monkeypatch):
    chosen = load_embedder(None, "cpu", backend="auto", onnx_cache=onnx_dir)
    assert isinstance(chosen, OnnxEmbedder) and chosen.backend == "onnx"
    assert chosen.backend_check["p05"] >= 0.99 and chosen.backend_check["threshold"] == 0.99
    stored = json.loads((exported / CHECK_FILE).read_text())
    (key, stats), *_ = stored.items()
    assert RECIPE in key and "onnxruntime=" in key and stats["p05"] == chosen.backend_check["p05"]

    # a later load decides from the stored check: the agreement is not computed again
    def no_second_check(*args, **kwargs):
        raise AssertionError("the agreement check ran again")

    monkeypatch.setattr(backends_module, "agreement", no_second_check)
    again = load_embedder(None, "cpu", backend="auto", onnx_cache=onnx_dir)
    assert isinstance(again, OnnxEmbedder) and again.backend_check == chosen.backend_check
    # a threshold the int8 vectors cannot meet keeps the torch model (same stored check)
    kept = load_embedder(None, "cpu", backend="auto", onnx_cache=onnx_dir, onnx_threshold=1.0)
    assert kept.backend == "torch" and not isinstance(kept, OnnxEmbedder)
    assert kept.backend_check["p05"] < 1.0
    assert [p.name for p in onnx_dir.iterdir()] == [exported.name]  # the export was reused


def test_stored_check_is_read_only_when_whole(tmp_path):
    stats = {"mean": 0.997, "min": 0.996, "p05": 0.9965, "n": 34}
    assert read_check(tmp_path, "k") is None  # nothing stored yet
    write_check(tmp_path, "k", stats)
    write_check(tmp_path, "other", {**stats, "p05": 0.5})  # keys are kept side by side
    assert read_check(tmp_path, "k") == stats and read_check(tmp_path, "other")["p05"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == [CHECK_FILE]  # no temporary file left
    (tmp_path / CHECK_FILE).write_text(json.dumps({"k": {"p05": "high"}}))
    assert read_check(tmp_path, "k") is None  # not what write_check wrote: check again
    (tmp_path / CHECK_FILE).write_text("{truncated")
    assert read_check(tmp_path, "k") is None


def test_auto_is_the_default_and_torch_is_one_flag_away(onnx_dir, exported, monkeypatch):
    assert DEFAULT_BACKEND == "auto"
    monkeypatch.delenv("LOOM_EMBED_BACKEND", raising=False)
    assert isinstance(load_embedder(None, "cpu", onnx_cache=onnx_dir), OnnxEmbedder)
    ref = load_embedder(None, "cpu", backend="torch", onnx_cache=onnx_dir)
    assert ref.backend == "torch" and not isinstance(ref, OnnxEmbedder)
    monkeypatch.setenv("LOOM_EMBED_BACKEND", "torch")
    assert load_embedder(None, "cpu", onnx_cache=onnx_dir).backend == "torch"


def test_cli_flag_sets_the_backend_for_the_process(monkeypatch):
    from apps.cli import build_parser
    from apps.options import EMBED_BACKENDS, apply_embed_backend

    assert EMBED_BACKENDS == BACKENDS
    monkeypatch.setenv("LOOM_EMBED_BACKEND", "auto")  # restored after the test
    parser = build_parser()
    args = parser.parse_args(["embed", "data.csv", "--embed-backend", "torch"])
    apply_embed_backend(args)
    assert os.environ["LOOM_EMBED_BACKEND"] == "torch"
    for command in (["link", "a.csv", "b.csv", "--on", "name"], ["embed-server"]):
        assert parser.parse_args([*command, "--embed-backend", "onnx"]).embed_backend == "onnx"
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "data.csv", "--embed-backend", "tensorrt"])


def test_backend_is_part_of_the_shared_key(embedder, torch_embedder, onnx_dir, exported):
    try:
        fast = get_embedder(None, "cpu", backend="onnx", onnx_cache=onnx_dir)
        assert isinstance(fast, OnnxEmbedder)
        assert get_embedder(None, "cpu") is embedder and embedder.backend == "onnx"
        assert get_embedder(None, "cpu", backend="torch") is torch_embedder
        assert torch_embedder.backend == "torch"
        assert get_embedder(None, "cpu", backend="onnx", onnx_cache=onnx_dir) is fast
    finally:
        with LOADED_LOCK:
            for key in [
                k
                for k, v in LOADED.items()
                if v is not embedder and getattr(v, "backend", None) == "onnx"
            ]:
                del LOADED[key]


def test_agreement_statistics(torch_embedder):
    stats = agreement(torch_embedder, torch_embedder, ["a", "b c", "a longer text here"])
    assert stats["n"] == 3 and stats["min"] == pytest.approx(1.0, abs=1e-5)


def test_bad_backend_options(monkeypatch):
    with pytest.raises(LoomError, match="backend='tensorrt': use one of"):
        load_embedder(None, "cpu", backend="tensorrt")
    with pytest.raises(LoomError, match="onnx_threshold=1.5"):
        load_embedder(None, "cpu", backend="auto", onnx_threshold=1.5)
    monkeypatch.setenv("LOOM_EMBED_BACKEND", "fast")
    with pytest.raises(LoomError, match="LOOM_EMBED_BACKEND='fast'"):
        load_embedder(None, "cpu")
