"""The quadratic causal Taylor form (`kernels.linear_attn_parallel`) in Triton's interpreter.

Run in a subprocess (the interpreter must be on before triton is imported): the kernel
against the float64 chunked-form reference on ragged lengths (one row, fewer rows than a
block, several blocks plus a partial one), d below the padded width, e not a power of two,
and `linear_attention`'s routing: causal inference takes this form up to PARALLEL_MAX_N,
16-bit training (inputs that need gradients) its training path
(kernels/linear_attn_parallel_bwd.py) up to PARALLEL_TRAIN_MAX_N and the chunked form with its
fused backward past it, for float32 and for values padded past 128.
"""

from __future__ import annotations

import pytest
from interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = r"""
import json
import torch
import kernels.linear_attn_parallel as lp
from kernels import linear_attention, linear_attention_reference

torch.manual_seed(0)
out = []
for B, H, N, d, e in [(2, 3, 37, 16, 24), (1, 2, 16, 8, 16), (1, 1, 70, 16, 64), (3, 1, 1, 16, 32)]:
    q, k, v = torch.randn(B, H, N, d), torch.randn(B, H, N, d), torch.randn(B, H, N, e)
    ref = linear_attention_reference(q.double(), k.double(), v.double(), "taylor", causal=True)
    got = lp.taylor_causal_parallel(q, k, v).double()
    out.append({"case": [B, H, N, d, e], "err": float((got - ref).norm() / ref.norm())})
import kernels.linear_attn as la
calls = []
real = la.taylor_causal_parallel
la.taylor_causal_parallel = lambda *a, **kw: calls.append(1) or real(*a, **kw)
q, k, v = torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 32)
with torch.no_grad():
    linear_attention(q, k, v, "taylor", causal=True)
routed_inference = len(calls)
train_calls = []
real_train = la.taylor_causal_parallel_train
la.taylor_causal_parallel_train = lambda *a, **kw: train_calls.append(1) or real_train(*a, **kw)
qg = q.half().requires_grad_()
kh, vh = k.half(), v.half()
linear_attention(qg, kh, vh, "taylor", causal=True).sum().backward()
routed_training = len(calls) - routed_inference
train_16bit = len(train_calls)
q32 = q.clone().requires_grad_()  # float32 training keeps the chunked kernels
linear_attention(q32, k, v, "taylor", causal=True).sum().backward()
train_32bit = len(train_calls) - train_16bit
la.PARALLEL_TRAIN_MAX_N = 39  # N = 40 past it: the chunked kernels and their fused backward
qc = q.half().requires_grad_()
linear_attention(qc, kh, vh, "taylor", causal=True).sum().backward()
wide = torch.randn(1, 2, 40, 200)  # e padded past 128: the chunked kernels tile it
hw = torch.randn(2, 16, 8) / 4  # Hedgehog is never the Taylor quadratic form
with torch.no_grad():
    linear_attention(q, k, wide, "taylor", causal=True)
    hh = linear_attention(q, k, v, "hedgehog", causal=True, hedgehog_weight=hw)
hh_ref = linear_attention_reference(q, k, v, "hedgehog", causal=True, hedgehog_weight=hw)
la.PARALLEL_TRAIN_MAX_N = 8192
qh = q.half().requires_grad_()
linear_attention(qh, kh, vh, "hedgehog", causal=True, hedgehog_weight=hw.half()).sum().backward()
out.append({"case": "routing", "inference": routed_inference, "training": routed_training,
            "train_path": train_16bit, "train_path_float32": train_32bit,
            "hedgehog_err": float((hh - hh_ref).abs().max()),
            "hedgehog_train_calls": len(train_calls) - train_16bit - train_32bit,
            "wide_inference": len(calls) - routed_inference - routed_training,
            "grad_finite": bool(torch.isfinite(qg.grad).all()),
            "paths_agree": float((qg.grad.float() - qc.grad.float()).abs().max()
                                 / qc.grad.float().abs().max())})
print(json.dumps(out))
"""


def test_parallel_form_matches_reference_and_routing():
    rows = run_interpreted(SCRIPT)
    for r in rows[:-1]:
        assert r["err"] < 1e-5, r
    routing = rows[-1]
    assert routing["inference"] == 1, routing
    assert routing["training"] == 0 and routing["grad_finite"], routing
    # training at N <= PARALLEL_TRAIN_MAX_N: the quadratic form's own forward + backward, with
    # the same gradients as the chunked path past it
    assert routing["train_path"] == 1 and routing["paths_agree"] < 2e-2, routing
    assert routing["train_path_float32"] == 0 and routing["wide_inference"] == 0, routing
    assert routing["hedgehog_err"] < 1e-4 and routing["hedgehog_train_calls"] == 0, routing
