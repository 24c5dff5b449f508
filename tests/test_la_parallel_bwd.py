"""Training path of the quadratic causal Taylor form (kernels/linear_attn_parallel_bwd.py).

In Triton's interpreter (a subprocess: the interpreter must be on before triton is imported):
`check_la_parallel_backward` (forward and dq, dk, dv against float64 autograd of the
reference) on N not a multiple of the block and below one block, d 4, 8, 16, e 24, 40, 100,
B and H > 1, float32 and float16, values of mean 10, large keys, a large upstream gradient
(float16 range), and unequal block sizes; the causal structure of the gradients (one
upstream row: nothing reaches later keys, the diagonal block's keys get theirs); and the
inference forward bit for bit the kernel it was before the training flag was added.
"""

from __future__ import annotations

import pytest
from interpreted import run_interpreted

pytest.importorskip("triton")

CHECKS = r"""
import json
import torch
import kernels.linear_attn_parallel_bwd as pb
from kernels.selfcheck_forward import check_la_parallel_backward, grid_la_parallel_backward

torch.manual_seed(0)
rows = list(grid_la_parallel_backward("tiny", [torch.float32, torch.float16], "cpu"))
pb.INTERPRET_CONFIG.update(dq={"BM": 32, "BN": 16}, dkdv={"BM": 16, "BN": 32})
rows.append({**check_la_parallel_backward(2, 2, 77, 16, 24, torch.float32, "cpu"), "blocks": 32})
print(json.dumps(rows))
"""

STRUCTURE = r"""
import json
import torch
from kernels.linear_attn_parallel_bwd import taylor_causal_parallel_train
from kernels.reference import linear_attention_reference

torch.manual_seed(1)
N, out = 40, []
q, k = torch.randn(1, 2, N, 16), torch.randn(1, 2, N, 16)
v = torch.randn(1, 2, N, 24)
for i0 in (21, N - 1):  # mid-block (the block holds keys before and after it); the last row
    g = torch.zeros(1, 2, N, 24)
    g[:, :, i0] = torch.randn(2, 24)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    taylor_causal_parallel_train(*ins).backward(g)
    ref = [t.double().requires_grad_() for t in (q, k, v)]
    linear_attention_reference(*ref, "taylor", causal=True).backward(g.double())
    dq, dk, dv = (t.grad.double() for t in ins)
    rq, rk, rv = (t.grad for t in ref)
    err = lambda a, b: float((a - b).norm() / b.norm())
    blk = i0 // 16 * 16  # the diagonal block's first key (interpreter block 16)
    out.append({
        "i0": i0,
        "later_keys_zero": bool((dk[:, :, i0 + 1:] == 0).all() and (dv[:, :, i0 + 1:] == 0).all()),
        "other_rows_dq_zero": bool((dq[:, :, :i0] == 0).all() and (dq[:, :, i0 + 1:] == 0).all()),
        "diag_keys_err": max(err(dk[:, :, blk:i0 + 1], rk[:, :, blk:i0 + 1]),
                             err(dv[:, :, blk:i0 + 1], rv[:, :, blk:i0 + 1])),
        "own_key_err": max(err(dk[:, :, i0], rk[:, :, i0]), err(dv[:, :, i0], rv[:, :, i0])),
        "errs": [err(dq, rq), err(dk, rk), err(dv, rv)],
    })
print(json.dumps(out))
"""

# kernels/linear_attn_parallel.py's kernel as it was before the STORE_R flag (inference)
ORIGINAL = r"""
import torch
import triton
import triton.language as tl


@triton.jit
def _taylor_scores(q, k, scale, dt):
    s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
    return 1.0 + s + 0.5 * s * s


@triton.jit
def _la_parallel_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, N, H, D, E, scale, eps,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    BM: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
):
    m0 = (tl.num_programs(1) - 1 - tl.program_id(1)) * BM
    bh = tl.program_id(0).to(tl.int64)
    b, h = bh // H, bh % H
    rm = m0 + tl.arange(0, BM)
    rd = tl.arange(0, DP)
    re = tl.arange(0, EP)
    d_ok, e_ok, m_ok = rd < D, re < E, rm < N
    dt = q_ptr.dtype.element_ty
    qb = q_ptr + b * sqb + h * sqh
    kb = k_ptr + b * skb + h * skh
    vb = v_ptr + b * svb + h * svh
    q = tl.load(qb + rm[:, None] * sqn + rd[None, :], mask=m_ok[:, None] & d_ok[None, :])
    acc = tl.zeros((BM, EP), dtype=tl.float32)
    den = tl.zeros((BM,), dtype=tl.float32)
    rn0 = tl.arange(0, BM)
    for n0 in range(0, m0, BM):
        rn = n0 + rn0
        k = tl.load(kb + rn[:, None] * skn + rd[None, :], mask=d_ok[None, :], other=0.0)
        v = tl.load(vb + rn[:, None] * svn + re[None, :], mask=e_ok[None, :], other=0.0)
        a = _taylor_scores(q, k, scale, dt)
        acc += tl.dot(a.to(dt), v)
        den += tl.sum(a, axis=1)
    k = tl.load(kb + rm[:, None] * skn + rd[None, :], mask=m_ok[:, None] & d_ok[None, :])
    v = tl.load(vb + rm[:, None] * svn + re[None, :], mask=m_ok[:, None] & e_ok[None, :])
    a = _taylor_scores(q, k, scale, dt)
    keep = (rn0[:, None] >= rn0[None, :]) & m_ok[None, :]
    a = tl.where(keep, a, 0.0)
    acc += tl.dot(a.to(dt), v)
    den += tl.sum(a, axis=1)
    out = acc / (den[:, None] + eps)
    dst = o_ptr + b * sob + h * soh + rm[:, None] * son + re[None, :]
    tl.store(dst, out.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & e_ok[None, :])


def original(q, k, v, eps=1e-6):
    B, H, N, D = q.shape
    E = v.shape[-1]
    out = torch.empty(B, H, N, E, dtype=q.dtype)
    dp, ep = (max(16, 1 << (n - 1).bit_length()) for n in (D, E))
    _la_parallel_kernel[(B * H, triton.cdiv(N, 16))](
        q, k, v, out, N, H, D, E, float(D) ** -0.5, eps,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BM=16, DP=dp, EP=ep,
    )
    return out
"""

INFERENCE = r"""
import json
import sys
import torch
sys.path.insert(0, @DIR@)
from la_parallel_original import original
from kernels.linear_attn_parallel import taylor_causal_parallel, taylor_causal_parallel_fwd
from kernels.reference import linear_attention_reference

torch.manual_seed(2)
out = []
for B, H, N, d, e, dt in [(2, 3, 37, 16, 24, torch.float32), (1, 2, 70, 8, 64, torch.float16),
                          (1, 1, 5, 4, 100, torch.float32)]:
    q, k = (torch.randn(B, H, N, d).to(dt) for _ in range(2))
    v = torch.randn(B, H, N, e).to(dt)
    new, old = taylor_causal_parallel(q, k, v), original(q, k, v)
    train, r = taylor_causal_parallel_fwd(q, k, v)
    qd, kd = q.double(), k.double()
    s = qd @ kd.transpose(-1, -2) / d**0.5
    den = ((1 + s + s * s / 2) * torch.ones(N, N, dtype=torch.bool).tril()).sum(-1)
    ref = linear_attention_reference(qd, kd, v.double(), "taylor", causal=True)
    out.append({"case": [B, H, N, d, e, str(dt)], "same_as_before": bool(torch.equal(new, old)),
                "train_same": bool(torch.equal(new, train)),
                "r_err": float(((r.double() - 1 / (den + 1e-6)) * den).abs().max()),
                "err": float((new.double() - ref).norm() / ref.norm())})
print(json.dumps(out))
"""


def test_la_parallel_backward_checks():
    rows = run_interpreted(CHECKS)
    for row in rows:
        assert row["ok"], row
    assert {r["dtype"] for r in rows} == {"float32", "float16"}
    assert {r["shape"][3] for r in rows} == {4, 8, 16}  # d
    assert any(r["v_mean"] for r in rows) and any(r["k_scale"] for r in rows)
    assert any(r["shape"][2] < 16 for r in rows) and any(r["shape"][2] % 16 for r in rows)
    # the interpreter runs float32 exactly: far below the bound used on a GPU
    assert max(r["grad_rel_err"] for r in rows if r["dtype"] == "float32") < 1e-5


def test_gradients_causal_structure():
    """One upstream row i0: later keys get exactly nothing (a dropped causal mask would give
    them gradient), the keys of i0's own diagonal block get the reference's (a dk/dv pass
    that skipped the diagonal block would leave them 0), other rows' dq is 0."""
    for row in run_interpreted(STRUCTURE):
        assert row["later_keys_zero"] and row["other_rows_dq_zero"], row
        assert row["diag_keys_err"] < 1e-5 and row["own_key_err"] < 1e-5, row
        assert max(row["errs"]) < 1e-5, row


def test_inference_forward_unchanged(tmp_path):
    (tmp_path / "la_parallel_original.py").write_text(ORIGINAL)
    for row in run_interpreted(INFERENCE.replace("@DIR@", repr(str(tmp_path)))):
        assert row["same_as_before"] and row["train_same"], row
        assert row["r_err"] < 1e-5, row
        assert row["err"] < (1e-5 if "float32" in row["case"][-1] else 1e-2), row
