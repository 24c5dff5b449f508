"""Forward-only checks of the inference kernels, and the error measure every check uses.

Part of `kernels.selfcheck` (which runs them in its grid): the M2 mixer (float32 and
half-precision FFTs), the quadratic causal Taylor form, the packed BERT glue, and the
non-causal Taylor forward on large keys (float16 range). Each compares the kernel with a
float64 reference on the same inputs and returns one row (dict) per case. Also the quadratic
causal form's training path (`check_la_parallel_backward`: forward and gradients).
"""

from __future__ import annotations

import itertools
import math
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
from kernels.linear_attn import linear_attention
from kernels.linear_attn_parallel import taylor_causal_parallel
from kernels.linear_attn_parallel_bwd import taylor_causal_parallel_train
from kernels.m2_mixer import (
    fft_signal_dtype,
    filter_spectra,
    gated_long_conv,
    gated_long_conv_reference,
)
from kernels.reference import linear_attention_reference


def tolerance(dtype: torch.dtype) -> float:
    """Relative-error bound: fp32 exact in the interpreter, tf32 dots on a GPU; 16-bit I/O."""
    if dtype == torch.float32:
        return 1e-5 if interpret_mode() else 5e-3
    return 1e-2 if dtype == torch.float16 else 4e-2


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; inf if a has a non-finite value."""
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


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
    fwd, tol = rel_error(out, ref), tolerance(dtype)
    return {
        "kernel": "linear_attention_range", "feature_map": "taylor", "causal": False,
        "shape": [B, H, N, D, E], "k_scale": k_scale, "v_mean": v_mean, "key_mask": False,
        "dtype": str(dtype).replace("torch.", ""), "fwd_rel_err": fwd, "grad_rel_err": 0.0,
        "grad_rel_errs": [], "tol": tol, "ok": bool(fwd <= tol and out.dtype == dtype),
    }  # fmt: skip


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
    fwd, tol = rel_error(out, ref), tolerance(dtype)
    tol = max(tol, 1e-2) if fft == torch.float16 else tol
    return {
        "kernel": "m2_mixer", "shape": [B, L, D], "residual": residual,
        "fft": str(fft).replace("torch.", ""),
        "dtype": str(dtype).replace("torch.", ""), "fwd_rel_err": fwd, "grad_rel_err": 0.0,
        "grad_rel_errs": [], "tol": tol, "ok": bool(fwd <= tol and out.dtype == dtype),
    }  # fmt: skip


def forward_row(name: str, params: dict, dtype, out, ref, tol: float) -> dict[str, Any]:
    """A forward-only check's row (inference kernels: no gradients)."""
    fwd = rel_error(out, ref)
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
    return forward_row("la_parallel", params, dtype, out, ref, tolerance(dtype))


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
        forward_row("bert_embed_ln", params, dtype,
                     embed_layernorm(ids, cu, max(lengths), word, pos, type0, w, b, 1e-12),
                     embed_layernorm_reference(ids, cu, *dbl, 1e-12), tol),
        forward_row("bert_layer_norm", params, dtype, layer_norm(x, w, b, 1e-12),
                     torch.nn.functional.layer_norm(x.double(), (n,), dbl[3], dbl[4], 1e-12), tol),
    ]  # fmt: skip
    for norm in (False, True):
        got, want = segment_mean(x, cu, norm), segment_mean_reference(x.double(), cu, norm)
        rows.append(forward_row("bert_mean", {**params, "normalize": norm}, dtype, got, want, tol))
    return rows


def check_la_parallel_backward(
    B, H, N, D, E, dtype, device, k_scale=None, v_mean=None, g_scale=1.0
) -> dict[str, Any]:
    """The quadratic causal Taylor form's training path (`taylor_causal_parallel_train`,
    kernels/linear_attn_parallel_bwd.py) against float64 autograd of the reference on the same
    (dtype-rounded) inputs: forward error and grad_rel_errs (dq, dk, dv), the gradients held
    to twice the forward's tolerance (as `kernels.selfcheck`'s checks). k_scale: keys ~
    N(0, k_scale^2); v_mean: values ~ v_mean + N(0, 1); g_scale: the upstream gradient's
    scale (products past float16's range unless the backward scales its operands)."""
    q, k, v = (torch.randn(B, H, N, n, device=device) for n in (D, D, E))
    k = k * k_scale if k_scale is not None else k
    v = v + v_mean if v_mean is not None else v
    ins = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    out = taylor_causal_parallel_train(*ins)
    ref = linear_attention_reference(*ref_ins, "taylor", causal=True)
    grad = torch.randn_like(ref) * g_scale
    out.backward(grad.to(dtype))
    ref.backward(grad.to(dtype).double())
    fwd, tol = rel_error(out, ref), tolerance(dtype)
    grads = [rel_error(a.grad, b.grad) for a, b in zip(ins, ref_ins)]
    same_dtype = out.dtype == dtype and all(t.grad.dtype == dtype for t in ins)
    return {
        "kernel": "la_parallel_bwd", "shape": [B, H, N, D, E], "k_scale": k_scale,
        "v_mean": v_mean, "g_scale": g_scale, "dtype": str(dtype).replace("torch.", ""),
        "fwd_rel_err": fwd, "grad_rel_err": max(grads), "grad_rel_errs": grads, "tol": tol,
        "ok": bool(fwd <= tol and all(g <= 2 * tol for g in grads) and same_dtype),
    }  # fmt: skip


def grid_la_parallel_backward(size: str, dtypes: list[torch.dtype], device: str):
    """`check_la_parallel_backward` rows: N not a multiple of the block and below one block,
    d 4, 8, 16, e 24, 40, 100 (not powers of two), B and H > 1, values of mean 10; 16-bit also
    large keys and, float16, an upstream gradient whose products leave float16's range
    unscaled. size 'tiny' (interpreter, blocks of 16) or 'gpu' (blocks of 32 to 128)."""
    tiny = size == "tiny"
    shapes = [(2, 3, 37, 16, 24), (1, 2, 11, 8, 40), (2, 2, 45, 4, 100)] if tiny else [
        (8, 12, 1000, 16, 64), (1, 3, 4097, 16, 64), (2, 2, 333, 8, 100), (2, 3, 77, 4, 40),
        (1, 2, 100, 16, 24)]  # fmt: skip
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(shapes):
            if tiny and i == 2 and dtype != torch.float32:
                continue
            yield check_la_parallel_backward(B, H, N, D, E, dtype, device)
        B, H, N = (1, 2, 100) if tiny else (2, 4, 4096)
        yield check_la_parallel_backward(
            B, H, N, 16, 24 if tiny else 64, dtype, device, v_mean=10.0
        )
        if dtype != torch.float32:
            B, H, N = (1, 2, 96) if tiny else (1, 4, 2049)
            yield check_la_parallel_backward(B, H, N, 16, 40, dtype, device, k_scale=24.0)
        if dtype == torch.float16:  # dq's products past 65504 unless scaled
            B, H, N = (1, 2, 64) if tiny else (2, 2, 1000)
            yield check_la_parallel_backward(B, H, N, 16, 40, dtype, device, v_mean=10.0,
                                             g_scale=3e3)  # fmt: skip
