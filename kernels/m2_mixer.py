"""M2-BERT's gated long-convolution block between its two linear layers, fused for inference.

The sequence mixer of one M2 layer, after `z = in_linear(h)` (z: (B, L, 3D)), is

    x1, x2, v = short_conv(z^T)           depthwise, width 3, causal, per channel
    y = (conv(x1 * v, k1) + D1 * x1 * v) * x2  +  conv(h^T, k2) + D2 * h^T

with two long (bidirectional) convolutions done by FFTs of size 2L. Unfused, PyTorch runs
this as a dozen elementwise passes, layout copies (channels-last z to channels-first
signals and back) and two separate FFT pipelines. Here it is three steps:

1. `mixer_in` (Triton): reads z and h once in their natural (B, L, C) layout, applies the
   short convolution and the pre-gate in float32, and writes both FFT inputs, zero-padded
   to 2L, as one float32 (2, B, D, 2L) signal (transposed on chip);
2. one batched c2c FFT of L points over both signals read as (even, odd) sample pairs
   (cuFFT; `kernels.half_fft.pair_spectra`, a complex view); one Triton pass
   (`kernels.half_fft`'s `pack_spectrum`) unpacks the real spectra, multiplies by the cached
   spectra of both filters (`filter_spectra`: they
   depend on the weights only) and packs the product into a half-length complex spectrum
   whose inverse c2c FFT yields the real 2L-point inverse as (even, odd) sample pairs: no
   c2r transform, which in PyTorch copies its whole input first (cuFFT's c2r overwrites it);
3. `mixer_out` (Triton): the skip terms, the gate (recomputed from z: cheaper than storing
   it), the sum of both branches, written straight in (B, L, D) for `out_linear`.

`gated_long_conv_reference` is the same computation in plain PyTorch (float32 or float64);
the Triton path is checked against it in the interpreter (tests) and on the GPU.

Half-precision FFT pipeline (`fft_precision`, default "auto": on for float16/bfloat16 z on
CUDA at a power-of-two L, the case of M2-BERT under autocast). cuFFT computes float16 /
complex32 transforms at power-of-two sizes, so the signals, both transforms and the
packed spectrum move half the bytes: `mixer_in` writes float16 signals, both c2c
transforms run in half precision (`kernels.half_fft.HALF_FFT`, which also holds
`fft_signal_dtype`, `half_fft_scale` and the packing pass, shared with `kernels.fft_conv`),
the packing pass reads and writes complex32 (the filter spectra stay complex64) and
`mixer_out` reads float16. Two changes ride along: the skip terms D1 * x1 * v and D2 * h
are folded into the filter spectra as the constant D / (2L) (a delta at lag 0), so
`mixer_out` reads only the x2 third of z and neither x1, v nor h; and the signals are scaled
by `half_fft_scale(L)` = 2^-floor(log2(2L) / 2) ~ 1 / sqrt(2L) (a power of two: exact),
undone in the packing pass. Range: the scaled transform is bounded by sqrt(L / 2) times a
channel's mean |signal| over the sequence, so it stays below float16's 65504 while that
mean is below 2047 at L = 2k, 1023 at 8k, 512 at 32k (M2's x1 * v and its layer-normed
input are O(1)-O(10)); the inverse's output is the convolution y itself (|y| < 65504) and
its input has rms(y) / sqrt(L), a normal float16 number down to rms(y) = 0.011 at 32k
(below, subnormals: absolute error ~1e-5 in y). The float32 path is unchanged.
"""

from __future__ import annotations

import torch

from kernels import half_fft
from kernels.common import HAS_TRITON, check_float, use_triton
from kernels.half_fft import FFT_PRECISIONS as FFT_PRECISIONS  # re-exported: older imports
from kernels.half_fft import HalfFFT as HalfFFT
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
    def _short_conv(z_row, w_ptr, b_ptr, rl, c, m_l, m_c, C3):
        """Causal width-3 depthwise conv of channels `c` at positions `rl`, float32 (BL, BC)."""
        w0 = tl.load(w_ptr + c * 3 + 0, mask=m_c, other=0.0).to(tl.float32)
        w1 = tl.load(w_ptr + c * 3 + 1, mask=m_c, other=0.0).to(tl.float32)
        w2 = tl.load(w_ptr + c * 3 + 2, mask=m_c, other=0.0).to(tl.float32)
        bias = tl.load(b_ptr + c, mask=m_c, other=0.0).to(tl.float32)
        m = m_l[:, None] & m_c[None, :]
        z0 = tl.load(z_row + rl[:, None] * C3 + c[None, :], mask=m, other=0.0).to(tl.float32)
        m1 = m & (rl[:, None] >= 1)
        z1 = tl.load(z_row + (rl[:, None] - 1) * C3 + c[None, :], mask=m1, other=0.0)
        m2 = m & (rl[:, None] >= 2)
        z2 = tl.load(z_row + (rl[:, None] - 2) * C3 + c[None, :], mask=m2, other=0.0)
        return (
            bias[None, :]
            + w2[None, :] * z0
            + w1[None, :] * z1.to(tl.float32)
            + w0[None, :] * z2.to(tl.float32)
        )

    @triton.jit
    def _tile(L, D, BL: tl.constexpr, BD: tl.constexpr):
        """(b, rl, rd, m_l, m_d, m) of this program's (BL, BD) tile of (L, D)."""
        b = tl.program_id(0).to(tl.int64)
        rl = tl.program_id(1) * BL + tl.arange(0, BL)
        rd = tl.program_id(2) * BD + tl.arange(0, BD)
        m_l = rl < L
        m_d = rd < D
        return b, rl, rd, m_l, m_d, m_l[:, None] & m_d[None, :]

    @triton.jit
    def _mixer_in_kernel(
        z_ptr, h_ptr, w_ptr, b_ptr, x_ptr, NB, L, D, scale,
        HAS_RES: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    ):  # fmt: skip
        b, rl, rd, m_l, m_d, m = _tile(L, D, BL, BD)
        z_row = z_ptr + b * L * 3 * D
        x1 = _short_conv(z_row, w_ptr, b_ptr, rl, rd, m_l, m_d, 3 * D)
        v = _short_conv(z_row, w_ptr, b_ptr, rl, rd + 2 * D, m_l, m_d, 3 * D)
        # (plane, b, d, t) of the signal (float32, or float16 scaled by a power of two:
        # scale = 1 in float32, exact), t < 2L; the second half stays zero
        sty = x_ptr.dtype.element_ty
        sig = x_ptr + (b * D + rd[None, :]) * (2 * L) + rl[:, None]
        tl.store(sig, (x1 * v * scale).to(sty), mask=m)
        tl.store(sig + L, tl.zeros((BL, BD), dtype=sty), mask=m)
        if HAS_RES:
            res = sig + NB * D * 2 * L
            hv = tl.load(h_ptr + (b * L + rl[:, None]) * D + rd[None, :], mask=m, other=0.0)
            tl.store(res, (hv.to(tl.float32) * scale).to(sty), mask=m)
            tl.store(res + L, tl.zeros((BL, BD), dtype=sty), mask=m)

    @triton.jit
    def _mixer_out_kernel(
        y_ptr, z_ptr, h_ptr, w_ptr, b_ptr, d1_ptr, d2_ptr, o_ptr, NB, L, D,
        HAS_RES: tl.constexpr, FOLDED: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    ):  # fmt: skip
        b, rl, rd, m_l, m_d, m = _tile(L, D, BL, BD)
        z_row = z_ptr + b * L * 3 * D
        x2 = _short_conv(z_row, w_ptr, b_ptr, rl, rd + D, m_l, m_d, 3 * D)
        sig = y_ptr + (b * D + rd[None, :]) * (2 * L) + rl[:, None]
        if FOLDED:  # the skip terms came through the spectra: no x1, v or h to read
            out = tl.load(sig, mask=m, other=0.0).to(tl.float32) * x2
            if HAS_RES:
                out += tl.load(sig + NB * D * 2 * L, mask=m, other=0.0).to(tl.float32)
        else:
            x1 = _short_conv(z_row, w_ptr, b_ptr, rl, rd, m_l, m_d, 3 * D)
            v = _short_conv(z_row, w_ptr, b_ptr, rl, rd + 2 * D, m_l, m_d, 3 * D)
            d1 = tl.load(d1_ptr + rd, mask=m_d, other=0.0).to(tl.float32)
            out = (tl.load(sig, mask=m, other=0.0) + d1[None, :] * x1 * v) * x2
            if HAS_RES:
                d2 = tl.load(d2_ptr + rd, mask=m_d, other=0.0).to(tl.float32)
                hv = tl.load(h_ptr + (b * L + rl[:, None]) * D + rd[None, :], mask=m, other=0.0)
                out += tl.load(sig + NB * D * 2 * L, mask=m, other=0.0) + d2[None, :] * hv.to(
                    tl.float32
                )
        dst = o_ptr + (b * L + rl[:, None]) * D + rd[None, :]
        tl.store(dst, out.to(o_ptr.dtype.element_ty), mask=m)


def filter_spectra(filters: list[torch.Tensor], L: int) -> torch.Tensor:
    """The filters' rfft of size 2L, stacked: complex64 (len(filters), D, L + 1), 1/(2L) in.

    filters: (D, Lk) each, Lk <= 2L, in `fft_conv`'s layout (Lk = 2L: M2's bidirectional).
    They depend only on the model's weights: compute once, pass to `gated_long_conv`.
    """
    n = 2 * L
    return torch.stack([torch.fft.rfft(k.float(), n=n) / n for k in filters])


def _check(z: torch.Tensor, h: torch.Tensor, short_w: torch.Tensor) -> tuple[int, int, int]:
    check_float("z", z)
    check_float("h", h)
    if z.dim() != 3 or h.dim() != 3 or z.shape[-1] != 3 * h.shape[-1] or z.shape[:2] != h.shape[:2]:
        raise ValueError(
            f"z must be (B, L, 3D) and h (B, L, D) with the same B, L; got {tuple(z.shape)} "
            f"and {tuple(h.shape)}"
        )
    B, L, D = h.shape
    if short_w.numel() != 3 * D * 3:
        raise ValueError(f"short_w must hold (3D, 3) = ({3 * D}, 3) values, got {short_w.numel()}")
    return B, L, D


def gated_long_conv(
    z: torch.Tensor,
    h: torch.Tensor,
    spectra: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor | None,
    short_w: torch.Tensor,
    short_b: torch.Tensor,
    backend: str = "auto",
    *,
    fft_precision: str = "auto",
) -> torch.Tensor:
    """M2's sequence mixer between in_linear and out_linear: (B, L, D) in z's dtype.

    z: in_linear's output (B, L, 3D); h: the layer input (B, L, D), the residual long
    convolution's signal; spectra: `filter_spectra([k1, k2], L)` (or `[k1]` without the
    residual convolution, then d2=None); d1, d2: the filters' skip weights (D,); short_w:
    the depthwise conv weight (3D, 1, 3) or (3D, 3), short_b its bias (3D,). Forward only.
    fft_precision: "auto" | "float32" | "float16", the Triton path's FFT pipeline
    (`fft_signal_dtype`; "auto" takes float16 for half-precision z on CUDA at power-of-two
    L); the reference path (CPU) computes in float32 (float64 for float64 z) regardless.
    """
    B, L, D = _check(z, h, short_w)
    half = fft_signal_dtype(fft_precision, z.dtype, z.device, L) == torch.float16
    res = d2 is not None
    if spectra.shape != (1 + res, D, L + 1):
        raise ValueError(
            f"spectra must be ({1 + res}, {D}, {L + 1}) (filter_spectra of {1 + res} filters at "
            f"L={L}), got {tuple(spectra.shape)}"
        )
    if not use_triton(backend, z, h):
        return _reference_from_spectra(z, h, spectra, d1, d2, short_w, short_b)
    z, h = z.contiguous(), h.contiguous()
    w = short_w.reshape(3 * D, 3).float().contiguous()
    sb = short_b.float().contiguous()
    planes, dev = 1 + res, z.device
    scale = half_fft_scale(L) if half else 1.0  # float16 signals are scaled (module doc)
    sig_dtype = torch.float16 if half else torch.float32
    x = torch.empty(planes, B, D, 2 * L, device=dev, dtype=sig_dtype)
    BL, BD = (64, 64) if z.is_cuda else (16, 16)
    grid = (B, triton.cdiv(L, BL), triton.cdiv(D, BD))
    _mixer_in_kernel[grid](z, h, w, sb, x, B, L, D, scale, HAS_RES=res, BL=BL, BD=BD)
    f = pair_spectra(x)  # (planes, B, D, L), complex32 or complex64
    d1 = d1.float().contiguous()
    d2 = d2.float().contiguous() if res else d1
    skip = torch.stack([d1, d2][:planes]) if half else None  # half: folded into the spectra
    spec = spectra.to(torch.complex64)
    zf = pack_spectrum(f, spec, skip, gain=1.0 / scale)  # (planes, B, D, L)
    y = packed_inverse(zf)  # the real inverse, (planes, B, D, 2L)
    out = torch.empty(B, L, D, device=dev, dtype=z.dtype)
    _mixer_out_kernel[grid](
        y, z, h, w, sb, d1, d2, out, B, L, D, HAS_RES=res, FOLDED=half, BL=BL, BD=BD
    )
    return out


def short_conv_reference(x: torch.Tensor, short_w: torch.Tensor, short_b: torch.Tensor):
    """The causal width-3 depthwise conv of channels-first x (B, C, L), in x's dtype."""
    w = short_w.reshape(x.shape[1], 3).to(x.dtype)
    y = x * w[:, 2:3] + short_b.to(x.dtype)[:, None]
    y[..., 1:] += x[..., :-1] * w[:, 1:2]
    y[..., 2:] += x[..., :-2] * w[:, 0:1]
    return y


def gated_long_conv_reference(
    z: torch.Tensor,
    h: torch.Tensor,
    k1: torch.Tensor,
    d1: torch.Tensor,
    k2: torch.Tensor | None,
    d2: torch.Tensor | None,
    short_w: torch.Tensor,
    short_b: torch.Tensor,
) -> torch.Tensor:
    """`gated_long_conv` from the filters themselves, in plain PyTorch: (B, L, D), float32
    (float64 when z is), the unfused order of M2's MonarchMixerSequenceMixing."""
    _check(z, h, short_w)
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    uc = short_conv_reference(z.to(acc).transpose(1, 2), short_w, short_b)
    x1, x2, v = uc.chunk(3, dim=1)
    y = fft_conv_reference(v, k1.to(acc), d1, gate=x2, pre_gate=x1)
    if k2 is not None:
        y = y + fft_conv_reference(h.to(acc).transpose(1, 2), k2.to(acc), d2)
    return y.transpose(1, 2)


def _reference_from_spectra(z, h, spectra, d1, d2, short_w, short_b):  # noqa: ANN001, ANN202
    """The unfused computation with precomputed spectra (CPU, or backend='reference')."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    L = z.shape[1]
    uc = short_conv_reference(z.to(acc).transpose(1, 2), short_w, short_b)
    x1, x2, v = uc.chunk(3, dim=1)
    xv = x1 * v
    spec = spectra.to(torch.complex128 if acc == torch.float64 else torch.complex64)
    y = torch.fft.irfft(torch.fft.rfft(xv, n=2 * L) * spec[0], n=2 * L, norm="forward")[..., :L]
    y = (y + d1.to(acc)[:, None] * xv) * x2
    if d2 is not None:
        hc = h.to(acc).transpose(1, 2)
        r = torch.fft.irfft(torch.fft.rfft(hc, n=2 * L) * spec[1], n=2 * L, norm="forward")
        y = y + r[..., :L] + d2.to(acc)[:, None] * hc
    return y.transpose(1, 2).to(z.dtype)


def __getattr__(name: str) -> HalfFFT:
    """`m2_mixer.HALF_FFT`: the transforms in use, read live from `kernels.half_fft` (swap
    them there: assigning `m2_mixer.HALF_FFT` would change nothing)."""
    if name == "HALF_FFT":
        return half_fft.HALF_FFT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
