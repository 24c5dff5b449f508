"""Causal Taylor (BASED) linear attention in its quadratic, attention-like form, for short N.

out_i = sum_{j<=i} a_ij v_j / (sum_{j<=i} a_ij + eps) with a_ij = 1 + s + s^2 / 2 and
s = q_i . k_j / sqrt(d): the same numbers as the feature-map form phi(q_i) . phi(k_j), read
as a masked attention matrix built tile by tile (flash-attention's loop without the softmax:
no running maximum, no rescaling). Its work grows as N^2 (d + e) instead of the chunked
form's N (1 + d + d^2) e, so below a few thousand tokens, where the chunked form's state
work dominates, it is the faster causal forward (`linear_attention` picks it by length for
inference). This is what flash-linear-attention's `parallel_based` does for short sequences
too. Training: `taylor_causal_parallel_fwd` runs the same kernel with STORE_R, which also
writes r_i = 1 / (den_i + eps) (float32) for the backward in kernels/linear_attn_parallel_bwd.py
(`taylor_causal_parallel_train`, with autograd); `taylor_causal_parallel` (inference) compiles
without it, to the same code as before the flag.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2

#: Longest sequence for which `linear_attention` takes this form (causal Taylor inference).
#: H200, bf16, H=12, d=16, e=64 (benchmarks/results/la-causal-forms-NVIDIA-H200.jsonl): this
#: form vs the chunked kernel 0.18 vs 0.37 ms (B=1) and 1.77 vs 2.29 ms (B=8) at N=8k, but
#: 0.70 vs 0.61 and 7.33 vs 4.50 ms at 16k.
PARALLEL_MAX_N = 8192

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _taylor_scores(q, k, scale, dt):
        """a = 1 + s + s^2/2 for s = q k^T * scale, float32 (BM, BN), cast to dt by callers."""
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
        return 1.0 + s + 0.5 * s * s

    @triton.jit
    def _la_parallel_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, r_ptr, N, H, D, E, scale, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        BM: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, STORE_R: tl.constexpr,
    ):  # fmt: skip
        """Rows [m0, m0 + BM) of one (b, h): full key blocks below the diagonal unmasked,
        then the diagonal block with the causal mask. STORE_R (training): also r_i =
        1 / (den_i + eps), float32 (B, H, N), for the backward; inference compiles without."""
        # the longest rows (most key blocks) first, heads fastest: balanced waves
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
        for n0 in range(0, m0, BM):  # every key of these blocks precedes every query row
            rn = n0 + rn0
            k = tl.load(kb + rn[:, None] * skn + rd[None, :], mask=d_ok[None, :], other=0.0)
            v = tl.load(vb + rn[:, None] * svn + re[None, :], mask=e_ok[None, :], other=0.0)
            a = _taylor_scores(q, k, scale, dt)
            acc += tl.dot(a.to(dt), v)
            den += tl.sum(a, axis=1)
        # the diagonal block: key j <= query i, keys past N masked
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
        if STORE_R:
            tl.store(r_ptr + bh * N + rm, 1.0 / (den + eps), mask=m_ok)


def quadratic_form_fits(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `linear_attention` may take this form (and its training path) for a causal
    Taylor call: one program holds whole rows of q (padded d <= 16) and v (padded e <= 128),
    the sizes checked on the GPU; wider ones keep the chunked kernels, which tile e."""
    return next_pow2(q.shape[-1]) <= 16 and next_pow2(v.shape[-1]) <= 128


#: Launch settings on CUDA (rows per program, warps, pipeline stages).
CONFIG = {"BM": 64, "num_warps": 4, "num_stages": 3}


def _forward(q, k, v, eps: float, store_r: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, r or None): one launch of `_la_parallel_kernel`."""
    B, H, N, D = q.shape
    E = v.shape[-1]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty(B, H, N, E, device=q.device, dtype=q.dtype)
    r = torch.empty(B, H, N, device=q.device, dtype=torch.float32) if store_r else None
    if N == 0 or B * H == 0:
        return out, r
    cuda = q.is_cuda
    BM = CONFIG["BM"] if cuda else 16
    extra = {"num_warps": CONFIG["num_warps"], "num_stages": CONFIG["num_stages"]} if cuda else {}
    _la_parallel_kernel[(B * H, triton.cdiv(N, BM))](
        q, k, v, out, out if r is None else r, N, H, D, E, float(D) ** -0.5, eps,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BM=BM, DP=next_pow2(D), EP=next_pow2(E), STORE_R=store_r, **extra,
    )  # fmt: skip
    return out, r


def taylor_causal_parallel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Causal Taylor linear attention, quadratic form; q, k (B, H, N, d), v (B, H, N, e).

    No autograd (inference; training: `taylor_causal_parallel_train` in
    kernels/linear_attn_parallel_bwd.py). Inputs are assumed checked by `linear_attention`
    (same dtype and device, d <= 32).
    """
    return _forward(q, k, v, eps, False)[0]


def taylor_causal_parallel_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training forward: (out, r) with r_i = 1 / (den_i + eps), float32 (B, H, N), what
    the backward (kernels/linear_attn_parallel_bwd.py) reads besides q, k, v and out."""
    out, r = _forward(q, k, v, eps, True)
    return out, r
