"""Exact softmax attention in a local window (BASED pairs it with linear attention)."""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, check_float, check_same_kind, next_pow2, use_triton
from kernels.reference import sliding_window_attention_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _swa_fwd_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, m_ptr,
        N, H, D, window, scale,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr,
        HAS_MASK: tl.constexpr,
    ):  # fmt: skip
        # 1-D grid (no 65535 limit on B*H)
        pid = tl.program_id(0).to(tl.int64)
        m_blocks = tl.cdiv(N, BM)
        pid_m = (pid % m_blocks).to(tl.int32)
        pid_bh = pid // m_blocks
        b = pid_bh // H
        h = pid_bh % H
        rm = pid_m * BM + tl.arange(0, BM)
        rd = tl.arange(0, DP)
        d_ok = rd < D
        m_ok = rm < N
        q = tl.load(
            q_ptr + b * sqb + h * sqh + rm[:, None] * sqn + rd[None, :],
            mask=m_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BM,), dtype=tl.float32)
        acc = tl.zeros((BM, DP), dtype=tl.float32)
        lo = tl.maximum(pid_m * BM - window + 1, 0)
        lo = (lo // BN) * BN
        if CAUSAL:
            hi = tl.minimum(pid_m * BM + BM, N)
        else:
            hi = tl.minimum(pid_m * BM + BM + window - 1, N)
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        qk_scale = scale * 1.4426950408889634  # exp2
        for n0 in range(lo, hi, BN):
            rn = n0 + tl.arange(0, BN)
            n_ok = rn < N
            kt = tl.load(
                kb + rn[:, None] * skn + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
            )
            vt = tl.load(
                vb + rn[:, None] * svn + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
            )
            s = tl.dot(q, tl.trans(kt)).to(tl.float32) * qk_scale
            diff = rm[:, None] - rn[None, :]
            if HAS_MASK:  # padded keys (key_mask == 0) get no weight
                km = tl.load(m_ptr + b * N + rn, mask=n_ok, other=0.0)
                n_ok = n_ok & (km != 0.0)
            ok = n_ok[None, :] & (diff < window)
            if CAUSAL:
                ok = ok & (diff >= 0)
            else:
                ok = ok & (-diff < window)
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(
            o_ptr + b * sob + h * soh + rm[:, None] * son + rd[None, :],
            out.to(o_ptr.dtype.element_ty),
            mask=m_ok[:, None] & d_ok[None, :],
        )


def _swa_forward_triton(q, k, v, window, causal, scale, key_mask=None):
    B, H, N, D = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    DP = next_pow2(D)
    BM, BN = (64, 64) if q.is_cuda else (16, 16)
    grid = (triton.cdiv(N, BM) * B * H,)
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else out
    _swa_fwd_kernel[grid](
        q, k, v, out, mask, N, H, D, int(window), float(scale),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        CAUSAL=causal, BM=BM, BN=BN, DP=DP, HAS_MASK=key_mask is not None,
        num_warps=4, num_stages=2,
    )  # fmt: skip
    return out


class _SlidingWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window, causal, scale, key_mask):
        ctx.save_for_backward(q, k, v, key_mask)
        ctx.cfg = (window, causal, scale)
        return _swa_forward_triton(q, k, v, window, causal, scale, key_mask)

    @staticmethod
    def backward(ctx, grad_out):
        # Gradients through the blocked float32 reference (O(N * window) memory).
        q, k, v, key_mask = ctx.saved_tensors
        window, causal, scale = ctx.cfg
        with torch.enable_grad():
            ins = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = sliding_window_attention_reference(*ins, window, causal, scale, key_mask)
            grads = torch.autograd.grad(out, ins, grad_out)
        return (*grads, None, None, None, None)


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = True,
    scale: float | None = None,
    backend: str = "auto",
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact softmax attention in a local window; q, k, v (B, H, N, D), returns (B, H, N, D).

    Query i sees keys i-window < j <= i (causal) or |i-j| < window (causal=False).
    scale defaults to 1/sqrt(D). Triton on CUDA (flash-style online softmax over only the key
    blocks the window touches), the blocked PyTorch reference on CPU. key_mask: (B, N), keys
    where it is 0 (padding) get no weight; a query with no unmasked key in its window gets 0.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k, v must have one shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    check_same_kind(("q", q), ("k", k), ("v", v))
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if key_mask is not None and tuple(key_mask.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"key_mask must be (B, N) = {(q.shape[0], q.shape[2])}, got {tuple(key_mask.shape)}"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if q.dtype != torch.float64 and use_triton(backend, q, k, v):
        return _SlidingWindow.apply(q, k, v, int(window), bool(causal), scale, key_mask)
    return sliding_window_attention_reference(q, k, v, int(window), causal, scale, key_mask)
