"""The packed (unpadded) encoder path: same vectors as the padded model, in input order.

On CUDA the packed path is the default; here on the CPU it runs with `packed=True`, its
attention through padded SDPA (varlen flash attention needs a GPU), so these tests check
everything else it does: tokenization on threads, bias folding, packing, batching, pooling.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolkit.embed import TransformerEmbedder, default_model_path
from toolkit.embed.packed import (
    PackedBert,
    bert_weights,
    fold_biases,
    padded_attention,
    pooling_mode,
    positions,
)
from toolkit.embed.pipeline import rust_tokenizer, token_batches, tokenize_chunk
from toolkit.embed.tokens import token_ids


@pytest.fixture(scope="module")
def packed():
    emb = TransformerEmbedder(default_model_path(), "cpu", packed=True, token_budget=2048)
    assert emb.packed is not None, "the packed path must build for MiniLM (a BertModel)"
    return emb


@pytest.fixture(scope="module")
def texts(bbc_sample):
    rng = np.random.default_rng(0)
    words = " ".join(bbc_sample["summary"].tolist()).split()
    lengths = rng.integers(1, 120, 60)
    starts = rng.integers(0, len(words) - 700, 60)
    out = [" ".join(words[s : s + k]) for s, k in zip(starts, lengths)]
    out[7] = " ".join(words[:650])  # longer than the 256-token window: chunked
    out[20] = "x"
    return out


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("long_text", ["chunk", "truncate"])
def test_packed_equals_padded(packed, texts, long_text):
    fast = packed.encode(texts, long_text=long_text, batch_size=9, progress=False)
    slow = unit(packed.embed_padded(texts, None, False, long_text))
    cos = (fast * slow).sum(1)
    assert cos.min() > 0.99999, cos.min()


def test_packed_keeps_order_and_matches_sentence_transformers(packed, texts):
    shuffled = [texts[i] for i in np.random.default_rng(1).permutation(len(texts))]
    a = packed.encode(texts, long_text="truncate", progress=False)
    b = packed.encode(shuffled, long_text="truncate", progress=False)
    lookup = {t: v for t, v in zip(shuffled, b)}
    assert np.allclose(a, np.stack([lookup[t] for t in texts]), atol=1e-5)
    ref = packed.model.encode(texts, normalize_embeddings=True)
    assert (a * ref).sum(1).min() > 0.99999


def test_rust_tokenizer_gives_the_same_ids(packed, texts):
    tok = rust_tokenizer(packed.tokenizer)
    chunk = tokenize_chunk(
        tok, texts, 5, packed.window, packed.overlap, packed.prefix_ids, packed.suffix_ids, False
    )
    pieces, owner = packed._pieces(texts, "chunk")
    assert np.array_equal(chunk.owner, owner + 5)
    assert np.array_equal(chunk.lengths, [len(p) for p in pieces])
    assert np.array_equal(chunk.flat, np.concatenate([np.asarray(p) for p in pieces]))
    # the model's own tokenizer is left as it was (truncation on our private copy only)
    assert token_ids(packed.tokenizer, ["hello world"]) == [tok.encode("hello world").ids[1:-1]]


def test_fold_biases_is_exact(packed):
    auto = packed.model[0].auto_model
    state = auto.state_dict()
    emb, raw = bert_weights(state, auto.config.num_hidden_layers)
    emb2, raw2 = bert_weights(state, auto.config.num_hidden_layers)
    fold_biases(emb2, raw2)
    assert not torch.allclose(emb["norm_b"], emb2["norm_b"])  # the fold moved something
    x = torch.randn(50, emb["word"].shape[1])
    eps, h = auto.config.layer_norm_eps, x.shape[1]
    for layer, folded in zip(raw, raw2):
        ref = F.layer_norm(x @ layer["out_w"].T + layer["out_b"] + x, (h,), eps=eps)
        x2 = x + layer["out_b"]  # what the folded previous LayerNorm hands over
        out = F.layer_norm(torch.addmm(x2, x, folded["out_w"].T), (h,), eps=eps)
        assert torch.allclose(ref, out, atol=1e-5)
        assert torch.allclose(
            F.linear(x, layer["qkv_w"], layer["qkv_b"]),
            F.linear(x2, folded["qkv_w"], folded["qkv_b"]),
            atol=1e-4,
        )


def test_padded_attention_is_per_text():
    torch.manual_seed(0)
    lengths = [3, 1, 7, 4]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    q, k, v = (torch.randn(sum(lengths), 2, 8) for _ in range(3))
    out = padded_attention(q, k, v, cu, max(lengths))
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        ref = F.scaled_dot_product_attention(*(t[s:e].transpose(0, 1) for t in (q, k, v)))
        assert torch.allclose(out[s:e], ref.transpose(0, 1), atol=1e-6)
    assert positions(cu, sum(lengths)).tolist() == [0, 1, 2, 0, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_pooling_modes(mode):
    lengths = [2, 5, 1]
    cu = torch.tensor([0, 2, 7, 8], dtype=torch.int32)
    x = torch.randn(8, 4)
    model = object.__new__(PackedBert)
    model.pooling, model.hidden, model.fused_glue = mode, 4, False
    out = model.pool(x, cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        seg = x[s:e]
        ref = {"mean": seg.mean(0), "cls": seg[0], "max": seg.max(0).values}[mode]
        assert torch.allclose(out[i], ref, atol=1e-6), (mode, lengths[i])


def test_pooling_mode_reads_both_sentence_transformers_styles():
    class New:
        pooling_mode = "mean"

    class Old:
        pooling_mode_mean_tokens = False
        pooling_mode_cls_token = True

    class Weighted:
        pooling_mode = "weightedmean"

    assert pooling_mode(New()) == "mean"
    assert pooling_mode(Old()) == "cls"
    assert pooling_mode(Weighted()) is None  # not implemented: the standard forward runs


def test_token_batches_respect_budget_and_rows():
    lengths = np.array([5, 9, 3, 20, 1, 1, 1, 7])
    batches = token_batches(lengths, token_budget=12, max_rows=2)
    assert [i for b in batches for i in range(b.start, b.stop)] == list(range(len(lengths)))
    for b in batches:
        assert b.stop - b.start <= 2
        assert lengths[b].sum() <= 12 or b.stop - b.start == 1  # a lone long piece still runs


def test_other_architectures_keep_the_standard_forward():
    class NotBert:
        config = type("C", (), {"model_type": "roberta"})()

    class Module:
        auto_model = NotBert()

    assert PackedBert.from_sentence_transformer([Module(), object()], "cpu") is None


def test_tokenize_chunk_truncates_and_counts(packed, texts):
    """The vectorised fast path (no window needed) equals the per-text ids; counts are the
    texts' full token counts (ids + special tokens), as `token_counts` gives them."""
    tok = rust_tokenizer(packed.tokenizer)
    args = (packed.window, packed.overlap, packed.prefix_ids, packed.suffix_ids)
    chunk = tokenize_chunk(tok, texts, 0, *args, True)
    pieces, owner = packed._pieces(texts, "truncate")
    assert np.array_equal(chunk.owner, owner)
    assert np.array_equal(chunk.flat, np.concatenate([np.asarray(p) for p in pieces]))
    assert np.array_equal(chunk.counts, packed.token_counts(texts))
    windowed = tokenize_chunk(tok, texts, 0, *args, False)
    assert np.array_equal(windowed.counts, chunk.counts)
    assert len(windowed.lengths) > len(chunk.lengths)  # text 7 was split into windows


def test_run_packed_fills_batches_across_chunks(monkeypatch):
    """Many small chunks (a server's merged call) still run full token-budget batches:
    the partial batch at the end of a chunk is topped up from the next chunk."""
    from toolkit.embed.pipeline import Chunk, run_packed

    def chunk(first, n, length=10):
        lengths = np.full(n, length, dtype=np.int64)
        flat = np.arange(first * length, (first + n) * length, dtype=np.int32)
        return Chunk(flat, lengths, np.arange(first, first + n), lengths)

    calls = []

    def forward(ids, cu, longest):
        calls.append(len(ids))
        starts = cu[:-1].long()
        return ids[starts].float()[:, None].repeat(1, 3)  # each piece's first id

    chunks = [chunk(s, 3) for s in range(0, 30, 3)]  # 10 chunks of 3 texts of 10 tokens
    done = []
    vecs, owner = run_packed(forward, iter(chunks), 3, "cpu", 100, 1000, done.append)
    assert calls == [100, 100, 100]  # not 10 calls of 30 tokens
    assert np.array_equal(owner, np.arange(30))
    assert np.array_equal(vecs[:, 0], np.arange(30) * 10)
    assert sum(done) == 30
