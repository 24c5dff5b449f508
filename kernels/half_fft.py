"""The half-precision FFT pipeline shared by `kernels.fftconv` and `kernels.m2_mixer`.

A long convolution of size 2L by FFTs, as both users run it on the GPU: a Triton prologue
writes the zero-padded signals (..., 2L); `pair_spectra` transforms them as L complex
samples (x[2m] + i x[2m+1], a view: one c2c FFT of L points, no r2c, whose half-precision
plans in cuFFT add a post-processing kernel and a pass over the spectrum); `pack_spectrum`
unpacks that into the real signal's spectrum at k and L - k, multiplies by the filters'
spectra and packs the product into a half-length complex spectrum whose inverse c2c FFT of L
points is the real 2L-point inverse as (even, odd) sample pairs (`packed_inverse`): no c2r
transform, which in PyTorch copies its whole input first (cuFFT's c2r overwrites it); a
Triton epilogue reads the first L real samples.

Half precision (`fft_signal_dtype`: "auto" takes it for float16/bfloat16 inputs on CUDA at a
power-of-two L): cuFFT computes float16 / complex32 transforms at power-of-two sizes, so the
signals, both transforms and the packed spectrum move half the bytes; the filter spectra
stay complex64 and the packing pass computes in float32. The signals are scaled by
`half_fft_scale(L)` = 2^-floor(log2(2L) / 2) ~ 1/sqrt(2L) (a power of two: exact), undone
in the packing pass (its `gain`), so that the scaled transform (|P[k]| <= sum |x|, as the
rfft's) stays below float16's 65504 while
the inverse's input stays a normal float16 number: each user's docstring states the range
for its own signals. A skip term D * signal can ride along as the constant D / (2L) added
to the filter spectrum (a delta at lag 0), so the epilogue need not read the signal again.

`HALF_FFT` holds the two half transforms (cuFFT's c2c through torch.fft). Both users look it up
here at call time, so a test on a CPU (torch has no half FFT there) swaps in transforms that
compute in float32 by assigning `kernels.half_fft.HALF_FFT` (one place for both).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels.common import HAS_TRITON, next_pow2

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def pack_spectrum_kernel(
        f_ptr, s_ptr, z_ptr, d_ptr, inv_n, gain, L, W, R, FOLD: tl.constexpr, BK: tl.constexpr
    ):
        # f holds P = FFT_L(x[2m] + i x[2m+1]) per signal row (`pair_spectra`); the real
        # signal's spectrum is X[k] = E + w O and X[L - k] = conj(E - w O), with
        # E = (P[k] + conj(P[L-k])) / 2, O = (P[k] - conj(P[L-k])) / 2i, w = e^{-i pi k / L}
        # (the halves fold into `gain`). Y = X * S at k and L - k; Z = E' + i O',
        # E' = Y[k] + conj(Y[L-k]), O' = (Y[k] - conj(Y[L-k])) e^{i pi k / L}: the half-length
        # spectrum whose inverse FFT holds the real 2L-point inverse as (even, odd) pairs (no
        # c2r, so no copy of the input). One program per (filter row (g, w), block of bins):
        # the filter spectrum s (complex64, L + 1 bins) and the twiddles are loaded / computed
        # once, then applied to the R signal rows (g, r, w), r < R, of f (complex64 or
        # complex32, L bins). FOLD adds the skip weight d * inv_n to the filter spectrum (a
        # delta at lag 0); gain multiplies it.
        srow = tl.program_id(0).to(tl.int64)
        k = tl.program_id(1) * BK + tl.arange(0, BK)
        m = k < L
        kb = tl.where(k == 0, 0, L - k)  # P's partner bin (L - k) mod L
        two = tl.arange(0, 2)[None, :]  # (re, im) pairs: one contiguous 8-byte load each
        m2 = m[:, None] & (two < 2)
        sa = tl.load(s_ptr + (srow * (L + 1) + k)[:, None] * 2 + two, mask=m2, other=0.0)
        sb = tl.load(s_ptr + (srow * (L + 1) + (L - k))[:, None] * 2 + two, mask=m2, other=0.0)
        sar, sai = tl.split(sa)
        sbr, sbi = tl.split(sb)
        if FOLD:
            dd = tl.load(d_ptr + srow).to(tl.float32) * inv_n
            sar, sbr = sar + dd, sbr + dd
        g2 = gain * 0.5  # the 1/2 of E and O
        sar, sai, sbr, sbi = sar * g2, sai * g2, sbr * g2, sbi * g2
        theta = k.to(tl.float32) * (3.141592653589793 / L)
        c, s = tl.cos(theta), tl.sin(theta)
        first = (srow // W) * R * W + srow % W  # signal row (g, 0, w)
        for r in range(0, R):
            row = first + r * W
            pa = tl.load(f_ptr + (row * L + k)[:, None] * 2 + two, mask=m2, other=0.0)
            pb = tl.load(f_ptr + (row * L + kb)[:, None] * 2 + two, mask=m2, other=0.0)
            par, pai = tl.split(pa.to(tl.float32))
            pbr, pbi = tl.split(pb.to(tl.float32))
            # 2E, 2O and 2 w O: X[k] = E + w O, X[L - k] = conj(E - w O) (times 2)
            er, ei = par + pbr, pai - pbi
            orr, oi = pai + pbi, pbr - par
            wr, wi = c * orr + s * oi, c * oi - s * orr
            far, fai = er + wr, ei + wi
            fbr, fbi = er - wr, wi - ei
            ar = far * sar - fai * sai
            ai = far * sai + fai * sar
            br = fbr * sbr - fbi * sbi
            bi = -(fbr * sbi + fbi * sbr)  # conj(Y[L - k])
            er, ei = ar + br, ai + bi
            dr, di = ar - br, ai - bi
            o_r = dr * c - di * s
            o_i = dr * s + di * c
            zz = tl.join(er - o_i, ei + o_r).to(z_ptr.dtype.element_ty)
            tl.store(z_ptr + (row * L + k)[:, None] * 2 + two, zz, mask=m2)


FFT_PRECISIONS = ("auto", "float32", "float16")

# torch warns once per process that complex32 is "experimental" when the half-precision
# pipeline makes its first spectrum; the pipeline's accuracy is checked against float64
# (kernels.selfcheck), so that one message is silenced, and only it.
warnings.filterwarnings(
    "ignore", message="ComplexHalf support is experimental", category=UserWarning
)


def _cufft_half_fft(z: torch.Tensor) -> torch.Tensor:
    if not z.is_cuda:
        raise ValueError(
            "fft_precision='float16' needs CUDA (cuFFT's half-precision transforms; torch has "
            "none on the CPU): use fft_precision='auto' or 'float32'"
        )
    return torch.fft.fft(z, dim=-1)


def _cufft_half_ifft(z: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft(z, dim=-1, norm="forward")


@dataclass(frozen=True)
class HalfFFT:
    """The two transforms of the half-precision pipeline (cuFFT through torch.fft).

    fft: complex32 (..., L) -> complex32 (..., L), the forward c2c transform (unnormalised);
    ifft: complex32 (..., L) -> complex32 (..., L), unnormalised (norm="forward").
    `HALF_FFT` is the one used; a test on a CPU (torch has no half FFT there) may swap in
    transforms that compute in float32.
    """

    fft: Callable[[torch.Tensor], torch.Tensor] = _cufft_half_fft
    ifft: Callable[[torch.Tensor], torch.Tensor] = _cufft_half_ifft


HALF_FFT = HalfFFT()


def fft_signal_dtype(precision: str, dtype: torch.dtype, device: torch.device | str, L: int):
    """The FFT signals' dtype for inputs of `dtype` on `device` at length L: float16 or float32.

    precision "auto": float16 when the input is float16/bfloat16 (autocast or a half model)
    on CUDA and L is a power of two (cuFFT's half precision needs one), else float32;
    "float32": always float32; "float16": always float16 (L must be a power of two).
    """
    if precision not in FFT_PRECISIONS:
        raise ValueError(f"fft_precision={precision!r} is not one of {FFT_PRECISIONS}")
    pow2 = L > 0 and L & (L - 1) == 0
    if precision == "float16" and not pow2:
        raise ValueError(
            f"fft_precision='float16' needs a power-of-two length (cuFFT computes half "
            f"precision only at powers of two), got L={L}: pad to {1 << (L - 1).bit_length()} "
            "tokens or use fft_precision='auto'"
        )
    half = precision == "float16" or (
        precision == "auto"
        and dtype in (torch.float16, torch.bfloat16)
        and torch.device(device).type == "cuda"
        and pow2
    )
    return torch.float16 if half else torch.float32


def half_fft_scale(L: int) -> float:
    """The float16 signals' scale, 2^-floor(log2(2L) / 2) ~ 1/sqrt(2L): see the module doc."""
    return 2.0 ** -(((2 * L).bit_length() - 1) // 2)


def check_half_output(t: torch.Tensor, step: str, shape: tuple[int, ...]) -> torch.Tensor:
    """`t` (what HALF_FFT.<step> returned), contiguous, if it is complex32 of `shape`."""
    if t.dtype != torch.complex32 or tuple(t.shape) != tuple(shape):
        raise TypeError(
            f"HALF_FFT.{step} must return complex32 of shape {tuple(shape)}, got {t.dtype} "
            f"{tuple(t.shape)}"
        )
    return t.contiguous()


def pair_spectra(x: torch.Tensor) -> torch.Tensor:
    """The FFT of zero-padded real signals x (..., 2L) read as L complex samples
    x[2m] + i x[2m+1] (a view, no copy): (..., L), complex32 for float16 signals (through
    `HALF_FFT`, looked up now), complex64 for float32; `pack_spectrum` unpacks it into the
    real signals' spectra."""
    if x.dtype not in (torch.float16, torch.float32) or x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(
            "pair_spectra takes float16 or float32 signals with an even last dim (zero-padded "
            f"to 2L), got {x.dtype} {tuple(x.shape)}"
        )
    pairs = torch.view_as_complex(x.contiguous().unflatten(-1, (x.shape[-1] // 2, 2)))
    if x.dtype == torch.float16:
        return check_half_output(HALF_FFT.fft(pairs), "fft", tuple(pairs.shape))
    return torch.fft.fft(pairs, dim=-1)


def packed_inverse(z: torch.Tensor) -> torch.Tensor:
    """The real 2L-point inverse of `pack_spectrum`'s output z (..., L): (..., 2L), float16
    for a complex32 z (through `HALF_FFT`), float32 for complex64; unnormalised."""
    if z.dtype == torch.complex32:
        y = check_half_output(HALF_FFT.ifft(z), "ifft", tuple(z.shape))
    else:
        y = torch.fft.ifft(z, dim=-1, norm="forward")
    return torch.view_as_real(y).flatten(-2)  # sample pairs (y[2n], y[2n+1]) -> 2L samples


def pack_spectrum(
    f: torch.Tensor,
    spectra: torch.Tensor,
    skip: torch.Tensor | None = None,
    *,
    gain: float = 1.0,
    normalized: bool = True,
) -> torch.Tensor:
    """The packed product spectrum (G, R, W, L) in f's dtype, for `packed_inverse`.

    f: the signals' pair spectra (G, R, W, L) of `pair_spectra`, complex32 or complex64;
    spectra: the filters' rfft (G, W, L + 1), complex64: signal row (g, r, w) takes filter
    row (g, w). normalized:
    spectra hold rfft(k, 2L) / (2L) (`m2_mixer.filter_spectra`); False: plain rfft(k, 2L),
    the 1/(2L) is applied here (no extra pass over the spectra). skip: the skip weights
    (W,) or (G, W), folded into the spectra as D / (2L); None: no skip term.
    gain multiplies the product (1 / the signals' scale in half precision).
    """
    G, R, W, L = f.shape
    n1 = L + 1
    if tuple(spectra.shape) != (G, W, n1) or spectra.dtype != torch.complex64:
        raise ValueError(
            f"spectra must be complex64 ({G}, {W}, {n1}) for signal spectra {tuple(f.shape)}, "
            f"got {spectra.dtype} {tuple(spectra.shape)}"
        )
    inv_n = 1.0 / (2 * L)
    if not normalized:
        gain, inv_n = gain * inv_n, 1.0
    fold = skip is not None
    f, spectra = f.contiguous(), spectra.contiguous()
    d = skip.float().expand(G, W).contiguous() if fold else torch.view_as_real(spectra)
    z = torch.empty(G, R, W, L, device=f.device, dtype=f.dtype)
    BK = 1024 if f.is_cuda else min(1024, next_pow2(L))  # interpreter: fewer programs
    pack_spectrum_kernel[(G * W, triton.cdiv(L, BK))](
        torch.view_as_real(f), torch.view_as_real(spectra), torch.view_as_real(z), d,
        inv_n, gain, L, W, R, FOLD=fold, BK=BK,
    )  # fmt: skip
    return z
