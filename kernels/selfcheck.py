"""Kernel-vs-reference checks (forward and gradients) over a grid of shapes and dtypes.

Used by the tests (in Triton's interpreter, tiny shapes) and by benchmarks/kernels.py on a
GPU. Errors are ||out - ref|| / ||ref|| against a float64 reference on the same inputs.
Run as `python -m kernels.selfcheck [--device cuda] [--jobs N]`; prints one JSON object per line
and exits 0 when every check passes, 3 when one fails (1 on an error).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from kernels.fftconv import fft_conv
from kernels.half_fft import fft_signal_dtype
from kernels.linear_attn import linear_attention
from kernels.monarch import monarch_matmul
from kernels.reference import (
    fft_conv_reference,
    linear_attention_reference,
    monarch_matmul_reference,
    sliding_window_attention_reference,
)
from kernels.selfcheck_forward import (
    check_bert_ops,
    check_la_parallel,
    check_linear_attention_range,
    check_m2_mixer,
    grid_la_parallel_backward,
    rel_error,
    tolerance,
)
from kernels.selfcheck_jobs import CHECK_FAILED, all_ok, run_units, unit_command
from kernels.sliding_window import sliding_window_attention

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check(
    name: str,
    params: dict[str, Any],
    dtype: torch.dtype,
    fn: Callable[..., torch.Tensor],
    ref: Callable[..., torch.Tensor],
    inputs: list[torch.Tensor | None],
    tol: float | None = None,
) -> dict[str, Any]:
    """Compare fn (kernel path, inputs in dtype) with ref on float64 copies: output and grads
    (tol: the forward bound, `tolerance(dtype)` unless given; gradients get twice it)."""
    ins = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*ins)
    ref_ins = [t.detach().double().requires_grad_(True) if t is not None else None for t in inputs]
    ref_out = ref(*ref_ins)
    grad = torch.randn_like(ref_out)
    out.backward(grad.to(out.dtype))
    ref_out.backward(grad)
    fwd = rel_error(out, ref_out)
    grads = [rel_error(a.grad, b.grad) for a, b in zip(ins, ref_ins) if a is not None]
    tol = tolerance(dtype) if tol is None else tol
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


def grid_la_taylor_forward(size: str, dtypes: list[torch.dtype], device: str) -> Iterator[dict]:
    """The non-causal Taylor forward (kernels/linear_attn_fwd.py): several state splits and
    output runs with a ragged last one, B=1 and B>1, head and value dims padded to the block,
    padding masks, and a key state past float16's range (forward only)."""
    tiny = size == "tiny"
    shapes = [(1, 3, 100, 16, 64), (3, 2, 77, 4, 40)] if tiny else [
        (1, 12, 2049, 16, 64), (8, 12, 8192, 16, 64), (3, 2, 777, 4, 40)]  # fmt: skip
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(shapes):
            for masked in (False, True):
                if tiny and masked != bool(i):  # interpreter time: one mask case per shape
                    continue
                row = check_linear_attention(B, H, N, D, E, "taylor", False, dtype, device,
                                             masked=masked)  # fmt: skip
                yield row
        if dtype != torch.float32:
            B, H, N = (1, 1, 1024) if tiny else (2, 12, 65536)
            yield check_linear_attention_range(B, H, N, 16, 64, dtype, device)


def check_linear_attention_backward(
    B, H, N, D, E, causal, dtype, device, masked=False, k_scale=None, v_mean=None
) -> dict[str, Any]:
    """Taylor map: the fused Triton backward (no reference recompute; non-causal with d <= 16:
    kernels/linear_attn_bwd_noncausal.py) against float64 autograd of the reference;
    grad_rel_errs are (dq, dk, dv). k_scale: keys ~ N(0, k_scale^2), values ~ 1 + 0.1 N(0, 1)
    (a key state past float16's range, as in `check_..._range`); v_mean: values ~ v_mean +
    N(0, 1) (S g and z (g . out), S v and dS mu nearly cancel: the backward centres them)."""
    if k_scale is None and v_mean is None:
        row = check_linear_attention(B, H, N, D, E, "taylor", causal, dtype, device, masked=masked)
    else:
        q, k, v = (torch.randn(B, H, N, n, device=device) for n in (D, D, E))
        k, v = (k * k_scale, 1 + 0.1 * v) if k_scale is not None else (k, v_mean + v)
        params = {"feature_map": "taylor", "causal": causal, "shape": [B, H, N, D, E],
                  "key_mask": False, "k_scale": k_scale, "v_mean": v_mean}  # fmt: skip
        row = _check("linear_attention", params, dtype,
                     lambda q, k, v: linear_attention(q, k, v, "taylor", causal, backend="triton"),
                     lambda q, k, v: linear_attention_reference(q, k, v, "taylor", causal),
                     [q.to(dtype), k.to(dtype), v.to(dtype)])  # fmt: skip
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


def check_fft_conv(
    B, H, L, Lk, gated, dtype, device, method="auto", fft_precision="auto", per_batch_k=False,
    u_scale=1.0,
) -> dict[str, Any]:  # fmt: skip
    """fft_conv vs float64: fft_precision as in `fft_conv` (float16 FFTs: tolerance at least
    1e-2); per_batch_k: (B, H, Lk) filters instead of shared (H, Lk); u_scale multiplies u."""
    u = (torch.randn(B, H, L, device=device) * u_scale).to(dtype)
    k = torch.randn(*((B,) if per_batch_k else ()), H, Lk, device=device) / math.sqrt(Lk)
    d = torch.randn(H, device=device)
    g = torch.randn(B, H, L, device=device, dtype=dtype) if gated else None
    pg = torch.randn(B, H, L, device=device, dtype=dtype) if gated else None
    fft = fft_signal_dtype(fft_precision, dtype, device, L)
    if method == "monarch" or fft_precision == "auto":  # monarch: float32; "auto" too here,
        fft = torch.float32  # as the check takes gradients (fft_conv keeps training in float32)
    tol = max(tolerance(dtype), 1e-2) if fft == torch.float16 else tolerance(dtype)
    return _check(
        "fft_conv",
        {"shape": [B, H, L], "k_len": Lk, "gated": gated, "method": method,
         "fft": str(fft).replace("torch.", ""), "per_batch_k": per_batch_k, "u_scale": u_scale},
        dtype,
        lambda u, k, d, g, pg: fft_conv(u, k, d, g, pg, backend="triton", method=method,
                                        fft_precision=fft_precision),
        fft_conv_reference,
        [u, k, d, g, pg],
        tol,
    )  # fmt: skip


def grid_fft_conv_precision(dtype: torch.dtype, device: str) -> Iterator[dict[str, Any]]:
    """GPU only (cuFFT's half transforms): float16 FFTs on causal, bidirectional and
    per-batch filters up to 32k, and a 16x input (the grid's "auto" rows compute in float32:
    the checks take gradients, and fft_conv keeps float32 FFTs for training)."""
    for B, H, L, Lk, per_batch, scale in [
        (2, 16, 4096, 8192, False, 1.0), (1, 8, 32768, 32768, False, 1.0),
        (2, 4, 8192, 8192, True, 1.0), (2, 4, 8192, 300, True, 1.0),
        (1, 4, 32768, 65536, False, 16.0),
    ]:  # fmt: skip
        yield check_fft_conv(B, H, L, Lk, True, dtype, device, "cufft", "float16", per_batch,
                             scale)  # fmt: skip
    yield check_fft_conv(2, 8, 2048, 4096, False, dtype, device, "cufft", "float16")


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


def grid_la_backward(size: str, dtypes: list[torch.dtype], device: str) -> Iterator[dict[str, Any]]:
    """Fused Taylor backward, causal and non-causal (d <= 16: the tensor-core kernels): N not a
    multiple of the row block, e not a power of two, several runs / sequence splits, d 4, 8 and
    16, B and H > 1, padding masks, values of mean 10, and keys so large that the key state
    passes float16's range (16-bit only)."""
    tiny = size == "tiny"
    shapes = [(1, 2, 37, 16, 24), (2, 1, 70, 8, 40)] if tiny else [
        (1, 2, 4097, 16, 64), (2, 12, 1000, 16, 64), (1, 3, 333, 16, 100), (2, 2, 2049, 8, 48)]  # fmt: skip
    for dtype in dtypes:
        for i, (B, H, N, D, E) in enumerate(shapes):
            if tiny and i > 0 and dtype != torch.float32:
                continue
            for causal in (False, True):
                yield check_linear_attention_backward(B, H, N, D, E, causal, dtype, device)
        B, H, N, D, E = shapes[0]
        yield check_linear_attention_backward(2, H, N, D, E, False, dtype, device, True)
        # non-causal: d 4, e 100, B and H > 1; values of mean 10; large keys
        B, H, N = (2, 3, 45) if tiny else (2, 3, 1000)
        yield check_linear_attention_backward(B, H, N, 4, 100, False, dtype, device)
        B, H, N, E = (1, 2, 100, 24) if tiny else (2, 12, 4097, 64)
        yield check_linear_attention_backward(B, H, N, 16, E, False, dtype, device, v_mean=10.0)
        if dtype == torch.float32:
            continue
        if tiny:  # keys ~ 60, N=128: S2 ~ 8e4 > 65504
            yield check_linear_attention_backward(
                1, 2, 128, 16, 40, False, dtype, device, k_scale=60.0
            )
        else:  # S2 ~ 4e5 > 65504 (non-causal)
            for B, H, N, c, ks in [(2, 12, 4097, False, 24.0), (1, 2, 2049, True, 8.0)]:
                row = check_linear_attention_backward(B, H, N, 16, 64, c, dtype, device, k_scale=ks)
                yield row


def grid(
    size: str, dtypes: list[torch.dtype], device: str, kernels: tuple[str, ...] = KERNELS
) -> Iterator[dict[str, Any]]:
    """The checks of `kernels`, one row each as it completes (a generator, so that a run cut
    short keeps what it checked); size 'tiny' (interpreter) or 'gpu' (larger, odd shapes)."""
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}; choose from {KERNELS}")
    torch.manual_seed(0)
    if "linear_attention_bwd" in kernels:
        yield from grid_la_backward(size, dtypes, device)
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
                    yield check_linear_attention(B, H, N, D, E, fm, causal, dtype, device)
        B, H, N, D, E = la_shapes[0]
        for fm in ("taylor", "hedgehog") if "linear_attention" in kernels else ():
            yield check_linear_attention(2, H, N, D, E, fm, False, dtype, device, masked=True)
        if "sliding_window_attention" in kernels:
            for B, H, N, D, W in swa_shapes:
                for causal in (True, False):
                    yield check_sliding_window(B, H, N, D, W, causal, dtype, device)
            B, H, N, D, W = swa_shapes[0]
            yield check_sliding_window(2, H, N, D, W, False, dtype, device, masked=True)
        for M, m in mon_shapes if "monarch_matmul" in kernels else ():
            yield check_monarch(M, m, dtype, device)
        if "fft_conv" in kernels:
            for B, H, L, Lk, method in fft_shapes:
                yield check_fft_conv(B, H, L, Lk, True, dtype, device, method)
            yield check_fft_conv(1, 4, 31, 31, False, dtype, device)
            if not tiny:
                yield from grid_fft_conv_precision(dtype, device)
        if "m2_mixer" in kernels:
            m2_shapes = [(2, 37, 24, True), (1, 20, 16, False)] if tiny else [
                (2, 2048, 768, True), (1, 8192, 768, True), (3, 1000, 96, False)]  # fmt: skip
            for B, L, D, residual in m2_shapes:
                yield check_m2_mixer(B, L, D, residual, dtype, device)
            if not tiny:  # "auto" took float16 FFTs for the 16-bit dtypes at 2048 and 8192
                other = "float16" if dtype == torch.float32 else "float32"
                for B, L, D, residual in [(2, 2048, 768, True), (1, 4096, 64, False)]:
                    yield check_m2_mixer(B, L, D, residual, dtype, device, other)
        if "linear_attention_parallel" in kernels:
            for B, H, N, D, E in [(2, 3, 37, 16, 24), (1, 2, 130, 8, 64)] if tiny else [
                    (8, 12, 1000, 16, 64), (1, 3, 4096, 16, 64), (2, 2, 333, 16, 48)]:  # fmt: skip
                yield check_la_parallel(B, H, N, D, E, dtype, device)
        if "bert_ops" in kernels:
            for lengths, n in [([5, 1, 0, 17], 40)] if tiny else [
                    ([128, 1, 0, 256, 77] * 40, 384), ([512, 3], 768)]:  # fmt: skip
                yield from check_bert_ops(lengths, n, dtype, device)
    if "linear_attention" in kernels:
        torch.manual_seed(1)
        yield from grid_la_taylor_forward(size, dtypes, device)
    if "linear_attention_parallel" in kernels:  # its training path (forward + backward)
        yield from grid_la_parallel_backward(size, dtypes, device)


def main() -> int:
    """The CLI; returns the exit status (0: every check passed, CHECK_FAILED: one failed)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default=None, help="tiny | gpu (default: tiny on cpu)")
    ap.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16")
    ap.add_argument(
        "--kernels", default=",".join(KERNELS), help=f"comma list of {','.join(KERNELS)}"
    )
    ap.add_argument(
        "--jobs", type=int, default=1,
        help="run the grid as units (one kernel group and dtype each) in this many processes at "
        "once; rows print as each unit ends (kernels/selfcheck_jobs.py)",
    )  # fmt: skip
    args = ap.parse_args()
    size = args.size or ("gpu" if args.device.startswith("cuda") else "tiny")
    # numpy (the interpreter) has no bfloat16: bf16 is checked on the GPU only
    default = "fp32,fp16,bf16" if args.device.startswith("cuda") else "fp32,fp16"
    names = (args.dtypes or default).split(",")
    kernels = tuple(args.kernels.split(","))
    for what, given, known in (("--dtypes", names, DTYPES), ("--kernels", kernels, KERNELS)):
        if set(given) - set(known):
            ap.error(
                f"{what}: unknown {sorted(set(given) - set(known))}; choose from {list(known)}"
            )
    t0 = time.perf_counter()

    def emit(row: dict[str, Any]) -> None:
        print(json.dumps({**row, "t_s": round(time.perf_counter() - t0, 1)}), flush=True)

    if args.jobs > 1:
        units = {(k, d): unit_command((k, d), args.device, size) for k in kernels for d in names}
        ok = run_units(units, args.jobs, emit, lambda line: print(line, file=sys.stderr))
    else:
        dtypes = [DTYPES[d] for d in names]
        ok = all_ok(grid(size, dtypes, args.device, kernels), emit)
    return 0 if ok else CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
