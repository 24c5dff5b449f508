"""Linear-attention conversion: attention math, a tiny real conversion, loading, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toolkit.datasets import sample_corpus
from toolkit.embed import convert_to_linear, get_embedder
from toolkit.encoders.linear import LinearAttentionEmbedder, LinearAttentionLayer
from toolkit.errors import LoomError


@pytest.mark.parametrize("feature_map", ["hedgehog", "taylor"])
@pytest.mark.parametrize("window", [None, 3])
def test_layer_output_equals_its_attention_weights(feature_map, window):
    """The kernel path (used to embed) and the explicit weights (used to distil) agree."""
    torch.manual_seed(0)
    layer = LinearAttentionLayer(4, 8, feature_map, window=window)
    if window:
        layer.gate.data = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))
    mask = torch.tensor([[1.0] * 10, [1.0] * 6 + [0.0] * 4])
    with torch.no_grad():
        out = layer(q, k, v, mask)
        w = layer.attention_weights(q, k, mask)
        explicit = layer(q, k, v, mask, explicit=True)
    np.testing.assert_allclose(w[0].sum(-1).numpy(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w[1, :, :6].sum(-1).numpy(), 1.0, rtol=1e-5)  # valid queries
    expected = torch.einsum("bhij,bhjd->bhid", w, v)
    torch.testing.assert_close(out[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1, :, :6], expected[1, :, :6], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(explicit[1, :, :6], expected[1, :, :6], atol=1e-5, rtol=1e-5)
    assert torch.all(w[1, :, :, 6:] == 0)  # padded keys get no weight


def _texts(n: int) -> list[str]:
    df = sample_corpus()
    return (df["title"] + ". " + df["summary"]).tolist()[:n]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("lin") / "minilm-hedgehog"
    path = convert_to_linear(
        None,
        feature_map="hedgehog",
        texts=_texts(64),
        steps=8,
        finetune_steps=4,
        batch_size=4,
        train_length=32,
        lr=3e-2,
        device="cpu",
        out=out,
        progress=False,
    )
    return path


def test_conversion_writes_a_loadable_folder(converted):
    meta = json.loads((converted / "linear_attention.json").read_text())
    assert meta["feature_map"] == "hedgehog" and meta["pooling"] == "mean" and meta["normalize"]
    train = meta["train"]
    # distillation lowers the attention cross-entropy on real text
    assert train["distill_loss_last"] < train["distill_loss_first"][0]
    assert train["finetune_steps"] == 4 and 0 <= train["finetune_loss_last"] < 1
    assert (converted / "feature_maps.safetensors").is_file()
    emb = get_embedder(f"linear:{converted}", device="cpu")
    assert isinstance(emb, LinearAttentionEmbedder)
    assert (emb.dim, emb.max_length) == (384, 4096)  # positions="interpolate" by default


def test_converted_encoder_tracks_the_original(converted):
    texts = _texts(80)[64:]  # not seen in distillation
    emb = get_embedder(f"linear:{converted}", device="cpu")
    base = get_embedder(None, device="cpu")
    a, b = emb.encode(texts), base.encode(texts)
    assert a.shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    cos = (a * b).sum(1)
    assert cos.mean() > 0.6
    # retrieval structure survives: each text's nearest original neighbour ranks high
    sims_lin, sims_base = a @ a.T, b @ b.T
    np.fill_diagonal(sims_lin, -1)
    np.fill_diagonal(sims_base, -1)
    agree = np.mean(sims_lin.argmax(1) == sims_base.argmax(1))
    assert agree >= 0.5


def test_padded_batch_equals_one_by_one(converted):
    emb = get_embedder(f"linear:{converted}", device="cpu")
    texts = ["a short one", "a much longer sentence about markets, banks and the economy"]
    together = emb.encode(texts)
    alone = np.stack([emb.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_taylor_with_window_converts_and_loads(tmp_path):
    path = convert_to_linear(
        None,
        feature_map="taylor",
        texts=_texts(16),
        steps=2,
        finetune_steps=0,
        batch_size=4,
        train_length=24,
        window=4,
        device="cpu",
        out=tmp_path / "t",
        progress=False,
    )
    emb = LinearAttentionEmbedder(path, device="cpu")
    vecs = emb.encode(["one text", "another text"])
    assert vecs.shape == (2, 384) and np.isfinite(vecs).all()


def test_bad_input_raises(tmp_path, converted):
    with pytest.raises(LoomError, match="texts"):
        convert_to_linear(None, texts=None, out=tmp_path / "x")
    with pytest.raises(LoomError, match="feature_map"):
        convert_to_linear(None, feature_map="relu", texts=_texts(8), out=tmp_path / "x")
    with pytest.raises(LoomError, match="not empty"):
        convert_to_linear(None, texts=_texts(8), steps=1, finetune_steps=0, out=converted)
    with pytest.raises(LoomError, match="linear_attention.json"):
        get_embedder(f"linear:{tmp_path}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(converted):
    texts = _texts(8)
    cpu = LinearAttentionEmbedder(converted, device="cpu").encode(texts)
    gpu = LinearAttentionEmbedder(converted, device="cuda").encode(texts)
    assert (cpu * gpu).sum(1).min() > 0.999
