"""fft_conv's cuFFT path with float32 and float16 FFT signals (`fft_precision`).

The Triton kernels run in Triton's CPU interpreter (a subprocess: TRITON_INTERPRET=1 must be
set before triton is imported) and are compared with `fft_conv_reference` in float64:
shared (H, Lk) and per-batch (B, H, Lk) filters, causal (Lk < L) and M2's bidirectional
(Lk = 2L) layouts, with and without d_bias / gate / pre_gate. torch has no half-precision
FFT on the CPU, so the float16 pipeline's two transforms are a test double (below): they
compute in float32 but take float16 signals and give complex32 spectra like cuFFT's, so the
kernels read and write the GPU path's half-precision buffers. The GPU itself is checked by
`python -m kernels.selfcheck --device cuda --kernels fft_conv`.
"""

from __future__ import annotations

import pytest
from interpreted import run_interpreted

pytest.importorskip("triton")
import torch  # noqa: E402

from kernels import fft_conv, half_fft, m2_mixer  # noqa: E402
from kernels.half_fft import fft_signal_dtype  # noqa: E402

SCRIPT = r"""
import json
import torch
from kernels import fft_conv, fft_conv_reference, half_fft
from kernels.half_fft import HalfFFT

calls = []


def fft(z):  # test double: complex32 in and out, as cuFFT's half transforms (float32 inside)
    calls.append(["fft", str(z.dtype)])
    return torch.fft.fft(z.to(torch.complex64), dim=-1).to(torch.complex32)


def ifft(z):
    calls.append(["ifft", str(z.dtype)])
    return torch.fft.ifft(z.to(torch.complex64), dim=-1, norm="forward").to(torch.complex32)


half_fft.HALF_FFT = HalfFFT(fft, ifft)


def err(a, b):
    return float((a.double() - b).norm() / b.norm())


torch.manual_seed(0)
out = []
B, H = 2, 3
cases = [  # L, Lk, filters, d, gate, pre_gate, dtype
    (16, 7, "shared", True, True, True, torch.float32),
    (16, 32, "shared", True, True, True, torch.float32),
    (16, 7, "per_batch", True, True, True, torch.float32),
    (32, 64, "per_batch", True, True, True, torch.float16),
    (16, 32, "batch_one", True, False, True, torch.float32),
    (16, 16, "shared", False, True, False, torch.float32),
    (32, 9, "per_batch", False, False, False, torch.float16),
    (16, 32, "shared", True, False, False, torch.float16),
]
for L, Lk, filt, has_d, has_g, has_pg, dt in cases:
    u = torch.randn(B, H, L).to(dt)
    shape = {"shared": (H,), "per_batch": (B, H), "batch_one": (1, H)}[filt]
    k = torch.randn(*shape, Lk) / Lk**0.5  # conv(v, k) and the skip term D v: both O(|v|)
    d = torch.randn(H) if has_d else None
    g = torch.randn(B, H, L).to(dt) if has_g else None
    pg = torch.randn(B, H, L).to(dt) if has_pg else None
    dbl = lambda t: None if t is None else t.double()  # noqa: E731
    ref = fft_conv_reference(u.double(), k.double(), dbl(d), dbl(g), dbl(pg))
    row = {"case": "kernel", "L": L, "Lk": Lk, "filters": filt, "d": has_d, "gate": has_g,
           "pre_gate": has_pg, "dtype": str(dt)}
    for prec in ("float32", "float16"):
        calls.clear()
        got = fft_conv(u, k, d, g, pg, fft_precision=prec)
        row[prec] = err(got, ref)
        row[prec + "_dtype"] = str(got.dtype)
        row[prec + "_calls"] = sorted({tuple(c) for c in calls})
        if prec == "float16":  # what the error would be had a part gone missing
            if has_d:
                row["vs_no_skip"] = err(got, fft_conv_reference(
                    u.double(), k.double(), None, dbl(g), dbl(pg)))
            if has_g:
                row["vs_no_gate"] = err(got, fft_conv_reference(
                    u.double(), k.double(), dbl(d), None, dbl(pg)))
            # filters of other rows: per-batch ones swapped between batches, shared ones
            # rolled over channels
            wrong = k.flip(0) if filt == "per_batch" else k.roll(1, dims=-2)
            row["vs_other_filters"] = err(got, fft_conv_reference(
                u.double(), wrong.double(), dbl(d), dbl(g), dbl(pg)))
    out.append(row)

# a non-power-of-two L: "auto" takes float32 (no half transform), "float16" is refused
L = 20
u, k, d = torch.randn(B, H, L), torch.randn(H, 2 * L), torch.randn(H)
calls.clear()
got = fft_conv(u, k, d, fft_precision="auto")
out.append({"case": "odd auto", "err": err(got, fft_conv_reference(u.double(), k.double(),
            d.double())), "calls": len(calls)})
errors = {}
for name, kw in [("odd float16", {"fft_precision": "float16"}),
                 ("bad precision", {"fft_precision": "bf16"}),
                 ("monarch float16", {"fft_precision": "float16", "method": "monarch"})]:
    L = 256 if name.startswith("monarch") else 20
    try:
        fft_conv(torch.randn(1, 2, L), torch.randn(2, L), **kw)
        errors[name] = None
    except ValueError as e:
        errors[name] = str(e)
half_fft.HALF_FFT = HalfFFT()  # cuFFT's transforms: on a CPU, a clear error
try:
    fft_conv(torch.randn(1, 2, 16), torch.randn(2, 16), fft_precision="float16")
    errors["cpu float16"] = None
except ValueError as e:
    errors["cpu float16"] = str(e)
half_fft.HALF_FFT = HalfFFT(fft, ifft)
out.append({"case": "errors", **errors})

# gradients (the reference recompute) through the float16 forward
u, k = torch.randn(B, H, 16, requires_grad=True), torch.randn(B, H, 32, requires_grad=True)
d, g = torch.randn(H, requires_grad=True), torch.randn(B, H, 16)
gout = torch.randn(B, H, 16)
fft_conv(u, k, d, g, fft_precision="float16").backward(gout)
ins = [t.detach().double().requires_grad_(True) for t in (u, k, d)]
fft_conv_reference(*ins, g.double()).backward(gout.double())
out.append({"case": "grads", "errs": [err(a.grad, b.grad) for a, b in zip((u, k, d), ins)]})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_interpreted(SCRIPT, "-W", "ignore::UserWarning")


def _kernel_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["case"] == "kernel"]


def test_both_precisions_match_float64_reference(rows):
    kernel = _kernel_rows(rows)
    assert len(kernel) == 8
    assert {r["filters"] for r in kernel} == {"shared", "per_batch", "batch_one"}
    assert any(r["Lk"] == 2 * r["L"] for r in kernel) and any(r["Lk"] < r["L"] for r in kernel)
    for key in ("d", "gate", "pre_gate"):
        assert {r[key] for r in kernel} == {True, False}
    for r in kernel:
        assert r["float32"] < 1e-5 if r["dtype"] == "torch.float32" else r["float32"] < 2e-3, r
        # float16 signals and complex32 spectra: ~4e-4 measured (float16 output: ~1e-3)
        assert r["float16"] < 3e-3, r
        assert r["float32_dtype"] == r["float16_dtype"] == r["dtype"], r  # u's dtype out


def test_half_path_hands_half_buffers_to_the_transforms(rows):
    for r in _kernel_rows(rows):
        assert r["float32_calls"] == [], r  # float32: torch.fft, never HALF_FFT
        assert r["float16_calls"] == [["fft", "torch.complex32"], ["ifft", "torch.complex32"]]


def test_dropped_skip_gate_or_mismapped_filters_would_fail(rows):
    """The tolerance above tells the real output from one without the skip term, without
    the gate, or with the filters of other rows (shared: other channels; per-batch: the
    other batch): each of those is far off."""
    kernel = _kernel_rows(rows)
    assert sum("vs_no_skip" in r for r in kernel) >= 4
    assert sum("vs_no_gate" in r for r in kernel) >= 4
    assert {r["filters"] for r in kernel} >= {"shared", "per_batch"}
    for r in kernel:
        for key in ("vs_no_skip", "vs_no_gate", "vs_other_filters"):
            if key in r:
                assert r[key] > 0.05, (key, r)


def test_non_power_of_two_length(rows):
    (auto,) = [r for r in rows if r["case"] == "odd auto"]
    assert auto["calls"] == 0 and auto["err"] < 1e-5, auto  # "auto": float32
    (errors,) = [r for r in rows if r["case"] == "errors"]
    assert "power-of-two" in errors["odd float16"], errors
    assert "one of" in errors["bad precision"] and "float16" in errors["bad precision"]
    assert "method='cufft'" in errors["monarch float16"], errors
    assert "needs CUDA" in errors["cpu float16"], errors


def test_gradients_through_the_half_forward(rows):
    (row,) = [r for r in rows if r["case"] == "grads"]
    assert len(row["errs"]) == 3 and max(row["errs"]) < 1e-5, row


def test_precision_checks_on_the_reference_path():
    """Without the interpreter a CPU call takes the PyTorch reference: "float16" is refused
    there too (it would not run in float16), as are bad values and odd lengths."""
    u, k = torch.randn(1, 2, 16), torch.randn(2, 16)
    with pytest.raises(ValueError, match="Triton path on CUDA"):
        fft_conv(u, k, fft_precision="float16", backend="reference")
    with pytest.raises(ValueError, match="one of"):
        fft_conv(u, k, fft_precision="half")
    with pytest.raises(ValueError, match="power-of-two"):
        fft_conv(torch.randn(1, 2, 20), k, fft_precision="float16")
    torch.testing.assert_close(
        fft_conv(u, k, fft_precision="float32", backend="reference"),
        fft_conv(u, k, backend="reference"),
    )
    assert fft_signal_dtype("auto", torch.bfloat16, "cuda", 20) == torch.float32
    assert fft_signal_dtype("auto", torch.bfloat16, "cuda", 4096) == torch.float16


def test_m2_mixer_keeps_its_names():
    """The pieces moved to kernels.half_fft stay importable from kernels.m2_mixer; its
    HALF_FFT is read live from kernels.half_fft (where tests swap it)."""
    for name in ("FFT_PRECISIONS", "HalfFFT", "fft_signal_dtype", "half_fft_scale"):
        assert getattr(m2_mixer, name) is getattr(half_fft, name)
    assert m2_mixer.HALF_FFT is half_fft.HALF_FFT


def test_pair_spectra_is_the_real_spectrum_in_pairs():
    """pair_spectra (float32 on the CPU) equals the FFT of the (even, odd) sample pairs, and
    the real signal's rfft follows from it as pack_spectrum unpacks it; a strided input is
    taken, and a bad dtype or an odd length is refused by name."""
    from kernels.half_fft import pair_spectra

    torch.manual_seed(0)
    x = torch.randn(3, 5, 32)
    p = pair_spectra(x.transpose(0, 1).contiguous().transpose(0, 1))  # non-contiguous view
    assert torch.allclose(p, torch.fft.fft(torch.complex(x[..., 0::2], x[..., 1::2])), atol=1e-5)
    L = 16
    k = torch.arange(L + 1)
    pb = torch.conj(p[..., (L - k) % L])
    e, o = (p[..., k % L] + pb) / 2, (p[..., k % L] - pb) / 2j
    real = e + torch.exp(-1j * torch.pi * k / L) * o
    assert torch.allclose(real, torch.fft.rfft(x), atol=1e-4)
    for bad in (x.double(), x.bfloat16(), x[..., :31]):
        with pytest.raises(ValueError, match="pair_spectra"):
            pair_spectra(bad)
