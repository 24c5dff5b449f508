"""The fused M2 sequence mixer (`kernels.gated_long_conv`) in Triton's CPU interpreter.

The interpreter must be on before triton is imported, so the checks run in a subprocess.
They compare (1) the kernel with its float64 PyTorch reference on odd shapes, with and
without the residual convolution, and (2) an M2 model's inference forward (fused block,
cached filter spectra, the MLP through `kernels.m2_mlp`) with its training-mode forward (the reference's unfused order), the
parity fixture's model included; and that changing a filter weight in place is seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
import torch
from kernels import filter_spectra, gated_long_conv, gated_long_conv_reference
from toolkit.encoders.m2bert import M2BertConfig, M2BertModel

torch.manual_seed(0)
out = []
for B, L, D, res in [(2, 37, 24, True), (1, 64, 16, False), (3, 20, 40, True)]:
    z, h = torch.randn(B, L, 3 * D), torch.randn(B, L, D)
    k1 = torch.randn(D, 2 * L) * 0.1
    k2 = torch.randn(D, 2 * L) * 0.1 if res else None
    d1, d2 = torch.randn(D), (torch.randn(D) if res else None)
    w, b = torch.randn(3 * D, 1, 3), torch.randn(3 * D)
    ref = gated_long_conv_reference(
        z.double(), h.double(), k1.double(), d1, None if k2 is None else k2.double(), d2,
        w.double(), b.double())
    spec = filter_spectra([k1] + ([k2] if res else []), L)
    got = gated_long_conv(z, h, spec, d1, d2, w, b)
    assert got.shape == (B, L, D)
    err = float((got.double() - ref).abs().max() / ref.abs().max())
    out.append({"case": "kernel", "shape": [B, L, D], "res": res, "err": err})

from kernels import blockdiag_matmul_reference
from kernels.m2_mlp import (
    bias_residual_layer_norm, blockdiag_mm, glu_gelu, glu_gelu_reference)
x = torch.randn(37, 2 * 24)
e = float((glu_gelu(x) - glu_gelu_reference(x.double()).float()).abs().max())
out.append({"case": "glu", "err": e})
x, r = torch.randn(29, 40), torch.randn(29, 40)
bias, w, lb = torch.randn(40), torch.randn(40), torch.randn(40)
ref = torch.nn.functional.layer_norm((x + r + bias).double(), (40,), w.double(), lb.double(), 1e-12)
e = float((bias_residual_layer_norm(x, bias, r, w, lb, 1e-12) - ref).abs().max())
out.append({"case": "layer_norm", "err": e})
x, wb = torch.randn(33, 4 * 6), torch.randn(4, 10, 6)
ref = blockdiag_matmul_reference(x.double(), wb.double())
e = float((blockdiag_mm(x, [b.t().contiguous() for b in wb]) - ref).abs().max())
out.append({"case": "blockdiag", "err": e})

cfg = M2BertConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   max_position_embeddings=48, long_conv_l_max=48, hyena_filter_order=8,
                   bidirectional=True, residual_long_conv=True, use_glu_mlp=True,
                   use_monarch_mlp=True, monarch_mlp_nblocks=4)
model = M2BertModel(cfg).eval()
ids = torch.randint(0, 500, (2, 48))
with torch.no_grad():
    fused = model(ids)[0]
    mixer = model.encoder.layer[0].attention
    assert mixer.fused_ok(torch.zeros(1, 48, 32)) and mixer._spectra is not None
    again = model(ids)[0]  # from the cached spectra
with torch.enable_grad():
    plain = model(ids)[0].detach()
err = float((fused - plain).abs().max() / plain.abs().max())
out.append({"case": "model", "err": err, "cached_equal": bool(torch.equal(fused, again))})
with torch.no_grad():
    mixer.filter_fn.implicit_filter[0].weight.mul_(1.5)  # in place: the cache must notice
    changed = model(ids)[0]
with torch.enable_grad():
    plain2 = model(ids)[0].detach()
out.append({"case": "weights changed", "err": float((changed - plain2).abs().max() / plain2.abs().max()),
            "moved": float((changed - fused).abs().max())})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fused_block_matches_float64_reference(rows):
    kernel = [r for r in rows if r["case"] == "kernel"]
    assert len(kernel) == 3 and {r["res"] for r in kernel} == {True, False}
    assert max(r["err"] for r in kernel) < 1e-5, kernel


@pytest.mark.parametrize("case", ["glu", "layer_norm", "blockdiag"])
def test_fused_mlp_parts_match_references(rows, case):
    (row,) = [r for r in rows if r["case"] == case]
    assert row["err"] < 1e-5, row


def test_model_inference_equals_the_unfused_forward(rows):
    (model,) = [r for r in rows if r["case"] == "model"]
    assert model["err"] < 1e-4 and model["cached_equal"], model


def test_cached_spectra_follow_in_place_weight_changes(rows):
    (changed,) = [r for r in rows if r["case"] == "weights changed"]
    assert changed["moved"] > 1e-3  # the output changed with the weights ...
    assert changed["err"] < 1e-4, changed  # ... to what the unfused forward gives
