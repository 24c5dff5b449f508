"""Long convolution by FFT (Hyena / M2 sequence mixer) with the skip term and gates fused.

Two Triton paths:
- "monarch" (experimental, opt-in; FlashFFTConv-style, 256 <= L <= 8192): one kernel per row computes the whole
  convolution on chip. The FFT of size N = 2L = N1*N2 is written as matrix products
  (four-step / Monarch decomposition: DFT_N1 on the left, twiddles, DFT_N2 on the right) on
  tensor cores, the spectrum multiply, the inverse the same way, then skip term, gate and
  cast; u is read once and the output written once. The zero half of the padded input and the
  discarded half of the output are never computed. Products run in float32 storage with TF32
  tensor-core inputs by default (fft_conv(..., precision="ieee") for full fp32 dots).
- "cufft" (any L, the default): the transforms run through cuFFT (torch.fft). A Triton
  prologue reads u (times the pre-gate) once and writes the zero-padded signal v (R, 2L),
  R = B * H; one c2c FFT of L points over the signal read as (even, odd) sample pairs
  (`kernels.half_fft.pair_spectra`, a complex view: no r2c, whose half-precision plans add a
  post-processing pass); `kernels.half_fft.pack_spectrum` unpacks the real spectrum,
  multiplies by the filter spectrum rfft(k, 2L) / (2L) (complex64; shared (H, Lk) filters or per-batch (B, H, Lk) ones) and
  packs the product into a half-length spectrum whose c2c inverse of L points is the real
  2L-point inverse as (even, odd) sample pairs (no c2r: PyTorch copies a c2r input first);
  a Triton epilogue reads the first L real samples, adds the skip term, applies the gate
  and casts to u's dtype, in one pass.

`fft_precision` picks the signals' precision (`kernels.half_fft.fft_signal_dtype`, as in
`kernels.m2_mixer.gated_long_conv`): "auto" runs float16 signals and complex32 spectra for
float16/bfloat16 u on CUDA at a power-of-two L (cuFFT's half transforms need one), else
float32; fft_conv's default is "float32" (the range below is the caller's to know). The
pipeline is memory-bound, and the half one moves about half the bytes: the
prologue writes float16, both transforms and the packing pass read and write complex32
(the filter spectrum stays complex64, the packing pass computes in float32), the epilogue
reads float16; the skip weight D rides in the filter spectrum as D / (2L) (a delta at lag
0), so the epilogue reads neither u nor the pre-gate. The signal is scaled by
`half_fft_scale(L)` = 2^-floor(log2(2L) / 2) ~ 1/sqrt(2L) (a power of two: exact), undone
in the packing pass. Range, for fft_conv's input v = u * pre_gate: the scaled transform is
bounded by L * half_fft_scale(L) (sqrt(L / 2) or sqrt(L)) times a row's mean |v| over the
sequence, so it stays below float16's 65504 while that mean is below 1023 at L = 4k and
8k, 511 at 16k and 32k (M2's x1 * v is O(1)-O(10)); the inverse's output is the un-gated
y = conv(v, k) + D * v itself over all 2L samples of the circular convolution (|y| <
65504), and its input has about rms(y) / sqrt(L), a normal float16 number down to
rms(y) = 0.011 at 32k (below, subnormals: absolute error ~1e-5 in y); the scaled signal
itself is subnormal where |v| < 2^-14 / half_fft_scale(L) (0.0156 at 32k), so inputs of
amplitude ~1e-3 keep only ~1% relative precision. float16 rounding of
the signal and spectra gives relative errors ~1e-3 (bfloat16 output rounding: ~2e-3).
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, check_float, use_triton
from kernels.half_fft import (
    fft_signal_dtype,
    half_fft_scale,
    pack_spectrum,
    packed_inverse,
    pair_spectra,
)
from kernels.reference import fft_conv_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _fft_prologue_kernel(
        u_ptr, pg_ptr, x_ptr, L, scale,
        HAS_PRE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        # one row of the zero-padded signal v * scale, t < 2L (float32 with scale = 1, or
        # float16 scaled by a power of two: exact); u and the pre-gate are read once
        row = tl.program_id(0).to(tl.int64)
        pid = tl.program_id(1)
        r = pid * BLOCK + tl.arange(0, BLOCK)
        inside = r < L
        u = tl.load(u_ptr + row * L + r, mask=inside, other=0.0).to(tl.float32)
        if HAS_PRE:
            u = u * tl.load(pg_ptr + row * L + r, mask=inside, other=0.0).to(tl.float32)
        x = (u * scale).to(x_ptr.dtype.element_ty)
        tl.store(x_ptr + row * 2 * L + r, x, mask=r < 2 * L)

    @triton.jit
    def _fft_epilogue_kernel(
        y_ptr, u_ptr, pg_ptr, d_ptr, g_ptr, o_ptr, L, H,
        HAS_PRE: tl.constexpr, HAS_D: tl.constexpr, HAS_GATE: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        # y: the real inverse (R, 2L), float32 or float16, of which the first L samples count;
        # HAS_D: the skip term was not folded into the spectra, add it here
        row = tl.program_id(0).to(tl.int64)
        pid = tl.program_id(1)
        r = pid * BLOCK + tl.arange(0, BLOCK)
        ok = r < L
        y = tl.load(y_ptr + row * 2 * L + r, mask=ok, other=0.0).to(tl.float32)
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


def _fft_conv_triton(u, k, d_bias, gate, pre_gate, half):
    """The cuFFT path: prologue, c2c FFT of the signals' sample pairs, pack_spectrum, c2c
    inverse of L points, epilogue."""
    B, H, L = u.shape
    R, n = B * H, 2 * L
    u = u.contiguous()
    gate = gate.contiguous() if gate is not None else None
    pre_gate = pre_gate.contiguous() if pre_gate is not None else None
    BLOCK = 1024 if u.is_cuda else 64
    scale = half_fft_scale(L) if half else 1.0  # float16 signals are scaled (module doc)
    x = torch.empty(R, n, device=u.device, dtype=torch.float16 if half else torch.float32)
    dummy = u
    _fft_prologue_kernel[(R, triton.cdiv(n, BLOCK))](
        u, pre_gate if pre_gate is not None else dummy, x, L, scale,
        HAS_PRE=pre_gate is not None, BLOCK=BLOCK,
    )  # fmt: skip
    # filter spectra, 1/(2L) applied in the packing pass; tiny next to u's (no batch)
    k_f = torch.fft.rfft(k.float(), n=n)
    per_batch = k.dim() == 3 and k.shape[0] == B and B > 1
    # rows (b, h): per-batch filters (G, R, W) = (B, 1, H), filter row (b, h); shared ones
    # (1, B, H), filter row h
    G, Rep = (B, 1) if per_batch else (1, B)
    f = pair_spectra(x).view(G, Rep, H, L)  # complex32 (half) or complex64
    d = d_bias.reshape(-1).float().contiguous() if d_bias is not None else None
    fold = half and d is not None  # half: the skip term rides in the spectra
    zf = pack_spectrum(
        f, k_f.reshape(G, H, L + 1), d if fold else None, gain=1.0 / scale, normalized=False
    )
    y = packed_inverse(zf.view(R, L))  # (R, 2L) real, the first L samples are the output
    out = torch.empty(B, H, L, device=u.device, dtype=u.dtype)
    _fft_epilogue_kernel[(R, triton.cdiv(L, BLOCK))](
        y, u, pre_gate if pre_gate is not None else dummy, d if d is not None else y,
        gate if gate is not None else dummy, out, L, H,
        HAS_PRE=pre_gate is not None, HAS_D=d is not None and not fold,
        HAS_GATE=gate is not None, BLOCK=BLOCK,
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
    def forward(ctx, u, k, d_bias, gate, pre_gate, method, precision, half):
        ctx.save_for_backward(u, k, d_bias, gate, pre_gate)
        if _use_monarch(u, k, method):
            return _fft_conv_monarch(u, k, d_bias, gate, pre_gate, precision)
        return _fft_conv_triton(u, k, d_bias, gate, pre_gate, half)

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
        return (*res, None, None, None)


def fft_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    d_bias: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    backend: str = "auto",
    method: str = "auto",
    precision: str = "tf32",
    fft_precision: str = "float32",
) -> torch.Tensor:
    """Long convolution y = (conv(v, k)[:L] + v * D) * gate with v = u * pre_gate, FFT size 2L.

    u: (B, H, L); k: (H, Lk) or (B, H, Lk), Lk <= 2L (Lk <= L: causal filter; Lk = 2L: M2's
    bidirectional layout, pad(k_fwd, (0, L)) + pad(k_rev.flip(-1), (L, 0))); d_bias: (H,)
    or (1, H, 1); gate, pre_gate: (B, H, L). Returns u's dtype. Matches M2's
    fftconv_ref(u, k, D, dropout_mask=None, gelu=False) when no gates are given.
    method (Triton path): "cufft" (torch.fft with fused prologue/epilogue; what "auto" picks)
    or "monarch" (experimental fused on-chip FFT, 256 <= L <= 8192: correct but slower than
    "cufft" on an H100 so far). precision: dot inputs of the monarch kernel, "tf32" (default)
    or "ieee" (full fp32, much slower).
    fft_precision: "auto" | "float32" | "float16", the cufft path's FFT signals
    (`kernels.half_fft.fft_signal_dtype`, as in `gated_long_conv`): "auto" takes float16 for
    float16/bfloat16 u on CUDA at a power-of-two L when no gradient is being taken (else
    float32); "float16" needs a power-of-two L and CUDA (the Triton path; the monarch kernel
    computes in float32). Default "float32": the float16 pipeline scales v by a fixed power of
    two (module doc), so a row whose mean |v| is above ~511 (32k) overflows and one of small
    amplitude (|v| ~ 1e-3 at 32k) loses relative accuracy to float16's subnormals: opt in
    ("auto" / "float16") for inputs of known O(1) scale, as M2's block does. The backward
    recomputes in float32 regardless.
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
    if method not in ("auto", "monarch", "cufft"):
        raise ValueError(f"method={method!r}: use 'auto', 'monarch' or 'cufft'")
    if precision not in ("tf32", "ieee"):
        raise ValueError(f"precision={precision!r}: use 'tf32' (default) or 'ieee'")
    if u.numel() == 0:  # no rows or no samples: nothing to convolve (FFT libraries refuse size 0)
        fft_signal_dtype(fft_precision, u.dtype, u.device, max(L, 1))  # still check the name
        return u.clone()
    half = fft_signal_dtype(fft_precision, u.dtype, u.device, L) == torch.float16
    if fft_precision == "auto" and torch.is_grad_enabled():
        # training keeps float32 FFTs: the backward recomputes in float32, and a float16
        # forward would make the loss and its gradient disagree by the half rounding
        grads = (t for t in (u, k, d_bias, gate, pre_gate) if t is not None)
        half = half and not any(t.requires_grad for t in grads)
    if u.dtype != torch.float64 and use_triton(backend, u, k):
        if fft_precision == "float16" and _use_monarch(u, k, method):
            raise ValueError("fft_precision='float16' is for method='cufft' (monarch: float32)")
        return _FFTConv.apply(u, k, d_bias, gate, pre_gate, method, precision, half)
    if fft_precision == "float16":
        raise ValueError(
            "fft_precision='float16' needs the Triton path on CUDA (cuFFT's half-precision "
            f"transforms); this call takes the PyTorch reference (u on {u.device.type}, "
            f"{u.dtype}, backend={backend!r}): use fft_precision='auto' or 'float32'"
        )
    return fft_conv_reference(u, k, d_bias, gate, pre_gate)
