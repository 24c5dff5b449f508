"""Long convolution by FFT (Hyena / M2 sequence mixer) with the skip term and gates fused.

Two Triton paths:
- "monarch" (experimental, opt-in; FlashFFTConv-style, 256 <= L <= 8192): one kernel per row computes the whole
  convolution on chip. The FFT of size N = 2L = N1*N2 is written as matrix products
  (four-step / Monarch decomposition: DFT_N1 on the left, twiddles, DFT_N2 on the right) on
  tensor cores, the spectrum multiply, the inverse the same way, then skip term, gate and
  cast; u is read once and the output written once. The zero half of the padded input and the
  discarded half of the output are never computed. Products run in float32 storage with TF32
  tensor-core inputs by default (fft_conv(..., precision="ieee") for full fp32 dots).
- "cufft" (any L, the default): the transforms run through cuFFT (torch.fft, float32); a Triton prologue
  reads u (and the pre-gate) once and writes the zero-padded float32 signal; a Triton
  epilogue adds the skip term, applies the gate and casts back, in one pass.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, check_float, use_triton
from kernels.reference import fft_conv_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _fft_prologue_kernel(
        u_ptr, pg_ptr, x_ptr, L,
        HAS_PRE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0).to(tl.int64)
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
        row = tl.program_id(0).to(tl.int64)
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

    @triton.jit
    def _fftconv_monarch_kernel(
        u_ptr, pg_ptr, g_ptr, d_ptr, kr_ptr, ki_ptr,
        f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, tr_ptr, ti_ptr, o_ptr,
        L, H,
        N1: tl.constexpr, N2: tl.constexpr, FC: tl.constexpr, K_PER_ROW: tl.constexpr,
        HAS_PRE: tl.constexpr, HAS_D: tl.constexpr, HAS_GATE: tl.constexpr,
        PREC: tl.constexpr,
    ):  # fmt: skip
        # One row (b, h). Time index n = n1*N2 + n2 (n1 < N1/2 holds the signal, the rest is the
        # zero padding); frequency f = f1 + N1*f2. Forward: B = F1[:, :N1/2] A, B *= T,
        # C = B F2; Y = C * K; inverse: D = Y conj(F2), D *= conj(T), E = Re(conj(F1)[:N1/2] D).
        row = tl.program_id(0).to(tl.int64)
        h = row % H
        kbase = (row if K_PER_ROW else h) * (N1 * N2)
        H1: tl.constexpr = N1 // 2
        r1 = tl.arange(0, H1)
        r2 = tl.arange(0, N2)
        rc = tl.arange(0, FC)
        t = r1[:, None] * N2 + r2[None, :]
        inside = t < L
        a = tl.load(u_ptr + row * L + t, mask=inside, other=0.0).to(tl.float32)
        if HAS_PRE:
            a = a * tl.load(pg_ptr + row * L + t, mask=inside, other=0.0).to(tl.float32)
        f2r = tl.load(f2r_ptr + r2[:, None] * N2 + r2[None, :])
        f2i = tl.load(f2i_ptr + r2[:, None] * N2 + r2[None, :])
        acc = tl.zeros((H1, N2), dtype=tl.float32)
        for c in range(0, N1, FC):
            f1 = c + rc
            w1r = tl.load(f1r_ptr + f1[:, None] * N1 + r1[None, :])  # F1[f1, n1], n1 < N1/2
            w1i = tl.load(f1i_ptr + f1[:, None] * N1 + r1[None, :])
            br = tl.dot(w1r, a, input_precision=PREC)
            bi = tl.dot(w1i, a, input_precision=PREC)
            tw = f1[:, None] * N2 + r2[None, :]
            tr = tl.load(tr_ptr + tw)
            ti = tl.load(ti_ptr + tw)
            xr = br * tr - bi * ti
            xi = br * ti + bi * tr
            cr = tl.dot(xr, f2r, input_precision=PREC) - tl.dot(xi, f2i, input_precision=PREC)
            ci = tl.dot(xr, f2i, input_precision=PREC) + tl.dot(xi, f2r, input_precision=PREC)
            kr = tl.load(kr_ptr + kbase + tw)
            ki = tl.load(ki_ptr + kbase + tw)
            yr = cr * kr - ci * ki
            yi = cr * ki + ci * kr
            dr = tl.dot(yr, f2r, input_precision=PREC) + tl.dot(yi, f2i, input_precision=PREC)
            di = tl.dot(yi, f2r, input_precision=PREC) - tl.dot(yr, f2i, input_precision=PREC)
            er = dr * tr + di * ti
            ei = di * tr - dr * ti
            # F1 is symmetric: conj(F1)[m1, f1] for m1 < N1/2 is the transpose of (w1r, -w1i)
            acc += tl.dot(tl.trans(w1r), er, input_precision=PREC)
            acc += tl.dot(tl.trans(w1i), ei, input_precision=PREC)
        if HAS_D:
            acc += a * tl.load(d_ptr + h).to(tl.float32)
        if HAS_GATE:
            acc *= tl.load(g_ptr + row * L + t, mask=inside, other=0.0).to(tl.float32)
        tl.store(o_ptr + row * L + t, acc.to(o_ptr.dtype.element_ty), mask=inside)


_DFT_CACHE: dict = {}


def monarch_factors(L: int) -> tuple[int, int] | None:
    """(N1, N2) with N1*N2 = 2*next_pow2(L) for the fused kernel, or None outside its range."""
    Lp = 1
    while Lp < L:
        Lp *= 2
    n = 2 * Lp
    if not 512 <= n <= 16384:
        return None
    n2 = 16 if n <= 1024 else 32 if n <= 4096 else 64
    return n // n2, n2


def _dft_tables(n1: int, n2: int, device) -> tuple[torch.Tensor, ...]:
    key = (n1, n2, str(device))
    if key not in _DFT_CACHE:
        n = n1 * n2
        j1 = torch.arange(n1, dtype=torch.float64)
        j2 = torch.arange(n2, dtype=torch.float64)
        f1 = torch.exp(-2j * torch.pi * torch.outer(j1, j1) / n1)
        f2 = torch.exp(-2j * torch.pi * torch.outer(j2, j2) / n2)
        tw = torch.exp(-2j * torch.pi * torch.outer(j1, j2) / n)
        _DFT_CACHE[key] = tuple(
            part.to(device=device, dtype=torch.float32).contiguous()
            for z in (f1, f2, tw)
            for part in (z.real, z.imag)
        )
    return _DFT_CACHE[key]


# Launch settings of the fused kernel on CUDA; benchmarks/kernels.py sweeps them.
MONARCH_FFT_CONFIG: dict[str, int] = {"FC": 16, "num_warps": 4, "num_stages": 2}


def _fft_conv_monarch(u, k, d_bias, gate, pre_gate, precision="tf32"):
    B, H, L = u.shape
    n1, n2 = monarch_factors(L)
    n = n1 * n2
    tabs = _dft_tables(n1, n2, u.device)
    # spectrum of the filter in the (f1, f2) layout, 1/N folded in
    kf = torch.fft.fft(k.to(torch.float64), n=n) / n
    kf = kf.reshape(*k.shape[:-1], n2, n1).transpose(-1, -2)
    kr = kf.real.to(torch.float32).contiguous()
    ki = kf.imag.to(torch.float32).contiguous()
    per_row = k.dim() == 3 and k.shape[0] == B and B > 1
    u = u.contiguous()
    gate = gate.contiguous() if gate is not None else None
    pre_gate = pre_gate.contiguous() if pre_gate is not None else None
    d = d_bias.reshape(-1).float().contiguous() if d_bias is not None else None
    out = torch.empty_like(u)
    cfg = MONARCH_FFT_CONFIG
    fc = min(cfg["FC"], n1) if u.is_cuda else min(16, n1)
    extra = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]} if u.is_cuda else {}
    _fftconv_monarch_kernel[(B * H,)](
        u, pre_gate if pre_gate is not None else u, gate if gate is not None else u,
        d if d is not None else kr, kr, ki, *tabs, out, L, H,
        N1=n1, N2=n2, FC=fc, K_PER_ROW=per_row, HAS_PRE=pre_gate is not None,
        HAS_D=d is not None, HAS_GATE=gate is not None, PREC=precision, **extra,
    )  # fmt: skip
    return out


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


def _use_monarch(u: torch.Tensor, k: torch.Tensor, method: str) -> bool:
    L = u.shape[-1]
    fits = monarch_factors(L) is not None and (L & (L - 1) == 0 or k.shape[-1] <= L)
    if method == "monarch" and not fits:
        raise ValueError(
            f"method='monarch' needs 256 <= L <= 8192 (L={L}) and, for L not a power of two, "
            f"a causal filter (len(k) <= L, got {k.shape[-1]}); use method='auto'"
        )
    # the fused kernel is slower than the cuFFT path on an H100 (see docs/kernels.md): opt-in only
    return method == "monarch" and fits


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, d_bias, gate, pre_gate, method, precision):
        ctx.save_for_backward(u, k, d_bias, gate, pre_gate)
        if _use_monarch(u, k, method):
            return _fft_conv_monarch(u, k, d_bias, gate, pre_gate, precision)
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
        res = tuple(next(grads) if t is not None and t.requires_grad else None for t in ins)
        return (*res, None, None)


def fft_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    d_bias: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    backend: str = "auto",
    method: str = "auto",
    precision: str = "tf32",
) -> torch.Tensor:
    """Long convolution y = (conv(v, k)[:L] + v * D) * gate with v = u * pre_gate, FFT size 2L.

    u: (B, H, L); k: (H, Lk) or (B, H, Lk), Lk <= 2L (Lk <= L: causal filter; Lk = 2L: M2's
    bidirectional layout, pad(k_fwd, (0, L)) + pad(k_rev.flip(-1), (L, 0))); d_bias: (H,)
    or (1, H, 1); gate, pre_gate: (B, H, L). Computes in float32, returns u's dtype. Matches
    M2's fftconv_ref(u, k, D, dropout_mask=None, gelu=False) when no gates are given.
    method (Triton path): "cufft" (torch.fft with fused prologue/epilogue; what "auto" picks)
    or "monarch" (experimental fused on-chip FFT, 256 <= L <= 8192: correct but slower than
    "cufft" on an H100 so far). precision: dot inputs of the monarch kernel, "tf32" (default)
    or "ieee" (full fp32, much slower).
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
        if method not in ("auto", "monarch", "cufft"):
            raise ValueError(f"method={method!r}: use 'auto', 'monarch' or 'cufft'")
        return _FFTConv.apply(u, k, d_bias, gate, pre_gate, method, precision)
    return fft_conv_reference(u, k, d_bias, gate, pre_gate)
