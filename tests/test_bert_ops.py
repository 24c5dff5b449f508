"""The packed BERT glue kernels (`kernels.bert_ops`) in Triton's CPU interpreter.

The interpreter must be on before triton is imported, so the checks run in a subprocess.
They compare each kernel (embeddings + LayerNorm, row LayerNorm, mean pooling with and
without unit length) with its PyTorch reference in float64 on ragged texts (a text of one
token, one of zero, a hidden size that is not a power of two), and the real MiniLM packed
forward with the fused glue switched on against the same forward with PyTorch's glue.
"""

from __future__ import annotations

import pytest
from interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = r"""
import json
import numpy as np
import torch
from kernels.bert_ops import (
    embed_layernorm, embed_layernorm_reference, layer_norm, segment_mean,
    segment_mean_reference)

torch.manual_seed(0)
out = []
n, vocab, npos = 40, 50, 30
lengths = [5, 1, 0, 17, 3]
cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
T = int(cu[-1])
ids = torch.randint(0, vocab, (T,))
word, pos = torch.randn(vocab, n), torch.randn(npos, n)
type0, w, b = torch.randn(n), torch.randn(n), torch.randn(n)
ref = embed_layernorm_reference(ids, cu, *(t.double() for t in (word, pos, type0, w, b)), 1e-12)
got = embed_layernorm(ids, cu, max(lengths), word, pos, type0, w, b, 1e-12)
out.append({"case": "embed", "err": float((got.double() - ref).abs().max())})
try:
    embed_layernorm(ids, cu, npos + 1, word, pos, type0, w, b, 1e-12)
    out.append({"case": "too_long", "raised": False})
except ValueError as e:
    out.append({"case": "too_long", "raised": "positions" in str(e)})
x = torch.randn(T, n)
ref = torch.nn.functional.layer_norm(x.double(), (n,), w.double(), b.double(), 1e-12)
out.append({"case": "ln", "err": float((layer_norm(x, w, b, 1e-12).double() - ref).abs().max())})
for norm in (False, True):
    ref = segment_mean_reference(x.double(), cu, norm)
    got = segment_mean(x, cu, norm)
    out.append({"case": f"mean{int(norm)}", "err": float((got.double() - ref).abs().max())})

# the real packed MiniLM forward: fused glue vs PyTorch's glue, same weights and inputs
from toolkit.embed import TransformerEmbedder, default_model_path
emb = TransformerEmbedder(default_model_path(), "cpu", packed=True)
model = emb.packed.model
lengths = [9, 2, 30, 14]
cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
ids = torch.randint(1000, 20000, (int(cu[-1]),))
with torch.no_grad():
    model.fused_glue = False
    plain = model(ids, cu, max(lengths))
    model.fused_glue = True
    fused = model(ids, cu, max(lengths))
cos = torch.nn.functional.cosine_similarity(plain, fused).min()
out.append({"case": "minilm", "cos": float(cos), "normalize": model.normalize})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
    return {r["case"]: r for r in run_interpreted(SCRIPT)}


def test_kernels_match_references(results):
    for case in ("embed", "ln", "mean0", "mean1"):
        assert results[case]["err"] < 1e-5, results[case]


def test_text_longer_than_positions_is_refused(results):
    assert results["too_long"]["raised"] is True


def test_packed_minilm_with_fused_glue_matches(results):
    assert results["minilm"]["cos"] > 0.99999, results["minilm"]
