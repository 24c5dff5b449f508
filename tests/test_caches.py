"""The on-disk caches (toolkit.kvcache under the embedding and completion caches): shared by
processes, keyed by the model's content, and a corrupt file moved aside and rebuilt."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from toolkit.embed import EmbeddingCache, TransformerEmbedder, default_model_path
from toolkit.fingerprint import path_fingerprint
from toolkit.kvcache import KVTable
from toolkit.llm import Completion, CompletionCache

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"record {i}: {' '.join(['word'] * (i % 7))} the end" for i in range(120)]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut_in_half":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))


def table(path: Path) -> KVTable:
    return KVTable(path, "t", "key TEXT PRIMARY KEY, v INTEGER", values=("v",))


def test_one_file_shared_by_several_processes(tmp_path):
    """Four processes write and read one cache file at once: nothing lost, no 'database is
    locked', and the file is in WAL mode (readers never wait for a writer)."""
    path = tmp_path / "kv.sqlite"
    table(path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from toolkit.kvcache import KVTable
        t = KVTable({str(path)!r}, "t", "key TEXT PRIMARY KEY, v INTEGER", values=("v",))
        w = int(sys.argv[1])
        for b in range(30):
            t.put((f"{{w}}-{{b}}-{{i}}", (w * 1000 + b * 10 + i,)) for i in range(10))
            assert len(t.get([f"{{w}}-{{b}}-{{i}}" for i in range(10)])) == 10
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(w)], stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    keys = [f"{w}-{b}-{i}" for w in range(4) for b in range(30) for i in range(10)]
    got = table(path).get(keys)
    assert len(got) == 1200 and got["3-29-9"] == (3299,)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("how", ["cut_in_half", "garbage"])
def test_corrupt_table_is_moved_aside_and_rebuilt(tmp_path, how, caplog):
    path = tmp_path / "kv.sqlite"
    table(path).put((f"k{i}", (i,)) for i in range(3000))
    damage(path, how)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="toolkit.kvcache"):
        t = table(path)
        assert t.get(["k1", "k2999"]) == {}  # what was cached is computed again
        t.put([("k1", (1,))])
        assert t.get(["k1"]) == {"k1": (1,)}
    aside = list(tmp_path.glob("kv.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == before  # kept, never deleted
    assert str(path) in caplog.text and "corrupt" in caplog.text


def test_page_damaged_while_in_use_is_moved_aside(tmp_path, caplog):
    """Damage that only a query finds (a cache opened before the file broke): the query
    moves the file aside and answers from the new, empty cache."""
    path = tmp_path / "kv.sqlite"
    t = table(path)
    t.put((f"k{i}", (i,)) for i in range(3000))
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 6] = b"\xff" * (4096 * 4)  # pages of the table's b-tree
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="toolkit.kvcache"):
        got = t.get([f"k{i}" for i in range(3000)])
    assert got == {} and list(tmp_path.glob("kv.sqlite.corrupt-*"))
    assert "moved it to" in caplog.text


@pytest.fixture(scope="module")
def minilm_copy(tmp_path_factory) -> Path:
    """A copy of the default encoder's folder that a test may re-train in place."""
    import shutil

    dst = tmp_path_factory.mktemp("model") / "minilm"
    shutil.copytree(default_model_path(), dst)
    return dst


def test_retrained_model_in_the_same_folder_misses_the_cache(minilm_copy, tmp_path):
    """The embedding cache is keyed by the model's content: after new weights are written
    into the same folder (as linking.train does), the old vectors are not served."""
    import torch
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "cache"
    old_fp = path_fingerprint(minilm_copy)
    first = TransformerEmbedder(minilm_copy, "cpu").encode(TEXTS[:20], cache=cache)
    weights = minilm_copy / "model.safetensors"
    gen = torch.Generator().manual_seed(0)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
             for k, v in load_file(str(weights)).items()}  # fmt: skip
    save_file(state, str(weights), metadata={"format": "pt"})  # in place, same file names
    retrained = TransformerEmbedder(minilm_copy, "cpu")
    again = retrained.encode(TEXTS[:20], cache=cache)
    fresh = retrained.encode(TEXTS[:20])
    assert np.abs(again - first).max() > 1e-2  # not the old model's vectors
    np.testing.assert_allclose(again, fresh, atol=1e-5)
    assert retrained.fingerprint != old_fp


@pytest.mark.parametrize("how", ["cut_in_half", "garbage"])
def test_corrupt_embedding_cache_is_reported_and_rebuilt(minilm_copy, tmp_path, how, caplog):
    """Fault test: the embedding cache cut in half (or overwritten): encode warns naming the
    file, embeds again, and the next call is served from the rebuilt cache."""
    emb = TransformerEmbedder(minilm_copy, "cpu")
    cache = tmp_path / "cache"
    want = emb.encode(TEXTS, cache=cache)
    file = cache / "embeddings.sqlite"
    damage(file, how)
    with caplog.at_level(logging.WARNING):
        got = emb.encode(TEXTS, cache=cache)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert str(file) in caplog.text and list(cache.glob("embeddings.sqlite.corrupt-*"))
    store = EmbeddingCache(cache, emb.cache_key())
    assert len(store.get([store.key(t, "chunk") for t in TEXTS])) == len(TEXTS)


def test_cached_vector_of_the_wrong_length_is_embedded_again(minilm_copy, tmp_path, caplog):
    emb = TransformerEmbedder(minilm_copy, "cpu")
    want = emb.encode(TEXTS[:3], cache=tmp_path)
    store = EmbeddingCache(tmp_path, emb.cache_key())
    store.put([store.key(TEXTS[0], "chunk")], np.ones((1, 5), np.float32))
    with caplog.at_level(logging.WARNING):
        got = emb.encode(TEXTS[:3], cache=tmp_path)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert "do not have dimension" in caplog.text


def test_corrupt_completion_cache_is_moved_aside(tmp_path, caplog):
    path = tmp_path / "completions.sqlite"
    CompletionCache(path).put({f"k{i}": Completion("x" * 200, 3, 1) for i in range(500)})
    damage(path, "cut_in_half")
    with caplog.at_level(logging.WARNING):
        cache = CompletionCache(path)
        assert cache.get(["k1"]) == {}
        cache.put({"k1": Completion("hi", 3, 1)})
        assert cache.get(["k1"])["k1"].text == "hi"
    assert str(path) in caplog.text and list(tmp_path.glob("completions.sqlite.corrupt-*"))


def test_fingerprint_follows_content_not_name(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "w.bin").write_bytes(b"weights")
        (d / "sub" / "config.json").write_text("{}")
    assert path_fingerprint(a) == path_fingerprint(b)
    (b / "sub" / "config.json").write_text('{"x": 1}')
    assert path_fingerprint(a) != path_fingerprint(b)
    before = path_fingerprint(a)
    (a / ".lock").write_text("hidden files are left out")
    assert path_fingerprint(a) == before


def tiny_llm(folder: Path, seed: int) -> Path:
    """A tiny randomly initialised causal LM (no weights exist offline for one this small)
    with the default encoder's tokenizer, saved as a Hugging Face model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(
        str(default_model_path()), model_input_names=["input_ids", "attention_mask"]
    )
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_completion_cache_key_has_model_content_and_generation_params(tmp_path):
    """The completion cache misses when any generation parameter changes, and when the model
    folder holds other weights under the same name (its key hashed only the folder's name)."""
    from toolkit.llm import TransformersLLM

    folder = tiny_llm(tmp_path / "llm", seed=0)
    cache = tmp_path / "c.sqlite"
    llm = TransformersLLM(folder, device="cpu", cache=cache)
    first = llm.complete(["hello world"], max_tokens=4)[0]
    assert not first.cached and llm.complete(["hello world"], max_tokens=4)[0].cached
    for change in (
        {"max_tokens": 5},
        {"stop": ["x"]},
        {"chat": False},
        {"temperature": 0.7},
        {"temperature": 0.7, "seed": 1},
    ):
        assert not llm.complete(["hello world"], **{"max_tokens": 4, **change})[0].cached, change
    tiny_llm(folder, seed=1)  # re-trained in place
    again = TransformersLLM(folder, device="cpu", cache=cache).complete(["hello world"], 4)[0]
    assert not again.cached
