"""Monarch matrix multiply y = P^T blockdiag(w2) P blockdiag(w1) x in one fused Triton kernel.

Weight layout = M2's blockdiag_butterfly_multiply: w1 (k, q, p), w2 (l, s, r) with
k*p = n (input size), l*r = k*q, output size l*s. The square Monarch of size n has
k = q = p = l = s = r = sqrt(n). The fused kernel needs q == l (then k == r), which the square
case satisfies; other shapes run the two-bmm PyTorch path.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, check_float, next_pow2, use_triton
from kernels.reference import blockdiag_matmul_reference, monarch_matmul_bmm

if HAS_TRITON:
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources

    @triton.jit
    def _monarch_fwd_kernel(
        x_ptr, w1_ptr, w2_ptr, y_ptr,
        M, K, P, Q, S, sxm, sym,
        BM: tl.constexpr, BL: tl.constexpr, KC: tl.constexpr, PP: tl.constexpr, SP: tl.constexpr,
    ):  # fmt: skip
        # program (l-block, row-block): rows rm of y, output blocks ll in rl (q == l, k == r);
        # 1-D grid, l-blocks fastest so the programs reading one x tile run together
        pid = tl.program_id(0)
        l_blocks = tl.cdiv(Q, BL)
        pid_l = pid % l_blocks
        pid_m = pid // l_blocks
        rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
        rl = pid_l * BL + tl.arange(0, BL)
        rp = tl.arange(0, PP)
        rs = tl.arange(0, SP)
        m_ok = rm < M
        l_ok = rl < Q
        p_ok = rp < P
        s_ok = rs < S
        acc = tl.zeros((BL, BM, SP), dtype=tl.float32)
        for k0 in range(0, K, KC):
            rk = k0 + tl.arange(0, KC)
            k_ok = rk < K
            # x[m, kk*P + p] as (KC, BM, PP)
            xt = tl.load(
                x_ptr + rm[None, :, None] * sxm + rk[:, None, None] * P + rp[None, None, :],
                mask=k_ok[:, None, None] & m_ok[None, :, None] & p_ok[None, None, :],
                other=0.0,
            )
            # w1[kk, ll, p] as (KC, PP, BL)
            w1 = tl.load(
                w1_ptr + rk[:, None, None] * (Q * P) + rl[None, None, :] * P + rp[None, :, None],
                mask=k_ok[:, None, None] & p_ok[None, :, None] & l_ok[None, None, :],
                other=0.0,
            )
            t = tl.dot(xt, w1)  # (KC, BM, BL): out1[m, kk, ll]
            t = tl.permute(t, (2, 1, 0)).to(xt.dtype)  # the Monarch permutation, on chip
            # w2[ll, ss, kk] as (BL, KC, SP)
            w2 = tl.load(
                w2_ptr + rl[:, None, None] * (S * K) + rs[None, None, :] * K + rk[None, :, None],
                mask=l_ok[:, None, None] & k_ok[None, :, None] & s_ok[None, None, :],
                other=0.0,
            )
            acc += tl.dot(t, w2)  # (BL, BM, SP)
        # y[m, ss*l + ll]
        tl.store(
            y_ptr + rm[None, :, None] * sym + rs[None, None, :] * Q + rl[:, None, None],
            acc.to(y_ptr.dtype.element_ty),
            mask=l_ok[:, None, None] & m_ok[None, :, None] & s_ok[None, None, :],
        )


def fused_supported(n: int, w1: torch.Tensor, w2: torch.Tensor) -> bool:
    """Shapes the fused kernel handles: q == l (so k == r), blocks of at most 128."""
    k, q, p = w1.shape
    l, s, r = w2.shape  # noqa: E741
    return q == l and k == r and p <= 128 and s <= 128


# Launch settings on CUDA. Empty: pick by size (the fastest of benchmarks/kernels.py's sweep on
# an H100: BM=64 rows for n <= 1024, 32 for n <= 4096, else 16); the benchmark sets them here.
CONFIG: dict[str, int] = {}


def _config(n: int) -> dict[str, int]:
    if CONFIG:
        return CONFIG
    bm = 64 if n <= 1024 else 32 if n <= 4096 else 16
    return {"BM": bm, "BL": 16, "KC": 16, "num_warps": 8, "num_stages": 2}


def _monarch_forward_triton(x, w1, w2):
    *batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape  # noqa: E741
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    w1 = w1.to(x.dtype).contiguous()
    w2 = w2.to(x.dtype).contiguous()
    y = torch.empty(M, l * s, device=x.device, dtype=x.dtype)
    c = _config(n)
    BL = min(c["BL"], next_pow2(l))
    KC = min(c["KC"], next_pow2(k))
    BM, num_stages = c["BM"], c["num_stages"]
    while True:
        grid = (triton.cdiv(l, BL) * triton.cdiv(M, BM),)
        try:
            _monarch_fwd_kernel[grid](
                x2, w1, w2, y, M, k, p, q, s, x2.stride(0), y.stride(0),
                BM=BM, BL=BL, KC=KC, PP=next_pow2(p), SP=next_pow2(s),
                num_warps=c["num_warps"], num_stages=num_stages,
            )  # fmt: skip
            break
        except OutOfResources:
            # a wide dtype or block shape overflowed shared memory: smaller tiles, fewer stages
            if num_stages > 1:
                num_stages = 1
            elif BM > 16:
                BM //= 2
            elif BL > 1:
                BL //= 2
            else:
                raise
    return y.reshape(*batch, l * s)


class _Monarch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, w2):
        ctx.save_for_backward(x, w1, w2)
        return _monarch_forward_triton(x, w1, w2)

    @staticmethod
    def backward(ctx, grad_out):
        # Backward as M2 does it: bmm-based products (through autograd of the bmm path).
        x, w1, w2 = ctx.saved_tensors
        with torch.enable_grad():
            ins = [t.detach().requires_grad_(True) for t in (x, w1, w2)]
            out = monarch_matmul_bmm(*ins)
            grads = torch.autograd.grad(out, ins, grad_out)
        return tuple(g if t.requires_grad else None for g, t in zip(grads, (x, w1, w2)))


def monarch_matmul(
    x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, backend: str = "auto"
) -> torch.Tensor:
    """Monarch product y = P^T blockdiag(w2) P blockdiag(w1) x over the last dim of x.

    x: (..., n); w1: (k, q, p) with k*p = n; w2: (l, s, r) with l*r = k*q; returns (..., l*s).
    Same convention as M2's blockdiag_butterfly_multiply, so its checkpoints load unchanged.
    The weights are cast to x's dtype (as a half model's layers hold them); y is in x's dtype.
    """
    check_float("x", x)
    if w1.dim() != 3 or w2.dim() != 3:
        raise ValueError(
            f"w1 and w2 must be 3-D (nblocks, block_out, block_in), got {tuple(w1.shape)}, "
            f"{tuple(w2.shape)}"
        )
    n = x.shape[-1]
    k, q, p = w1.shape
    l, s, r = w2.shape  # noqa: E741
    if k * p != n:
        raise ValueError(f"w1 {tuple(w1.shape)} needs x's last dim = k*p = {k * p}, got {n}")
    if l * r != k * q:
        raise ValueError(
            f"w2 {tuple(w2.shape)} needs l*r = k*q = {k * q} (w1's output size), got {l * r}"
        )
    if x.dtype != torch.float64 and fused_supported(n, w1, w2) and use_triton(backend, x, w1, w2):
        return _Monarch.apply(x, w1, w2)
    return monarch_matmul_bmm(x, w1, w2)


def blockdiag_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Block-diagonal product (M2-BERT's BlockdiagLinear): x (..., n), w (nblocks, q, n/nblocks).

    One batched matmul, no permutation: runs through torch (cuBLAS on GPU) on every device.
    w is cast to x's dtype; the result is in x's dtype.
    """
    check_float("x", x)
    if w.dim() != 3 or w.shape[0] * w.shape[2] != x.shape[-1]:
        raise ValueError(
            f"w must be (nblocks, q, p) with nblocks*p = {x.shape[-1]}, got {tuple(w.shape)}"
        )
    *batch, n = x.shape
    nb, q, p = w.shape
    if x.dtype == torch.float64 or not x.is_cuda:
        return blockdiag_matmul_reference(x, w)
    xr = x.reshape(-1, nb, p).transpose(0, 1)
    out = torch.bmm(xr, w.to(x.dtype).transpose(-1, -2))  # (nb, m, q)
    return out.transpose(0, 1).reshape(*batch, nb * q)
