"""The fused M2 sequence mixer (`kernels.gated_long_conv`) in Triton's CPU interpreter.

The interpreter must be on before triton is imported, so the checks run in a subprocess.
They compare (1) the kernel with its float64 PyTorch reference on odd shapes, with and
without the residual convolution, and (2) an M2 model's inference forward (fused block,
cached filter spectra, the MLP through `kernels.m2_mlp`) with its training-mode forward (the reference's unfused order), the
parity fixture's model included; and that changing a filter weight in place is seen.
"""

from __future__ import annotations

import math

import pytest
from interpreted import run_interpreted

pytest.importorskip("triton")
import torch  # noqa: E402

from kernels.half_fft import fft_signal_dtype, half_fft_scale  # noqa: E402

SCRIPT = r"""
import json, sys
import numpy as np
import torch
from kernels import filter_spectra, gated_long_conv, gated_long_conv_reference
from toolkit.encoders.m2bert import M2BertConfig, M2BertModel

torch.manual_seed(0)
out = []
for B, L, D, res in [(2, 37, 24, True), (1, 64, 16, False), (3, 20, 40, True)]:
    z, h = torch.randn(B, L, 3 * D), torch.randn(B, L, D)
    k1 = torch.randn(D, 2 * L) * 0.1
    k2 = torch.randn(D, 2 * L) * 0.1 if res else None
    d1, d2 = torch.randn(D), (torch.randn(D) if res else None)
    w, b = torch.randn(3 * D, 1, 3), torch.randn(3 * D)
    ref = gated_long_conv_reference(
        z.double(), h.double(), k1.double(), d1, None if k2 is None else k2.double(), d2,
        w.double(), b.double())
    spec = filter_spectra([k1] + ([k2] if res else []), L)
    got = gated_long_conv(z, h, spec, d1, d2, w, b)
    assert got.shape == (B, L, D)
    err = float((got.double() - ref).abs().max() / ref.abs().max())
    out.append({"case": "kernel", "shape": [B, L, D], "res": res, "err": err})

from kernels import blockdiag_matmul_reference
from kernels.m2_mlp import (
    bias_residual_layer_norm, blockdiag_mm, glu_gelu, glu_gelu_reference)
x = torch.randn(37, 2 * 24)
e = float((glu_gelu(x) - glu_gelu_reference(x.double()).float()).abs().max())
out.append({"case": "glu", "err": e})
x, r = torch.randn(29, 40), torch.randn(29, 40)
bias, w, lb = torch.randn(40), torch.randn(40), torch.randn(40)
ref = torch.nn.functional.layer_norm((x + r + bias).double(), (40,), w.double(), lb.double(), 1e-12)
e = float((bias_residual_layer_norm(x, bias, r, w, lb, 1e-12) - ref).abs().max())
out.append({"case": "layer_norm", "err": e})
x, wb = torch.randn(33, 4 * 6), torch.randn(4, 10, 6)
ref = blockdiag_matmul_reference(x.double(), wb.double())
e = float((blockdiag_mm(x, [b.t().contiguous() for b in wb]) - ref).abs().max())
out.append({"case": "blockdiag", "err": e})

cfg = M2BertConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   max_position_embeddings=48, long_conv_l_max=48, hyena_filter_order=8,
                   bidirectional=True, residual_long_conv=True, use_glu_mlp=True,
                   use_monarch_mlp=True, monarch_mlp_nblocks=4)
model = M2BertModel(cfg).eval()
ids = torch.randint(0, 500, (2, 48))
with torch.no_grad():
    fused = model(ids)[0]
    mixer = model.encoder.layer[0].attention
    assert mixer.fused_ok(torch.zeros(1, 48, 32)) and mixer._spectra is not None
    again = model(ids)[0]  # from the cached spectra
with torch.enable_grad():
    plain = model(ids)[0].detach()
err = float((fused - plain).abs().max() / plain.abs().max())
out.append({"case": "model", "err": err, "cached_equal": bool(torch.equal(fused, again))})
with torch.no_grad():
    mixer.filter_fn.implicit_filter[0].weight.mul_(1.5)  # in place: the cache must notice
    changed = model(ids)[0]
with torch.enable_grad():
    plain2 = model(ids)[0].detach()
out.append({"case": "weights changed", "err": float((changed - plain2).abs().max() / plain2.abs().max()),
            "moved": float((changed - fused).abs().max())})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return run_interpreted(SCRIPT)


def test_fused_block_matches_float64_reference(rows):
    kernel = [r for r in rows if r["case"] == "kernel"]
    assert len(kernel) == 3 and {r["res"] for r in kernel} == {True, False}
    assert max(r["err"] for r in kernel) < 1e-5, kernel


@pytest.mark.parametrize("case", ["glu", "layer_norm", "blockdiag"])
def test_fused_mlp_parts_match_references(rows, case):
    (row,) = [r for r in rows if r["case"] == case]
    assert row["err"] < 1e-5, row


def test_model_inference_equals_the_unfused_forward(rows):
    (model,) = [r for r in rows if r["case"] == "model"]
    assert model["err"] < 1e-4 and model["cached_equal"], model


def test_cached_spectra_follow_in_place_weight_changes(rows):
    (changed,) = [r for r in rows if r["case"] == "weights changed"]
    assert changed["moved"] > 1e-3  # the output changed with the weights ...
    assert changed["err"] < 1e-4, changed  # ... to what the unfused forward gives


HALF_SCRIPT = r"""
import json
import torch
from kernels import half_fft
from kernels.half_fft import HalfFFT
from kernels.m2_mixer import filter_spectra, gated_long_conv, gated_long_conv_reference
from toolkit.encoders.m2bert import M2BertConfig, M2BertModel, MonarchMixerSequenceMixing

calls = []


def fft(z):  # complex32 in and out, as cuFFT's half transforms (float32 inside)
    calls.append(["fft", str(z.dtype)])
    return torch.fft.fft(z.to(torch.complex64), dim=-1).to(torch.complex32)


def ifft(z):
    calls.append(["ifft", str(z.dtype)])
    return torch.fft.ifft(z.to(torch.complex64), dim=-1, norm="forward").to(torch.complex32)


half_fft.HALF_FFT = HalfFFT(fft, ifft)  # the one place both users look the transforms up
torch.manual_seed(0)
out = []
# the last case: a layer input of mean 3000, whose unscaled DC term (64 x 3000) overflows
for B, L, D, res, offset in [(2, 32, 24, True, 0.0), (1, 64, 16, False, 0.0),
                             (1, 64, 16, True, 3000.0)]:
    z, h = torch.randn(B, L, 3 * D), torch.randn(B, L, D) + offset
    k1, k2 = torch.randn(D, 2 * L) * 0.1, torch.randn(D, 2 * L) * 0.1
    d1, d2 = torch.randn(D), torch.randn(D)
    w, b = torch.randn(3 * D, 1, 3), torch.randn(3 * D)
    ref = gated_long_conv_reference(
        z.double(), h.double(), k1.double(), d1, k2.double() if res else None,
        d2 if res else None, w.double(), b.double())
    spec = filter_spectra([k1, k2] if res else [k1], L)
    got = gated_long_conv(z, h, spec, d1, d2 if res else None, w, b, fft_precision="float16")
    err = float((got.double() - ref).norm() / ref.norm())
    out.append({"case": "kernel", "shape": [B, L, D], "res": res, "offset": offset,
                "err": err, "dtype": str(got.dtype)})
out.append({"case": "calls", "calls": sorted({tuple(c) for c in calls})})
# small signals at L = 1024 (y ~ 1e-3): the inverse's input must stay a normal float16
# number (unscaled in the packing pass), not a subnormal one (scaled by 1/32: ~1e-2 error)
B, L, D, g = 1, 1024, 2, 0.05
z, h = torch.randn(B, L, 3 * D) * g, torch.randn(B, L, D)
k1, d1 = torch.randn(D, 2 * L) * 0.1 / L**0.5, torch.randn(D) * 0.1
w, b = torch.randn(3 * D, 1, 3), torch.randn(3 * D) * g
ref = gated_long_conv_reference(
    z.double(), h.double(), k1.double(), d1, None, None, w.double(), b.double())
got = gated_long_conv(z, h, filter_spectra([k1], L), d1, None, w, b, fft_precision="float16")
out.append({"case": "small", "err": float((got.double() - ref).norm() / ref.norm())})

cfg = M2BertConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   max_position_embeddings=64, long_conv_l_max=64, hyena_filter_order=8,
                   bidirectional=True, residual_long_conv=True)
model = M2BertModel(cfg).eval()
ids = torch.randint(0, 500, (1, 64))
calls.clear()
with torch.no_grad():
    auto = model(ids)[0]  # "auto" on a CPU: the float32 pipeline
    n_auto = len(calls)
    MonarchMixerSequenceMixing.fft_precision = "float16"
    half = model(ids)[0]
with torch.enable_grad():
    plain = model(ids)[0].detach()
out.append({"case": "model", "auto_calls": n_auto, "half_calls": len(calls),
            "err_half": float((half - plain).norm() / plain.norm()),
            "err_auto": float((auto - plain).norm() / plain.norm())})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def half_rows() -> list[dict]:
    """The float16 pipeline in the interpreter. Its two transforms are emulated (a test
    double: torch has no half-precision FFT on the CPU): computed in float32, taking float16
    signals and giving complex32 spectra like cuFFT's, so the kernels read and write the
    half-precision buffers of the GPU path."""
    return run_interpreted(HALF_SCRIPT, "-W", "ignore::UserWarning")


def test_half_pipeline_matches_float64_reference(half_rows):
    kernel = [r for r in half_rows if r["case"] == "kernel"]
    assert len(kernel) == 3 and {r["res"] for r in kernel} == {True, False}
    # float16 signals and complex32 spectra: ~4e-4 measured (float32 path: ~1e-7)
    assert max(r["err"] for r in kernel) < 2e-3, kernel
    assert all(r["dtype"] == "torch.float32" for r in kernel)  # out in z's dtype


def test_half_pipeline_scales_a_large_signal_below_float16_overflow(half_rows):
    (big,) = [r for r in half_rows if r["case"] == "kernel" and r["offset"] > 0]
    assert math.isfinite(big["err"]) and big["err"] < 2e-3, big


def test_half_pipeline_keeps_small_signals_precise(half_rows):
    (row,) = [r for r in half_rows if r["case"] == "small"]
    assert row["err"] < 2e-3, row


def test_half_pipeline_hands_half_buffers_to_the_transforms(half_rows):
    (row,) = [r for r in half_rows if r["case"] == "calls"]
    assert row["calls"] == [["fft", "torch.complex32"], ["ifft", "torch.complex32"]]


def test_model_fft_precision_setting(half_rows):
    (row,) = [r for r in half_rows if r["case"] == "model"]
    assert row["auto_calls"] == 0 and row["err_auto"] < 1e-4, row  # CPU auto: float32
    assert row["half_calls"] == 2 * 2 and row["err_half"] < 3e-3, row  # 2 layers x 2 FFTs


@pytest.mark.parametrize(
    ("precision", "dtype", "device", "L", "expected"),
    [
        ("auto", torch.bfloat16, "cuda", 2048, torch.float16),
        ("auto", torch.float16, "cuda", 32768, torch.float16),
        ("auto", torch.float32, "cuda", 2048, torch.float32),  # a float32 layer stays float32
        ("auto", torch.bfloat16, "cuda", 2000, torch.float32),  # cuFFT half: powers of two
        ("auto", torch.bfloat16, "cpu", 2048, torch.float32),  # no half FFT on the CPU
        ("float32", torch.bfloat16, "cuda", 2048, torch.float32),
        ("float16", torch.float32, "cpu", 64, torch.float16),
    ],
)
def test_fft_signal_dtype_choice(precision, dtype, device, L, expected):
    assert fft_signal_dtype(precision, dtype, device, L) == expected


def test_fft_precision_rejects_bad_requests():
    with pytest.raises(ValueError, match="power-of-two"):
        fft_signal_dtype("float16", torch.bfloat16, "cuda", 2000)
    with pytest.raises(ValueError, match="one of"):
        fft_signal_dtype("bf16", torch.bfloat16, "cuda", 2048)


def test_half_fft_scale_is_a_power_of_two_near_one_over_sqrt_2l():
    for L in (32, 2048, 4096, 8192, 32768):
        s = half_fft_scale(L)
        assert math.frexp(s)[0] == 0.5  # a power of two: scaling is exact
        assert 0.5 <= s * math.sqrt(2 * L) <= math.sqrt(2)
    assert half_fft_scale(2048) == 1 / 64 and half_fft_scale(32768) == 1 / 256


@pytest.mark.parametrize("import_mixer", [False, True])
def test_complex_half_warning_silenced_only_by_the_mixer(import_mixer):
    """torch warns once per process on the first complex32 tensor; importing the mixer (whose
    half pipeline makes them) silences that one message. Without the import it appears, so
    the check can fail."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import warnings, torch\n"
        + ("import kernels.m2_mixer\n" if import_mixer else "")
        + "with warnings.catch_warnings(record=True) as w:\n"
        "    torch.empty(2, dtype=torch.chalf)\n"
        "print(sum('ComplexHalf' in str(x.message) for x in w))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == ("0" if import_mixer else "1"), out
