"""M2-BERT's GLU MLP for inference: block-diagonal matmuls without layout copies, fused glue.

The MLP of one M2 layer is LayerNorm(h + wo(gelu(a) * b) + bias), (a | b) = gated(h), with
`gated` and `wo` block-diagonal (Monarch factors). Unfused, each block-diagonal product is
a batched matmul between two transposing copies, and the glue is five elementwise passes.
Here:

- `blockdiag_mm`: one matmul per block, each reading its column slice of x in place and
  writing its column slice of the output in place (cuBLAS takes the row stride), so no
  permutation is ever materialised;
- `glu_gelu` (Triton): gelu(a) * b in one pass;
- `bias_residual_layer_norm` (Triton): LayerNorm(x + bias + residual) in one pass per row.

Each has a plain PyTorch reference here; the Triton kernels are checked against them in the
interpreter (tests/test_m2_fused.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.common import HAS_TRITON, check_float, next_pow2, use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _glu_gelu_kernel(x_ptr, o_ptr, M, N, BM: tl.constexpr, BN: tl.constexpr):
        rm = (tl.program_id(0) * BM + tl.arange(0, BM)).to(tl.int64)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        m = (rm < M)[:, None] & (rn < N)[None, :]
        row = x_ptr + rm[:, None] * (2 * N) + rn[None, :]
        a = tl.load(row, mask=m, other=0.0).to(tl.float32)
        b = tl.load(row + N, mask=m, other=0.0).to(tl.float32)
        g = 0.5 * a * (1.0 + tl.erf(a * 0.7071067811865476))
        tl.store(o_ptr + rm[:, None] * N + rn[None, :], (g * b).to(o_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bias_residual_ln_kernel(
        x_ptr, bias_ptr, r_ptr, w_ptr, b_ptr, o_ptr, M, N, eps,
        HAS_BIAS: tl.constexpr, BN: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
        rn = tl.arange(0, BN)
        m = rn < N
        v = tl.load(x_ptr + row * N + rn, mask=m, other=0.0).to(tl.float32)
        v += tl.load(r_ptr + row * N + rn, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(bias_ptr + rn, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(v, axis=0) / N
        d = tl.where(m, v - mean, 0.0)
        var = tl.sum(d * d, axis=0) / N
        y = d / tl.sqrt(var + eps)
        y = y * tl.load(w_ptr + rn, mask=m, other=0.0).to(tl.float32)
        y += tl.load(b_ptr + rn, mask=m, other=0.0).to(tl.float32)
        tl.store(o_ptr + row * N + rn, y.to(o_ptr.dtype.element_ty), mask=m)


def blockdiag_mm(x: torch.Tensor, blocks_t: list[torch.Tensor]) -> torch.Tensor:
    """x (M, nb*p) times blockdiag(W_0 .. W_nb-1): (M, nb*q); blocks_t[i] = W_i^T (p, q).

    One matmul per block straight between column slices (no transposed copies). x and the
    blocks must share a dtype; the result has it.
    """
    check_float("x", x)
    nb = len(blocks_t)
    p, q = blocks_t[0].shape
    if x.dim() != 2 or x.shape[1] != nb * p:
        raise ValueError(
            f"x must be (M, {nb * p}) for {nb} blocks of {p} inputs, got {tuple(x.shape)}"
        )
    out = torch.empty(x.shape[0], nb * q, device=x.device, dtype=x.dtype)
    for i, w in enumerate(blocks_t):
        torch.mm(x[:, i * p : (i + 1) * p], w, out=out[:, i * q : (i + 1) * q])
    return out


def glu_gelu(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """gelu(x[:, :N]) * x[:, N:] for x (M, 2N), exact (erf) GELU, computed in float32."""
    check_float("x", x)
    if x.dim() != 2 or x.shape[1] % 2:
        raise ValueError(f"x must be (M, 2N), got {tuple(x.shape)}")
    if not use_triton(backend, x):
        return glu_gelu_reference(x)
    x = x.contiguous()
    M, N = x.shape[0], x.shape[1] // 2
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    BM, BN = (32, 128) if x.is_cuda else (8, 16)
    _glu_gelu_kernel[(triton.cdiv(M, BM), triton.cdiv(N, BN))](x, out, M, N, BM=BM, BN=BN)
    return out


def glu_gelu_reference(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[1] // 2
    return (F.gelu(x[:, :n].float()) * x[:, n:].float()).to(x.dtype)


def bias_residual_layer_norm(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """LayerNorm(x + bias + residual) over the last dim of (M, N) inputs, float32 inside;
    returns `out_dtype` (default: residual's dtype)."""
    check_float("x", x)
    if x.dim() != 2 or residual.shape != x.shape:
        raise ValueError(
            f"x and residual must be (M, N) alike: {tuple(x.shape)}, {tuple(residual.shape)}"
        )
    out_dtype = out_dtype or residual.dtype
    if not use_triton(backend, x, residual):
        v = x.float() + residual.float() + (0 if bias is None else bias.float())
        return F.layer_norm(v, (x.shape[1],), weight.float(), ln_bias.float(), eps).to(out_dtype)
    x, residual = x.contiguous(), residual.contiguous()
    M, N = x.shape
    out = torch.empty(M, N, device=x.device, dtype=out_dtype)
    _bias_residual_ln_kernel[(M,)](
        x, bias if bias is not None else weight, residual, weight, ln_bias, out, M, N, eps,
        HAS_BIAS=bias is not None, BN=next_pow2(N),
    )  # fmt: skip
    return out
