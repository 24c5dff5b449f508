"""A tiny random M2-BERT checkpoint for the encoder tests (test_m2bert, test_encoders_edges).

The released m2-bert-80M-*-retrieval architecture shrunk: hidden 64, 2 layers, l_max 128
(bidirectional, residual long conv, GLU Monarch MLP: M2BertConfig's defaults).
benchmarks/m2_graphs.py writes the same one for its embedder step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from toolkit.embed import default_model_path
from toolkit.encoders.m2bert import M2BertConfig, M2BertModel, save_m2bert

TINY = dict(
    vocab_size=30528,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=128,
    long_conv_l_max=128,
    hyena_filter_order=16,
    hyena_emb_dim=5,
    bidirectional=True,
    residual_long_conv=True,
    use_glu_mlp=True,
    use_monarch_mlp=True,
    monarch_mlp_nblocks=4,
)


def write_tiny_m2(path: Path, **over) -> Path:
    """A checkpoint folder in the released layout ('bert.'-prefixed keys, vocab.txt) of a
    seeded random TINY model, with `over` changing config fields."""
    torch.manual_seed(0)
    save_m2bert(M2BertModel(M2BertConfig(**{**TINY, **over})), path)
    shutil.copy(default_model_path() / "vocab.txt", path / "vocab.txt")
    return path
