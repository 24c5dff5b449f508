"""M2-BERT: parity with the reference implementation, checkpoint loading, the embedding service."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from m2_tiny import write_tiny_m2
from safetensors.torch import load_file, save_file

from toolkit.embed import get_embedder
from toolkit.encoders.m2bert import (
    M2BertConfig,
    M2BertEmbedder,
    M2BertModel,
    load_m2bert,
)
from toolkit.errors import LoomError

FIXTURE = Path(__file__).parent / "data" / "m2bert"


def _fixture(name: str) -> dict[str, torch.Tensor]:
    """The parity fixture's arrays (stored as .npz: no weight files in git)."""
    with np.load(FIXTURE / f"{name}.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    """The reference model as a checkpoint folder (config.json + model.safetensors)."""
    path = tmp_path_factory.mktemp("m2-reference")
    shutil.copy(FIXTURE / "config.json", path / "config.json")
    save_file(_fixture("model"), str(path / "model.safetensors"))
    return path


def test_parity_with_reference_outputs(reference_dir):
    """Reference (HazyResearch/m2 BertModel) outputs on fixed weights are reproduced."""
    model = load_m2bert(reference_dir)
    io = _fixture("io")
    with torch.no_grad():
        seq, pooled = model(io["input_ids"], io["attention_mask"])
    assert seq.shape == io["sequence_output"].shape == (3, 128, 64)
    torch.testing.assert_close(seq, io["sequence_output"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled, io["pooled_output"], atol=1e-5, rtol=1e-4)
    # the mixer ignores the attention mask, as in the reference
    with torch.no_grad():
        _, pooled_nomask = model(io["input_ids"])
    torch.testing.assert_close(pooled_nomask, pooled)


def test_fixture_keys_are_all_used():
    sd = _fixture("model")
    cfg = M2BertConfig.from_dict(json.loads((FIXTURE / "config.json").read_text()))
    own = M2BertModel(cfg).state_dict()
    assert set(sd) == set(own)
    assert all(sd[k].shape == own[k].shape for k in sd)


def test_pooler_is_cls_tanh_dense(reference_dir):
    model = load_m2bert(reference_dir)
    ids = _fixture("io")["input_ids"][:1]
    with torch.no_grad():
        seq, pooled = model(ids)
        manual = torch.tanh(model.pooler.dense(seq[:, 0]))
    torch.testing.assert_close(pooled, manual)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder in the released layout: 'bert.'-prefixed keys, vocab.txt."""
    return write_tiny_m2(tmp_path_factory.mktemp("m2-tiny"))


def test_released_layout_loads_through_embedding_service(checkpoint):
    keys = load_file(str(checkpoint / "model.safetensors")).keys()
    assert all(k.startswith("bert.") for k in keys)
    emb = get_embedder(f"m2-bert:{checkpoint}", device="cpu")
    assert isinstance(emb, M2BertEmbedder)
    assert (emb.dim, emb.max_length, emb.pad_length) == (64, 128, 128)
    texts = ["the cat sat on the mat", "stock markets fell sharply", "the cat sat on the mat"]
    vecs = emb.encode(texts)
    assert vecs.shape == (3, 64) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert float(vecs[0] @ vecs[1]) < 0.9999


def test_encode_pads_to_l_max_and_pools_cls(checkpoint):
    emb = get_embedder(f"m2-bert:{checkpoint}", device="cpu")
    tok = emb.tokenizer
    ids = tok("hello world")["input_ids"]
    assert ids[0] == tok.cls_token_id == 101 and ids[-1] == tok.sep_token_id == 102
    padded = torch.zeros(1, 128, dtype=torch.long)
    padded[0, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        expected = emb.model(padded)[1][0].numpy()
    got = emb.encode(["hello world"], normalize=False)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # padding is part of the input: a shorter pad length changes the output (no masking)
    with torch.no_grad():
        short = emb.model(padded[:, :16])[1][0].numpy()
    assert np.abs(short - expected).max() > 1e-4


def test_long_text_chunk_and_truncate(checkpoint):
    emb = get_embedder(f"m2-bert:{checkpoint}", device="cpu")
    long_text = " ".join(["word"] * 300)
    chunked = emb.encode([long_text], long_text="chunk")
    truncated = emb.encode([long_text], long_text="truncate")
    assert chunked.shape == truncated.shape == (1, 64)
    pieces, owner = emb._pieces([long_text], "chunk")
    assert len(pieces) > 1 and all(len(p) <= 128 for p in pieces)
    trunc, _ = emb._pieces([long_text], "truncate")
    assert len(trunc) == 1 and len(trunc[0]) == 128 and trunc[0][0] == 101


def test_bad_checkpoints_raise_clear_errors(checkpoint, tmp_path):
    with pytest.raises(LoomError, match="does not exist"):
        get_embedder("m2-bert:/no/such/folder")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    sd = load_file(str(broken / "model.safetensors"))
    del sd["bert.encoder.layer.1.attention.filter_fn2.implicit_filter.0.weight"]
    save_file(sd, str(broken / "model.safetensors"))
    with pytest.raises(LoomError, match="missing"):
        M2BertEmbedder(broken, device="cpu")
    cfg = json.loads((checkpoint / "config.json").read_text())
    wrong = tmp_path / "wrong"
    shutil.copytree(checkpoint, wrong)
    (wrong / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(LoomError, match="config.json"):
        M2BertEmbedder(wrong, device="cpu")
    notok = tmp_path / "notok"
    shutil.copytree(checkpoint, notok)
    (notok / "vocab.txt").unlink()
    with pytest.raises(LoomError, match="tokenizer"):
        M2BertEmbedder(notok, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(checkpoint):
    texts = ["the cat sat on the mat", "stock markets fell sharply in early trading"]
    cpu = M2BertEmbedder(checkpoint, device="cpu").encode(texts)
    gpu = M2BertEmbedder(checkpoint, device="cuda", dtype="float32").encode(texts)
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)
    half = M2BertEmbedder(checkpoint, device="cuda").encode(texts)
    assert (half * cpu).sum(1).min() > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_per_bucket(checkpoint):
    """Replays equal the eager forward; one capture per row bucket (16 rows, and a last batch
    of 5 padded to 8); weights updated in place are seen (the graphs are recaptured)."""
    texts = [f"text {i} " + "word " * (i % 40) for i in range(21)]
    on = M2BertEmbedder(checkpoint, device="cuda", token_budget=128 * 16, cuda_graphs=True)
    off = M2BertEmbedder(checkpoint, device="cuda", token_budget=128 * 16)
    assert on.cuda_graphs and not off.cuda_graphs and on.batch_rows() == 16
    a, b = on.encode(texts), off.encode(texts)
    assert not on.graphs.eager and on.graphs.captures == 2
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(on.encode(texts), a, atol=1e-6)
    assert on.graphs.captures == 2  # replayed, not recaptured
    with torch.no_grad():
        for emb in (on, off):
            emb.model.pooler.dense.bias.add_(0.5)
    a2, b2 = on.encode(texts), off.encode(texts)
    assert on.graphs.captures == 4 and np.abs(a2 - a).max() > 1e-3
    np.testing.assert_allclose(a2, b2, atol=1e-5)


def test_cuda_graphs_off_on_cpu(checkpoint):
    emb = M2BertEmbedder(checkpoint, device="cpu", cuda_graphs=True)
    assert not emb.cuda_graphs
    emb.encode(["one text"])
    assert emb.graphs.captures == 0


def test_filter_cache_follows_the_weights(reference_dir):
    """Filters are reused between inference calls and recomputed when weights change."""
    model = load_m2bert(reference_dir)
    ids = _fixture("io")["input_ids"]
    with torch.inference_mode():
        first = model(ids)[1]
        assert model.encoder.layer[0].attention.filter_fn._cache  # kept
        again = model(ids)[1]
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    with torch.no_grad():
        model.encoder.layer[0].attention.filter_fn.implicit_filter[0].weight.mul_(1.5)
        changed = model(ids)[1]
    fresh = M2BertModel(model.config)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = fresh.eval()(ids)[1]
    assert (changed - first).abs().max() > 1e-4
    torch.testing.assert_close(changed, expected, atol=1e-6, rtol=1e-5)
