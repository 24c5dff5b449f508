"""Long convolution by FFT (Hyena / M2 sequence mixer) with the skip term and gates fused.

The transforms run through cuFFT (torch.fft, float32); two Triton kernels fuse everything
around them: the prologue reads u (and the pre-gate) once and writes the zero-padded float32
signal; the epilogue reads the first L outputs, adds the skip term u*D, applies the gate and
casts back, in one pass. The spectrum multiply runs in place.
"""

from __future__ import annotations

import torch

from kernels._common import HAS_TRITON, check_float, use_triton
from kernels.reference import fft_conv_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _fft_prologue_kernel(
        u_ptr, pg_ptr, x_ptr, L,
        HAS_PRE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        pid = tl.program_id(1)
        r = pid * BLOCK + tl.arange(0, BLOCK)
        inside = r < L
        u = tl.load(u_ptr + row * L + r, mask=inside, other=0.0).to(tl.float32)
        if HAS_PRE:
            u = u * tl.load(pg_ptr + row * L + r, mask=inside, other=0.0).to(tl.float32)
        tl.store(x_ptr + row * 2 * L + r, u, mask=r < 2 * L)

    @triton.jit
    def _fft_epilogue_kernel(
        y_ptr, u_ptr, pg_ptr, d_ptr, g_ptr, o_ptr, L, H,
        HAS_PRE: tl.constexpr, HAS_D: tl.constexpr, HAS_GATE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        pid = tl.program_id(1)
        r = pid * BLOCK + tl.arange(0, BLOCK)
        ok = r < L
        y = tl.load(y_ptr + row * 2 * L + r, mask=ok, other=0.0)
        if HAS_D:
            u = tl.load(u_ptr + row * L + r, mask=ok, other=0.0).to(tl.float32)
            if HAS_PRE:
                u = u * tl.load(pg_ptr + row * L + r, mask=ok, other=0.0).to(tl.float32)
            y += u * tl.load(d_ptr + row % H).to(tl.float32)
        if HAS_GATE:
            y *= tl.load(g_ptr + row * L + r, mask=ok, other=0.0).to(tl.float32)
        tl.store(o_ptr + row * L + r, y.to(o_ptr.dtype.element_ty), mask=ok)


def _fft_conv_triton(u, k, d_bias, gate, pre_gate):
    B, H, L = u.shape
    R = B * H
    u = u.contiguous()
    gate = gate.contiguous() if gate is not None else None
    pre_gate = pre_gate.contiguous() if pre_gate is not None else None
    BLOCK = 1024 if u.is_cuda else 64
    x = torch.empty(R, 2 * L, device=u.device, dtype=torch.float32)
    dummy = u
    _fft_prologue_kernel[(R, triton.cdiv(2 * L, BLOCK))](
        u, pre_gate if pre_gate is not None else dummy, x, L,
        HAS_PRE=pre_gate is not None, BLOCK=BLOCK,
    )  # fmt: skip
    n = 2 * L
    k_f = torch.fft.rfft(k.float(), n=n)  # (H, L+1) or (B, H, L+1); tiny next to u
    u_f = torch.fft.rfft(x, n=n).view(B, H, L + 1)
    u_f.mul_(k_f)
    y = torch.fft.irfft(u_f.view(R, L + 1), n=n)
    out = torch.empty(B, H, L, device=u.device, dtype=u.dtype)
    d = None
    if d_bias is not None:
        d = d_bias.reshape(-1).float().contiguous()
    _fft_epilogue_kernel[(R, triton.cdiv(L, BLOCK))](
        y, u, pre_gate if pre_gate is not None else dummy, d if d is not None else x,
        gate if gate is not None else dummy, out, L, H,
        HAS_PRE=pre_gate is not None, HAS_D=d is not None, HAS_GATE=gate is not None,
        BLOCK=BLOCK,
    )  # fmt: skip
    return out


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, d_bias, gate, pre_gate):
        ctx.save_for_backward(u, k, d_bias, gate, pre_gate)
        return _fft_conv_triton(u, k, d_bias, gate, pre_gate)

    @staticmethod
    def backward(ctx, grad_out):
        # Gradients through the float32 FFT reference (itself FFT-based: O(L log L)).
        saved = ctx.saved_tensors
        with torch.enable_grad():
            ins = [t.detach().requires_grad_(t.requires_grad) if t is not None else None
                   for t in saved]  # fmt: skip
            out = fft_conv_reference(*ins)
            wanted = [t for t in ins if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out) if wanted else [])
        return tuple(next(grads) if t is not None and t.requires_grad else None for t in ins)


def fft_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    d_bias: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Long convolution y = (conv(v, k)[:L] + v * D) * gate with v = u * pre_gate, FFT size 2L.

    u: (B, H, L); k: (H, Lk) or (B, H, Lk), Lk <= 2L (Lk <= L: causal filter; Lk = 2L: M2's
    bidirectional layout, pad(k_fwd, (0, L)) + pad(k_rev.flip(-1), (L, 0))); d_bias: (H,)
    or (1, H, 1); gate, pre_gate: (B, H, L). Computes in float32, returns u's dtype. Matches
    M2's fftconv_ref(u, k, D, dropout_mask=None, gelu=False) when no gates are given.
    """
    check_float("u", u)
    check_float("k", k)
    if u.dim() != 3:
        raise ValueError(f"u must be (B, H, L), got shape {tuple(u.shape)}")
    B, H, L = u.shape
    if k.dim() not in (2, 3) or k.shape[-2] != H or (k.dim() == 3 and k.shape[0] not in (1, B)):
        raise ValueError(f"k must be (H={H}, Lk) or (B, H, Lk), got shape {tuple(k.shape)}")
    if k.shape[-1] > 2 * L:
        raise ValueError(f"k has length {k.shape[-1]} > 2L = {2 * L}; truncate or pad u")
    if d_bias is not None and d_bias.numel() != H:
        raise ValueError(f"d_bias must hold one value per channel (H={H}), got {d_bias.numel()}")
    for name, g in (("gate", gate), ("pre_gate", pre_gate)):
        if g is not None and tuple(g.shape) != tuple(u.shape):
            raise ValueError(f"{name} must have u's shape {tuple(u.shape)}, got {tuple(g.shape)}")
    if u.dtype != torch.float64 and use_triton(backend, u, k):
        return _FFTConv.apply(u, k, d_bias, gate, pre_gate)
    return fft_conv_reference(u, k, d_bias, gate, pre_gate)
