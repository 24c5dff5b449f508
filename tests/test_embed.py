import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from toolkit.embed import EmbeddingCache, default_model_path, get_embedder
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def reference():
    return SentenceTransformer(str(default_model_path()), device="cpu")


def _texts(bbc_sample, n=40):
    rng = np.random.default_rng(0)
    rows = bbc_sample.sample(n, random_state=1)
    # mixed lengths: headlines, summaries and both repeated
    out = []
    for t, s in zip(rows["title"], rows["summary"]):
        out.append([t, s, f"{t}. {s} " * int(rng.integers(1, 4))][int(rng.integers(0, 3))])
    return out


def test_matches_sentence_transformers(torch_embedder, reference, bbc_sample):
    texts = _texts(bbc_sample)
    ours = torch_embedder.encode(texts)
    theirs = reference.encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    cos = (ours * theirs).sum(1)
    assert cos.min() > 0.9999


def test_batching_keeps_input_order(embedder, bbc_sample):
    texts = _texts(bbc_sample, 30)
    one_by_one = np.stack([embedder.encode([t])[0] for t in texts])
    batched = embedder.encode(texts, batch_size=7)
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)
    # reversing the input reverses the output
    np.testing.assert_allclose(embedder.encode(texts[::-1]), batched[::-1], atol=2e-5)


def test_embedder_is_shared(embedder):
    assert get_embedder() is embedder
    assert get_embedder("all-MiniLM-L6-v2", device="cpu") is embedder
    assert embedder.dim == 384 and embedder.max_length == 256 and embedder.device == "cpu"


def test_long_text_chunked_and_truncated(torch_embedder, reference):
    embedder = torch_embedder  # held to sentence-transformers' own numbers
    words = ("The committee approved the new budget for rail transport. " * 60).split()
    long_text = " ".join(words + ["Later, the football club won the cup final in extra time."] * 40)
    assert embedder.count_tokens([long_text]) > 3 * embedder.max_length
    chunked = embedder.encode([long_text], long_text="chunk")[0]
    truncated = embedder.encode([long_text], long_text="truncate")[0]
    theirs = reference.encode([long_text], normalize_embeddings=True)[0]
    assert float(truncated @ theirs) > 0.9999  # truncation is what sentence-transformers does
    # chunking also sees the football part at the end, which truncation drops
    football = embedder.encode(["football club won the cup final"])[0]
    assert float(chunked @ football) > float(truncated @ football) + 0.05
    # and equals the mean of its window vectors
    pieces, owner = embedder._pieces([long_text], "chunk")
    assert len(pieces) > 1 and max(map(len, pieces)) <= embedder.max_length


def test_cache_hit_skips_model(embedder, tmp_path, monkeypatch, bbc_sample):
    texts = list(bbc_sample["title"][:10])
    first = embedder.encode(texts, cache=tmp_path)
    calls = []
    original = embedder._embed
    monkeypatch.setattr(embedder, "_embed", lambda t, *a: calls.append(t) or original(t, *a))
    again = embedder.encode(texts + ["a brand new text"], cache=tmp_path)
    np.testing.assert_allclose(again[:10], first, atol=1e-6)
    assert calls == [["a brand new text"]]
    # keyed by the model's content (fingerprint), not its name
    store = EmbeddingCache(tmp_path, embedder.cache_key())
    assert embedder.fingerprint in embedder.cache_key()
    assert len(store.get([EmbeddingCache.key(t, "chunk") for t in texts])) == 10
    assert (
        EmbeddingCache(tmp_path, embedder.name).get([EmbeddingCache.key(texts[0], "chunk")]) == {}
    )


def test_bad_inputs(embedder):
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(LoomError, match="not one string"):
        embedder.encode("just a string")
    with pytest.raises(LoomError, match="text 1 is missing"):
        embedder.encode(["ok", None])
    with pytest.raises(LoomError, match=r"text 1 is of type int, not str: convert it with str\(\)"):
        embedder.encode(["ok", 3])
    with pytest.raises(LoomError, match=r"text 0 is of type bytes.*decode\('utf-8'\)"):
        embedder.encode([b"raw bytes"])
    with pytest.raises(LoomError, match="long_text"):
        embedder.encode(["ok"], long_text="summarise")
    with pytest.raises(LoomError, match="unknown embedding model"):
        get_embedder("no-such-model-anywhere")
    with pytest.raises(LoomError, match="does not exist"):
        get_embedder("m2-bert:/no/such/dir")


def test_default_model_from_environment(monkeypatch, embedder):
    from toolkit.embed import default_model_path

    monkeypatch.setenv("LOOM_EMBED_MODEL", str(default_model_path()))
    other = get_embedder()
    assert other is not embedder and other.name == str(default_model_path())
    np.testing.assert_allclose(
        other.encode(["same model"]), embedder.encode(["same model"]), atol=1e-6
    )
    monkeypatch.setenv("LOOM_EMBED_MODEL", "/no/such/folder")
    with pytest.raises(LoomError, match="unknown embedding model"):
        get_embedder()


def test_show_progress_still_works_and_warns(embedder, monkeypatch):
    seen = []
    original = embedder._embed
    monkeypatch.setattr(
        embedder, "_embed", lambda t, b, p, m: seen.append(p) or original(t, b, p, m)
    )
    with pytest.warns(DeprecationWarning, match="show_progress") as record:
        old = embedder.encode(["a short text"], show_progress=True)
    assert record[0].filename == __file__  # the warning points at the caller
    new = embedder.encode(["a short text"], progress=False)
    np.testing.assert_allclose(old, new, atol=1e-6)
    assert seen == [True, False]


def test_cache_reads_the_sqlite_layout_it_always_wrote(tmp_path):
    import sqlite3

    vec = np.arange(4, dtype=np.float32)
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as con:
        con.execute(
            "CREATE TABLE vectors (model TEXT, key TEXT, vec BLOB, PRIMARY KEY (model, key))"
        )
        con.execute("INSERT INTO vectors VALUES ('m', 'k', ?)", [vec.tobytes()])
        con.execute("INSERT INTO vectors VALUES ('other', 'k2', ?)", [vec.tobytes()])
    cache = EmbeddingCache(tmp_path, "m")
    assert list(cache.get(["k", "k2"])) == ["k"]
    np.testing.assert_array_equal(cache.get(["k"])["k"], vec)
    cache.put(["k3"], vec[None] * 2)
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as con:
        rows = con.execute("SELECT model, key FROM vectors ORDER BY key").fetchall()
    assert rows == [("m", "k"), ("other", "k2"), ("m", "k3")]
