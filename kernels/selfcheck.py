"""Kernel-vs-reference checks (forward and gradients) over a grid of shapes and dtypes.

Used by the tests (in Triton's interpreter, tiny shapes) and by benchmarks/kernels.py on a
GPU. Errors are ||out - ref|| / ||ref|| against a float64 reference on the same inputs.
Run as `python -m kernels.selfcheck [--device cuda]`; prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import torch

from kernels.bert_ops import (
    embed_layernorm,
    embed_layernorm_reference,
    layer_norm,
    segment_mean,
    segment_mean_reference,
)
from kernels.common import interpret_mode
from kernels.fftconv import fft_conv
from kernels.linear_attn import linear_attention
from kernels.linear_attn_parallel import taylor_causal_parallel
from kernels.m2_mixer import (
    fft_signal_dtype,
    filter_spectra,
    gated_long_conv,
    gated_long_conv_reference,
)
from kernels.monarch import monarch_matmul
from kernels.reference import (
    fft_conv_reference,
    linear_attention_reference,
    monarch_matmul_reference,
    sliding_window_attention_reference,
)
from kernels.sliding_window import sliding_window_attention

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tolerance(dtype: torch.dtype) -> float:
    """Relative-error bound: fp32 exact in the interpreter, tf32 dots on a GPU; 16-bit I/O."""
    if dtype == torch.float32:
        return 1e-5 if interpret_mode() else 5e-3
    return 1e-2 if dtype == torch.float16 else 4e-2


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _check(
    name: str,
    params: dict[str, Any],
    dtype: torch.dtype,
    fn: Callable[..., torch.Tensor],
    ref: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor | None],
) -> dict[str, Any]:
    """Compare fn (kernel path, inputs in dtype) with ref on float64 copies: output and grads."""
    ins = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*ins)
    ref_ins = [t.detach().double().requires_grad_(True) if t is not None else None for t in inputs]
    ref_out = ref(*ref_ins)
    grad = torch.randn_like(ref_out)
    out.backward(grad.to(out.dtype))
    ref_out.backward(grad)
    fwd = _rel(out, ref_out)
    grads = [_rel(a.grad, b.grad) for a, b in zip(ins, ref_ins) if a is not None]
    tol = tolerance(dtype)
    return {
        "kernel": name,
        **params,
        "dtype": str(dtype).replace("torch.", ""),
        "fwd_rel_err": fwd,
        "grad_rel_err": max(grads) if grads else 0.0,
        "grad_rel_errs": grads,
        "tol": tol,
        "ok": bool(fwd <= tol and all(g <= 2 * tol for g in grads) and out.dtype == dtype),
    }


def _key_mask(B: int, N: int, device: str) -> torch.Tensor:
    """Random padding pattern: about 30% of the keys masked, the last rows of batch 0 too."""
    m = torch.rand(B, N, device=device) > 0.3
    m[0, N // 2 :] = False
    m[:, 0] = True
    return m


def check_linear_attention(
    B, H, N, D, E, fm, causal, dtype, device, F=12, masked=False
) -> dict[str, Any]:
    q = torch.randn(B, H, N, D, device=device, dtype=dtype)
    k = torch.randn(B, H, N, D, device=device, dtype=dtype)
    v = torch.randn(B, H, N, E, device=device, dtype=dtype)
    w = b = None
    if fm == "hedgehog":
        w = (torch.randn(H, D, F, device=device) / math.sqrt(D)).to(dtype)
        b = torch.randn(H, F, device=device) * 0.1
    km = _key_mask(B, N, device) if masked else None
    return _check(
        "linear_attention",
        {"feature_map": fm, "causal": causal, "shape": [B, H, N, D, E], "key_mask": masked},
        dtype,
        lambda q, k, v, w, b: linear_attention(
            q, k, v, fm, causal, 1e-6, w, b, backend="triton", key_mask=km
        ),
        lambda q, k, v, w, b: linear_attention_reference(
            q, k, v, fm, causal, 1e-6, w, b, key_mask=km
        ),
        [q, k, v, w, b],
    )


def check_linear_attention_range(
    B, H, N, D, E, dtype, device, k_scale=24.0, v_mean=1.0
) -> dict[str, Any]:
    """Taylor non-causal forward on large keys and positive values: the key state grows as
    N k^2 v / (sqrt(2) sqrt(d)) (S2 ~ 1e5 at N=1024, k ~ 24, v ~ 1, d=16: past float16's
    65504), so a state cast to float16 unscaled overflows; forward only (no grads)."""
    q = torch.randn(B, H, N, D, device=device).to(dtype)
    k = (torch.randn(B, H, N, D, device=device) * k_scale).to(dtype)
    v = (v_mean + 0.1 * torch.randn(B, H, N, E, device=device)).to(dtype)
    out = linear_attention(q, k, v, "taylor", backend="triton")
    ref = linear_attention_reference(q.double(), k.double(), v.double(), "taylor")
    fwd, tol = _rel(out, ref), tolerance(dtype)
    return {
        "kernel": "linear_attention_range", "feature_map": "taylor", "causal": False,
        "shape": [B, H, N, D, E], "k_scale": k_scale, "v_mean": v_mean, "key_mask": False,
        "dtype": str(dtype).replace("torch.", ""), "fwd_rel_err": fwd, "grad_rel_err": 0.0,
        "grad_rel_errs": [], "tol": tol, "ok": bool(fwd <= tol and out.dtype == dtype),
    }  # fmt: skip


def grid_la_taylor_forward(size: str, dtypes: list[torch.dtype], device: str) -> list[dict]:
    """The non-causal Taylor forward (kernels/linear_attn_fwd.py): several state splits and
    output runs with a ragged last one, B=1 and B>1, head and value dims padded to the block,
    padding masks, and a key state past float16's range (forward only)."""
    tiny = size == "tiny"
    shapes = [(1, 3, 100, 16, 64), (3, 2, 77, 4, 40)] if tiny else [
        (1, 12, 2049, 16, 64), (8, 12, 8192, 16, 64), (3, 2, 777, 4, 40)]  # fmt: skip
    res = []
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(shapes):
            for masked in (False, True):
                if tiny and masked != bool(i):  # interpreter time: one mask case per shape
                    continue
                row = check_linear_attention(B, H, N, D, E, "taylor", False, dtype, device,
                                             masked=masked)  # fmt: skip
                res.append(row)
        if dtype != torch.float32:
            B, H, N = (1, 1, 1024) if tiny else (2, 12, 65536)
            res.append(check_linear_attention_range(B, H, N, 16, 64, dtype, device))
    return res


def check_linear_attention_backward(
    B, H, N, D, E, causal, dtype, device, masked=False, k_scale=None
) -> dict[str, Any]:
    """Taylor map: the fused Triton backward (no reference recompute) against float64 autograd
    of the reference; grad_rel_errs are (dq, dk, dv). k_scale: keys ~ N(0, k_scale^2), values
    ~ 1 + 0.1 N(0, 1) (a key state past float16's range, as in `check_..._range`)."""
    if k_scale is None:
        row = check_linear_attention(B, H, N, D, E, "taylor", causal, dtype, device, masked=masked)
    else:
        q, k, v = (torch.randn(B, H, N, n, device=device) for n in (D, D, E))
        params = {"feature_map": "taylor", "causal": causal, "shape": [B, H, N, D, E],
                  "key_mask": False, "k_scale": k_scale}  # fmt: skip
        row = _check("linear_attention", params, dtype,
                     lambda q, k, v: linear_attention(q, k, v, "taylor", causal, backend="triton"),
                     lambda q, k, v: linear_attention_reference(q, k, v, "taylor", causal),
                     [q.to(dtype), (k * k_scale).to(dtype), (1 + 0.1 * v).to(dtype)])  # fmt: skip
    return {**row, "kernel": "linear_attention_bwd", "backward": "triton"}


def check_sliding_window(B, H, N, D, window, causal, dtype, device, masked=False) -> dict[str, Any]:
    q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype) for _ in range(3))
    km = _key_mask(B, N, device) if masked else None
    return _check(
        "sliding_window_attention",
        {"window": window, "causal": causal, "shape": [B, H, N, D], "key_mask": masked},
        dtype,
        lambda q, k, v: sliding_window_attention(
            q, k, v, window, causal, backend="triton", key_mask=km
        ),
        lambda q, k, v: sliding_window_attention_reference(q, k, v, window, causal, None, km),
        [q, k, v],
    )


def check_monarch(M, m, dtype, device) -> dict[str, Any]:
    x = torch.randn(M, m * m, device=device, dtype=dtype)
    w1 = (torch.randn(m, m, m, device=device) / math.sqrt(m)).to(dtype)
    w2 = (torch.randn(m, m, m, device=device) / math.sqrt(m)).to(dtype)
    return _check(
        "monarch_matmul",
        {"shape": [M, m * m], "nblocks": m},
        dtype,
        lambda x, a, b: monarch_matmul(x, a, b, backend="triton"),
        monarch_matmul_reference,
        [x, w1, w2],
    )


def check_fft_conv(B, H, L, Lk, gated, dtype, device, method="auto") -> dict[str, Any]:
    u = torch.randn(B, H, L, device=device, dtype=dtype)
    k = torch.randn(H, Lk, device=device) / math.sqrt(Lk)
    d = torch.randn(H, device=device)
    g = torch.randn(B, H, L, device=device, dtype=dtype) if gated else None
    pg = torch.randn(B, H, L, device=device, dtype=dtype) if gated else None
    return _check(
        "fft_conv",
        {"shape": [B, H, L], "k_len": Lk, "gated": gated, "method": method},
        dtype,
        lambda u, k, d, g, pg: fft_conv(u, k, d, g, pg, backend="triton", method=method),
        fft_conv_reference,
        [u, k, d, g, pg],
    )


def check_m2_mixer(B, L, D, residual, dtype, device, fft_precision="auto") -> dict[str, Any]:
    """M2's fused gated long-convolution block (inference only: forward error, no grads);
    fft_precision as in `gated_long_conv` (the float16 pipeline: tolerance at least 1e-2)."""
    z = torch.randn(B, L, 3 * D, device=device, dtype=dtype)
    h = torch.randn(B, L, D, device=device, dtype=dtype)
    k1 = torch.randn(D, 2 * L, device=device) / math.sqrt(L)
    k2 = torch.randn(D, 2 * L, device=device) / math.sqrt(L) if residual else None
    d1 = torch.randn(D, device=device)
    d2 = torch.randn(D, device=device) if residual else None
    w, b = torch.randn(3 * D, 1, 3, device=device), torch.randn(3 * D, device=device)
    spectra = filter_spectra([k1] + ([k2] if residual else []), L)
    out = gated_long_conv(z, h, spectra, d1, d2, w, b, "triton", fft_precision=fft_precision)
    ref = gated_long_conv_reference(
        z.double(), h.double(), k1.double(), d1.double(),
        None if k2 is None else k2.double(), None if d2 is None else d2.double(),
        w.double(), b.double(),
    )  # fmt: skip
    fft = fft_signal_dtype(fft_precision, dtype, device, L)
    fwd, tol = _rel(out, ref), tolerance(dtype)
    tol = max(tol, 1e-2) if fft == torch.float16 else tol
    return {
        "kernel": "m2_mixer", "shape": [B, L, D], "residual": residual,
        "fft": str(fft).replace("torch.", ""),
        "dtype": str(dtype).replace("torch.", ""), "fwd_rel_err": fwd, "grad_rel_err": 0.0,
        "grad_rel_errs": [], "tol": tol, "ok": bool(fwd <= tol and out.dtype == dtype),
    }  # fmt: skip


def _forward_row(name: str, params: dict, dtype, out, ref, tol: float) -> dict[str, Any]:
    """A forward-only check's row (inference kernels: no gradients)."""
    fwd = _rel(out, ref)
    return {
        "kernel": name, **params, "dtype": str(dtype).replace("torch.", ""),
        "fwd_rel_err": fwd, "grad_rel_err": 0.0, "grad_rel_errs": [], "tol": tol,
        "ok": bool(fwd <= tol),
    }  # fmt: skip


def check_la_parallel(B, H, N, D, E, dtype, device) -> dict[str, Any]:
    """The quadratic causal Taylor form (inference) against the float64 reference."""
    q, k = (torch.randn(B, H, N, D, device=device, dtype=dtype) for _ in range(2))
    v = torch.randn(B, H, N, E, device=device, dtype=dtype)
    out = taylor_causal_parallel(q, k, v)
    ref = linear_attention_reference(q.double(), k.double(), v.double(), "taylor", causal=True)
    params = {"shape": [B, H, N, D, E]}
    return _forward_row("la_parallel", params, dtype, out, ref, tolerance(dtype))


def check_bert_ops(lengths: list[int], n: int, dtype, device) -> list[dict[str, Any]]:
    """Packed BERT glue (embeddings + LayerNorm, LayerNorm, mean pooling) vs float64."""
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=device, dtype=torch.int32)
    total, vocab = int(cu[-1]), 97
    ids = torch.randint(0, vocab, (total,), device=device)
    word, pos = (torch.randn(r, n, device=device, dtype=dtype) for r in (vocab, max(lengths)))
    type0, w, b = (torch.randn(n, device=device, dtype=dtype) for _ in range(3))
    x = torch.randn(total, n, device=device, dtype=dtype)
    params = {"shape": [len(lengths), total, n]}
    dbl = [t.double() for t in (word, pos, type0, w, b)]
    tol = tolerance(dtype)
    rows = [
        _forward_row("bert_embed_ln", params, dtype,
                     embed_layernorm(ids, cu, max(lengths), word, pos, type0, w, b, 1e-12),
                     embed_layernorm_reference(ids, cu, *dbl, 1e-12), tol),
        _forward_row("bert_layer_norm", params, dtype, layer_norm(x, w, b, 1e-12),
                     torch.nn.functional.layer_norm(x.double(), (n,), dbl[3], dbl[4], 1e-12), tol),
    ]  # fmt: skip
    for norm in (False, True):
        got, want = segment_mean(x, cu, norm), segment_mean_reference(x.double(), cu, norm)
        rows.append(_forward_row("bert_mean", {**params, "normalize": norm}, dtype, got, want, tol))
    return rows


KERNELS = (
    "linear_attention",
    "linear_attention_bwd",
    "linear_attention_parallel",
    "sliding_window_attention",
    "monarch_matmul",
    "fft_conv",
    "m2_mixer",
    "bert_ops",
)


def grid_la_backward(size: str, dtypes: list[torch.dtype], device: str) -> list[dict[str, Any]]:
    """Fused Taylor backward, causal and non-causal: N not a multiple of the row block, e not
    a multiple of the value-column block, several sequence splits, padding masks; on a GPU
    also large keys (a key state past float16's range; the interpreter: the tests)."""
    tiny = size == "tiny"
    shapes = [(1, 2, 37, 16, 24), (2, 1, 70, 8, 40)] if tiny else [
        (1, 2, 4097, 16, 64), (2, 12, 1000, 16, 64), (1, 3, 333, 16, 100), (2, 2, 2049, 8, 48)]  # fmt: skip
    res = []
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(shapes):
            if tiny and i > 0 and dtype != torch.float32:
                continue
            for causal in (False, True):
                res.append(check_linear_attention_backward(B, H, N, D, E, causal, dtype, device))
        B, H, N, D, E = shapes[0]
        res.append(check_linear_attention_backward(2, H, N, D, E, False, dtype, device, True))
        if not tiny and dtype != torch.float32:  # large keys: S2 ~ 4e5 > 65504 (non-causal)
            for B, H, N, c, ks in [(2, 12, 4097, False, 24.0), (1, 2, 2049, True, 8.0)]:
                row = check_linear_attention_backward(B, H, N, 16, 64, c, dtype, device, k_scale=ks)
                res.append(row)
    return res


def grid(
    size: str, dtypes: list[torch.dtype], device: str, kernels: tuple[str, ...] = KERNELS
) -> list[dict[str, Any]]:
    """Run the checks of `kernels`; size 'tiny' (interpreter) or 'gpu' (larger, odd shapes)."""
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}; choose from {KERNELS}")
    torch.manual_seed(0)
    res = []
    if "linear_attention_bwd" in kernels:
        res += grid_la_backward(size, dtypes, device)
        torch.manual_seed(0)
    tiny = size == "tiny"
    la_shapes = [(1, 2, 37, 16, 24), (2, 1, 70, 8, 16)] if tiny else [
        (1, 3, 1000, 16, 64), (2, 12, 4097, 16, 64), (1, 2, 333, 16, 48)]  # fmt: skip
    swa_shapes = [(1, 2, 37, 24, 5), (2, 1, 50, 16, 16)] if tiny else [
        (2, 4, 1000, 64, 64), (1, 3, 4099, 64, 127), (1, 2, 77, 48, 200)]  # fmt: skip
    mon_shapes = (
        [(7, 4), (5, 16), (9, 5)] if tiny else [(1000, 16), (4097, 32), (333, 64), (100, 24)]
    )
    fft_shapes = [
        (2, 3, 7, 7, "cufft"), (1, 2, 33, 66, "cufft"), (2, 2, 20, 9, "cufft"),
        (2, 3, 256, 256, "monarch"), (1, 2, 200, 150, "monarch"), (1, 2, 256, 512, "monarch"),
    ] if tiny else [
        (2, 16, 1000, 1000, "monarch"), (1, 8, 4096, 8192, "monarch"),
        (3, 5, 777, 300, "monarch"), (2, 4, 8192, 8192, "monarch"), (1, 8, 4096, 8192, "cufft"),
        (3, 5, 777, 300, "cufft"), (2, 2, 20000, 20000, "cufft"),
    ]  # fmt: skip
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(la_shapes if "linear_attention" in kernels else []):
            for fm in ("taylor", "hedgehog"):
                for causal in (False, True):
                    if tiny and i > 0 and (causal or dtype != torch.float32):
                        continue
                    res.append(check_linear_attention(B, H, N, D, E, fm, causal, dtype, device))
        B, H, N, D, E = la_shapes[0]
        for fm in ("taylor", "hedgehog") if "linear_attention" in kernels else ():
            res.append(check_linear_attention(2, H, N, D, E, fm, False, dtype, device, masked=True))
        if "sliding_window_attention" in kernels:
            for B, H, N, D, W in swa_shapes:
                for causal in (True, False):
                    res.append(check_sliding_window(B, H, N, D, W, causal, dtype, device))
            B, H, N, D, W = swa_shapes[0]
            res.append(check_sliding_window(2, H, N, D, W, False, dtype, device, masked=True))
        for M, m in mon_shapes if "monarch_matmul" in kernels else ():
            res.append(check_monarch(M, m, dtype, device))
        if "fft_conv" in kernels:
            for B, H, L, Lk, method in fft_shapes:
                res.append(check_fft_conv(B, H, L, Lk, True, dtype, device, method))
            res.append(check_fft_conv(1, 4, 31, 31, False, dtype, device))
        if "m2_mixer" in kernels:
            m2_shapes = [(2, 37, 24, True), (1, 20, 16, False)] if tiny else [
                (2, 2048, 768, True), (1, 8192, 768, True), (3, 1000, 96, False)]  # fmt: skip
            for B, L, D, residual in m2_shapes:
                res.append(check_m2_mixer(B, L, D, residual, dtype, device))
            if not tiny:  # "auto" took float16 FFTs for the 16-bit dtypes at 2048 and 8192
                other = "float16" if dtype == torch.float32 else "float32"
                for B, L, D, residual in [(2, 2048, 768, True), (1, 4096, 64, False)]:
                    res.append(check_m2_mixer(B, L, D, residual, dtype, device, other))
        if "linear_attention_parallel" in kernels:
            for B, H, N, D, E in [(2, 3, 37, 16, 24), (1, 2, 130, 8, 64)] if tiny else [
                    (8, 12, 1000, 16, 64), (1, 3, 4096, 16, 64), (2, 2, 333, 16, 48)]:  # fmt: skip
                res.append(check_la_parallel(B, H, N, D, E, dtype, device))
        if "bert_ops" in kernels:
            for lengths, n in [([5, 1, 0, 17], 40)] if tiny else [
                    ([128, 1, 0, 256, 77] * 40, 384), ([512, 3], 768)]:  # fmt: skip
                res += check_bert_ops(lengths, n, dtype, device)
    if "linear_attention" in kernels:
        torch.manual_seed(1)
        res += grid_la_taylor_forward(size, dtypes, device)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default=None, help="tiny | gpu (default: tiny on cpu)")
    ap.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16")
    ap.add_argument(
        "--kernels", default=",".join(KERNELS), help=f"comma list of {','.join(KERNELS)}"
    )
    args = ap.parse_args()
    size = args.size or ("gpu" if args.device.startswith("cuda") else "tiny")
    # numpy (the interpreter) has no bfloat16: bf16 is checked on the GPU only
    default = "fp32,fp16,bf16" if args.device.startswith("cuda") else "fp32,fp16"
    dtypes = [DTYPES[d] for d in (args.dtypes or default).split(",")]
    for row in grid(size, dtypes, args.device, tuple(args.kernels.split(","))):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
