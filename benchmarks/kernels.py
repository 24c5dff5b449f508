# ruff: noqa: B023  (lambdas are timed inside the iteration that defines them)
"""Benchmark the kernels against their peers, in one run, and check them against references.

  python benchmarks/kernels.py --quick                 # CPU, < 1 min: reference paths only
  python benchmarks/kernels.py --device cuda           # GPU: correctness grid + timings
  python benchmarks/kernels.py --device cuda --sections la,monarch --out-dir $OUT
  python benchmarks/kernels.py --device cuda --sections la_tune,la_train   # fwd + fused bwd

Peers (same run): linear attention vs PyTorch SDPA (flash backend, exact softmax), the plain
PyTorch linear-attention reference, and fla (flash-linear-attention's BASED kernels, causal
only) when importable; sliding-window vs SDPA flash (full causal) and the blocked reference;
Monarch vs two torch.bmm with explicit permutes (M2's path) and a dense torch.matmul;
fft_conv (default "auto" FFT precision: float16 for bf16 inputs; and float32) vs M2's
torch.fft reference. Timings: triton.testing.do_bench medians on GPU.
Writes benchmarks/results/kernels-<device>.json (and a copy into --out-dir).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, device_name, print_table  # noqa: E402
from kernels import (  # noqa: E402
    fft_conv,
    fft_conv_reference,
    linear_attention,
    linear_attention_reference,
    monarch_matmul,
    monarch_matmul_bmm,
    sliding_window_attention,
    sliding_window_attention_reference,
)
from kernels import fftconv as _fft_mod  # noqa: E402
from kernels import linear_attn as _la_mod  # noqa: E402
from kernels import linear_attn_bwd as _la_bwd_mod  # noqa: E402
from kernels import monarch as _mon_mod  # noqa: E402
from kernels.half_fft import fft_signal_dtype  # noqa: E402

LOG: list[str] = []


def log(msg: str) -> None:
    print(msg, flush=True)
    LOG.append(msg)


def bench(fn, device: str, rep_ms: int = 200) -> float:
    """Median milliseconds of fn()."""
    if device.startswith("cuda"):
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[1]


def safe(fn, *a, **kw):
    """Run fn; on failure return the error text (an OOM or compile error must not stop the run)."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def ceilings(device: str) -> dict[str, float]:
    """Measured HBM bandwidth (copy, read+write bytes) and bf16 matmul rate."""
    if not device.startswith("cuda"):
        return {}
    x = torch.randn(2**28, device=device, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    t = bench(lambda: y.copy_(x), device)
    bw = 2 * x.numel() * 2 / (t * 1e-3)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    t = bench(lambda: a @ b, device)
    mm = 2 * 8192**3 / (t * 1e-3)
    torch.cuda.empty_cache()
    return {"hbm_bytes_per_s": bw, "bf16_flops_per_s": mm}


def roofline(flops: float, nbytes: float, ms: float, ceil: dict[str, float]) -> dict[str, float]:
    if not ceil:
        return {}
    floor_ms = max(flops / ceil["bf16_flops_per_s"], nbytes / ceil["hbm_bytes_per_s"]) * 1e3
    return {"roofline_ms": floor_ms, "roofline_frac": floor_ms / ms}


def sweep(config: dict, configs: list[dict], fn, ref, device: str, tol: float = 2e-2):
    """Time fn under each config (updating `config` in place); keep the fastest correct one."""
    default = dict(config)
    rows, best = [], None
    for cfg in configs:
        config.update(cfg)
        t = safe(bench, fn, device)
        err = safe(lambda: rel_err(fn(), ref))
        rows.append({**cfg, "ms": t, "rel_err": err})
        if isinstance(t, float) and isinstance(err, float) and err < tol:
            if best is None or t < best[0]:
                best = (t, dict(cfg))
    config.clear()
    config.update(best[1] if best else default)
    return rows, (best[1] if best else None)


LA_STATE_CONFIGS = [
    {"BLOCK": b, "num_warps": w} for b, w in [(64, 8), (32, 4), (128, 8), (64, 4), (32, 8)]
]
LA_OUT_CONFIGS = [
    {"BLOCK": b, "num_warps": w} for b, w in [(64, 8), (32, 4), (128, 8), (64, 4), (32, 8)]
]
LA_BWD_CONFIGS = [
    {"BLOCK": b, "BLOCK_E": e, "num_warps": w}
    for b, e, w in [(32, 32, 8), (16, 32, 4), (32, 16, 4), (64, 32, 8), (16, 64, 4), (32, 32, 4)]
]
LA_CAUSAL_CONFIGS = [
    {"BLOCK": b, "num_warps": w, "BLOCK_E": e}
    for b, w, e in [(64, 8, 32), (32, 4, 32), (32, 4, 64), (16, 4, 32), (16, 4, 64), (64, 4, 32),
                    (32, 8, 64), (16, 2, 16), (32, 8, 32)]
]  # fmt: skip


def sec_la_tune(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    """Sweep the linear-attention launch settings at one size (B=8, H=12, N=16k, bf16)."""
    if not device.startswith("cuda"):
        return []
    B, H, N, d, e = 8, 12, 16384, 16, 64
    q = torch.randn(B, H, N, d, device=device, dtype=torch.bfloat16)
    k = torch.randn(B, H, N, d, device=device, dtype=torch.bfloat16)
    v = torch.randn(B, H, N, e, device=device, dtype=torch.bfloat16)
    out = []
    ref = linear_attention_reference(q, k, v, "taylor")
    for part, configs in (("state", LA_STATE_CONFIGS), ("out", LA_OUT_CONFIGS)):
        rows, best = sweep(
            _la_mod.CONFIG[part], configs, lambda: linear_attention(q, k, v), ref, device
        )
        out.append({"kernel": f"la_{part}", "best": best, "sweep": rows})
        log(json.dumps(out[-1]))
    ref = linear_attention_reference(q, k, v, "taylor", causal=True)
    rows, best = sweep(
        _la_mod.CONFIG["causal"],
        LA_CAUSAL_CONFIGS,
        lambda: linear_attention(q, k, v, causal=True),
        ref,
        device,
    )
    out.append({"kernel": "la_causal", "best": best, "sweep": rows})
    log(json.dumps(out[-1]))
    # fused backward (causal: the q kernel also rebuilds the running state), by fwd+bwd time
    g = torch.randn(B, H, N, e, device=device, dtype=torch.bfloat16)
    ins = tuple(t.requires_grad_() for t in (q, k, v))
    ours = _grads(lambda *x: linear_attention(*x, causal=True), ins, g, flat=True)
    ref = _grads(lambda *x: linear_attention_reference(*x, causal=True), ins, g, flat=True)()
    for part, configs in (
        ("q", LA_BWD_CONFIGS),
        ("state", LA_STATE_CONFIGS),
        ("kv", LA_BWD_CONFIGS),
    ):
        rows, best = sweep(_la_bwd_mod.CONFIG_BWD[part], configs, ours, ref, device, 4e-2)
        out.append({"kernel": f"la_bwd_{part}", "best": best, "sweep": rows})
        log(json.dumps(out[-1]))
    return out


def _grads(fn, ins, g, flat: bool = False):
    """A callable running forward + backward of fn(*ins) with upstream g (no .grad writes)."""

    def run():
        grads = torch.autograd.grad(fn(*ins), ins, g)
        return torch.cat([t.flatten() for t in grads]) if flat else grads

    return run


def fla_based() -> dict[str, tuple[Any, str]]:
    """fla's (flash-linear-attention) BASED kernels, name -> (fn, layout), or {} if absent.

    Older fla releases take (B, H, N, d) with head_first=True; newer ones (0.3+) take
    (B, N, H, d) only: layout "bhnd" or "bnhd" says which inputs a function gets.
    """
    try:
        from fla.ops.based import fused_chunk_based, parallel_based  # type: ignore
    except Exception as ex:  # noqa: BLE001
        log(f"fla (flash-linear-attention) not importable ({type(ex).__name__}); fla skipped")
        return {}
    out = {}
    for name, fn in (("parallel_based", parallel_based), ("fused_chunk_based", fused_chunk_based)):
        if "head_first" in inspect.signature(fn).parameters:
            out[name] = (lambda *x, fn=fn: fn(*x, head_first=True), "bhnd")
        else:
            out[name] = (fn, "bnhd")
    return out


def fla_inputs(layout: str, ins: tuple, g: torch.Tensor | None) -> tuple[tuple, Any]:
    """(inputs, output gradient) in fla's layout: new leaf tensors made outside the timing."""
    if layout == "bhnd":
        return ins, g

    def swap(t: torch.Tensor) -> torch.Tensor:
        return t.detach().transpose(1, 2).contiguous().requires_grad_(t.requires_grad)

    return tuple(swap(t) for t in ins), (swap(g) if g is not None else None)


def sec_la_train(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    """Taylor linear attention, forward and forward + backward (fused Triton backward), B in
    {1, 8}, against the PyTorch reference (autograd) and fla's BASED kernels (causal)."""
    cuda = device.startswith("cuda")
    dt = torch.bfloat16 if cuda else torch.float32
    H, d, e = (12, 16, 64) if not quick else (2, 16, 32)
    Ns = sizes or ([1024, 2048, 4096, 8192, 16384, 32768, 65536] if not quick else [256, 1024])
    Bs = [1, 8] if not quick else [1]
    ref_max = 8192 if cuda else 1024
    fla = fla_based()
    rows = []
    for B in Bs:
        for N in Ns:
            torch.manual_seed(0)
            q = torch.randn(B, H, N, d, device=device, dtype=dt, requires_grad=True)
            k = torch.randn(B, H, N, d, device=device, dtype=dt, requires_grad=True)
            v = torch.randn(B, H, N, e, device=device, dtype=dt, requires_grad=True)
            g = torch.randn(B, H, N, e, device=device, dtype=dt)
            ins = (q, k, v)
            row: dict[str, Any] = {"B": B, "H": H, "N": N, "d_qk": d, "d_v": e}
            for causal in (False, True):
                tag = "causal" if causal else "noncausal"
                impls = {"ours": (lambda *x: linear_attention(*x, "taylor", causal), ins, g)}
                if N <= ref_max:
                    impls["ref"] = (
                        lambda *x: linear_attention_reference(*x, "taylor", causal), ins, g
                    )  # fmt: skip
                if causal:
                    for name, (fn, layout) in fla.items():
                        if name != "parallel_based" or N <= 16384:  # quadratic in N
                            impls[f"fla_{name}"] = (fn, *fla_inputs(layout, ins, g))
                for name, (fn, args, grad) in impls.items():

                    def fwd(fn=fn, args=args):
                        with torch.no_grad():
                            return fn(*args)

                    row[f"{tag}_{name}_fwd_ms"] = safe(bench, fwd, device)
                    row[f"{tag}_{name}_fwdbwd_ms"] = safe(bench, _grads(fn, args, grad), device)
                # the forward that training runs (grad enabled: for causal inputs up to
                # PARALLEL_MAX_N inference takes the quadratic form, training the chunked one)
                row[f"{tag}_ours_train_fwd_ms"] = safe(
                    bench, lambda f=impls["ours"][0], a=ins: f(*a), device
                )
                f, fb = row[f"{tag}_ours_train_fwd_ms"], row[f"{tag}_ours_fwdbwd_ms"]
                if isinstance(f, float) and isinstance(fb, float):
                    row[f"{tag}_ours_bwd_over_fwd"] = (fb - f) / f
                for name in impls:
                    for p in ("fwd", "fwdbwd"):
                        theirs, mine = row.get(f"{tag}_{name}_{p}_ms"), row[f"{tag}_ours_{p}_ms"]
                        if name != "ours" and isinstance(theirs, float) and isinstance(mine, float):
                            row[f"{tag}_{p}_speedup_vs_{name}"] = theirs / mine
                if B == 1 and N == Ns[0]:  # gradients vs float64 autograd of the reference
                    ours = _grads(impls["ours"][0], ins, g)()
                    ex = tuple(t.detach().double().requires_grad_() for t in ins)
                    want = torch.autograd.grad(
                        linear_attention_reference(*ex, "taylor", causal), ex, g.double()
                    )
                    row[f"{tag}_grad_rel_err"] = max(rel_err(a, b) for a, b in zip(ours, want))
            rows.append(row)
            log(json.dumps(row))
            del q, k, v, g, ins
            if cuda:
                torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- sections
def sec_linear_attention(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    rows = []
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    B, H, d, e = (8, 12, 16, 64) if not quick else (1, 2, 16, 32)
    Ns = sizes or ([1024, 2048, 4096, 8192, 16384, 32768, 65536] if not quick else [256, 1024])
    fla = fla_based()
    F = 1 + d + d * d
    for N in Ns:
        torch.manual_seed(0)
        q = torch.randn(B, H, N, d, device=device, dtype=dt)
        k = torch.randn(B, H, N, d, device=device, dtype=dt)
        v = torch.randn(B, H, N, e, device=device, dtype=dt)
        row: dict[str, Any] = {"N": N, "B": B, "H": H, "d_qk": d, "d_v": e, "dtype": str(dt)[6:]}
        flops = 4.0 * B * H * N * F * e
        nbytes = B * H * N * (2 * d + 2 * e) * q.element_size()
        t = safe(bench, lambda: linear_attention(q, k, v, "taylor"), device)
        row["taylor_ms"] = t
        if isinstance(t, float):
            row["taylor_tflops"] = flops / (t * 1e-3) / 1e12
            row.update(roofline(flops, nbytes, t, ceil))
            out = linear_attention(q, k, v, "taylor")
            if N <= 16384:
                ref = linear_attention_reference(q[:1].double(), k[:1].double(), v[:1].double())
                row["rel_err_vs_fp64"] = rel_err(out[:1], ref)
        if N <= (32768 if device.startswith("cuda") else 1024):
            row["reference_ms"] = safe(
                bench, lambda: linear_attention_reference(q, k, v, "taylor"), device
            )
        if device.startswith("cuda"):
            qs, ks, vs = (torch.randn(B, H, N, 64, device=device, dtype=dt) for _ in range(3))
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def sdpa(qs=qs, ks=ks, vs=vs):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return torch.nn.functional.scaled_dot_product_attention(qs, ks, vs)

            t_s = safe(bench, sdpa, device, 100)
            row["sdpa_flash_ms"] = t_s
            if isinstance(t_s, float):
                row["sdpa_tflops"] = 4.0 * B * H * N * N * 64 / (t_s * 1e-3) / 1e12
            # causal variants: ours vs fla (BASED's own kernels) at the same shapes
            t_c = safe(bench, lambda: linear_attention(q, k, v, "taylor", causal=True), device)
            row["taylor_causal_ms"] = t_c
            for name, (fn, layout) in fla.items():
                if name == "parallel_based" and N > 16384:  # quadratic in N
                    continue
                args, _ = fla_inputs(layout, (q, k, v), None)
                short = name.replace("_based", "")
                row[f"fla_{short}_causal_ms"] = safe(bench, lambda fn=fn, a=args: fn(*a), device)
                if N == Ns[0] and name == "fused_chunk_based":
                    ours = linear_attention(q, k, v, "taylor", causal=True)
                    theirs = safe(fn, *args)
                    if isinstance(theirs, torch.Tensor):
                        theirs = theirs.transpose(1, 2) if layout == "bnhd" else theirs
                        row["fla_vs_ours_rel_diff"] = rel_err(theirs, ours)
        for key in ("reference_ms", "sdpa_flash_ms", "fla_fused_chunk_causal_ms"):
            base = "taylor_causal_ms" if key.startswith("fla") else "taylor_ms"
            if isinstance(row.get(key), float) and isinstance(row.get(base), float):
                row[f"speedup_vs_{key[:-3]}"] = row[key] / row[base]
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        rows.append(row)
        log(json.dumps(row))
    # Hedgehog (F=64 -> 128 features), one size
    N = Ns[-2] if len(Ns) > 1 else Ns[0]
    q = torch.randn(B, H, N, d, device=device, dtype=dt)
    k = torch.randn(B, H, N, d, device=device, dtype=dt)
    v = torch.randn(B, H, N, e, device=device, dtype=dt)
    w = (torch.randn(H, d, 64, device=device) / 4).to(dt)
    row = {"N": N, "feature_map": "hedgehog", "features": 128}
    row["hedgehog_ms"] = safe(
        bench, lambda: linear_attention(q, k, v, "hedgehog", hedgehog_weight=w), device
    )
    if N <= 32768:
        row["reference_ms"] = safe(
            bench,
            lambda: linear_attention_reference(q, k, v, "hedgehog", hedgehog_weight=w),
            device,
        )
    if isinstance(row.get("reference_ms"), float) and isinstance(row["hedgehog_ms"], float):
        row["speedup_vs_reference"] = row["reference_ms"] / row["hedgehog_ms"]
    rows.append(row)
    log(json.dumps(row))
    return rows


def sec_sliding_window(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    rows = []
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    B, H, D, W = (8, 12, 64, 64) if not quick else (1, 2, 32, 16)
    for N in sizes or ([4096, 16384, 32768] if not quick else [512]):
        q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dt) for _ in range(3))
        row: dict[str, Any] = {"N": N, "window": W, "dtype": str(dt)[6:]}
        t = safe(bench, lambda: sliding_window_attention(q, k, v, W), device)
        row["swa_ms"] = t
        flops = 4.0 * B * H * N * W * D / 2 * 2  # ~W keys per query (the causal band)
        if isinstance(t, float):
            row["swa_tflops"] = flops / (t * 1e-3) / 1e12
            row.update(roofline(flops, 4 * B * H * N * D * q.element_size(), t, ceil))
        row["reference_ms"] = safe(
            bench, lambda: sliding_window_attention_reference(q, k, v, W), device
        )
        if device.startswith("cuda"):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def sdpa():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

            row["sdpa_flash_causal_full_ms"] = safe(bench, sdpa, device, 100)
        for key in ("reference_ms", "sdpa_flash_causal_full_ms"):
            if isinstance(row.get(key), float) and isinstance(t, float):
                row[f"speedup_vs_{key[:-3]}"] = row[key] / t
        rows.append(row)
        log(json.dumps(row))
    return rows


MONARCH_CONFIGS = [
    {"BM": 16, "BL": 16, "KC": 16, "num_warps": 4, "num_stages": 2},
    {"BM": 16, "BL": 16, "KC": 16, "num_warps": 8, "num_stages": 2},
    {"BM": 32, "BL": 16, "KC": 16, "num_warps": 8, "num_stages": 2},
    {"BM": 16, "BL": 32, "KC": 16, "num_warps": 8, "num_stages": 2},
    {"BM": 32, "BL": 16, "KC": 32, "num_warps": 8, "num_stages": 1},
    {"BM": 64, "BL": 16, "KC": 16, "num_warps": 8, "num_stages": 2},
    {"BM": 32, "BL": 8, "KC": 16, "num_warps": 4, "num_stages": 2},
    {"BM": 64, "BL": 8, "KC": 16, "num_warps": 8, "num_stages": 2},
    {"BM": 32, "BL": 16, "KC": 16, "num_warps": 8, "num_stages": 1},
    {"BM": 16, "BL": 16, "KC": 32, "num_warps": 8, "num_stages": 1},
    {"BM": 64, "BL": 4, "KC": 16, "num_warps": 4, "num_stages": 2},
]


def sec_monarch(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    rows = []
    cuda = device.startswith("cuda")
    dt = torch.bfloat16 if cuda else torch.float32
    M = 16384 if not quick else 512
    for n in sizes or ([1024, 4096, 16384] if not quick else [256, 1024]):
        m = int(math.isqrt(n))
        x = torch.randn(M, n, device=device, dtype=dt)
        w1 = (torch.randn(m, m, m, device=device) / math.sqrt(m)).to(dt)
        w2 = (torch.randn(m, m, m, device=device) / math.sqrt(m)).to(dt)
        row: dict[str, Any] = {"M": M, "n": n, "nblocks": m, "dtype": str(dt)[6:]}
        flops = 4.0 * M * n * m
        nbytes = 2 * M * n * x.element_size() + 2 * m**3 * x.element_size()
        ref = monarch_matmul_bmm(x, w1, w2)
        best = None
        if cuda:
            default = dict(_mon_mod.CONFIG)
            sweep = []
            for cfg in MONARCH_CONFIGS:
                _mon_mod.CONFIG.update(cfg)
                t = safe(bench, lambda: monarch_matmul(x, w1, w2), device)
                err = safe(lambda: rel_err(monarch_matmul(x, w1, w2), ref))
                sweep.append({**cfg, "ms": t, "rel_err": err})
                if isinstance(t, float) and isinstance(err, float) and err < 2e-2:
                    if best is None or t < best[0]:
                        best = (t, dict(cfg))
            row["sweep"] = sweep
            _mon_mod.CONFIG.clear()
            _mon_mod.CONFIG.update(best[1] if best else default)
            row["best_config"] = best[1] if best else None
        t = safe(bench, lambda: monarch_matmul(x, w1, w2), device)
        row["monarch_ms"] = t
        row["rel_err_vs_bmm"] = safe(lambda: rel_err(monarch_matmul(x, w1, w2), ref))
        row["bmm_ms"] = safe(bench, lambda: monarch_matmul_bmm(x, w1, w2), device)
        wd = torch.randn(n, n, device=device, dtype=dt) / math.sqrt(n)
        row["dense_matmul_ms"] = safe(bench, lambda: x @ wd, device)
        if isinstance(t, float):
            row["monarch_GBps"] = nbytes / (t * 1e-3) / 1e9
            row["monarch_tflops"] = flops / (t * 1e-3) / 1e12
            row.update(roofline(flops, nbytes, t, ceil))
            for key in ("bmm_ms", "dense_matmul_ms"):
                if isinstance(row[key], float):
                    row[f"speedup_vs_{key[:-3]}"] = row[key] / t
        rows.append(row)
        log(json.dumps({k: v for k, v in row.items() if k != "sweep"}))
    return rows


FFT_CONFIGS = [
    {"FC": 16, "num_warps": 4, "num_stages": 2},
    {"FC": 16, "num_warps": 8, "num_stages": 2},
    {"FC": 32, "num_warps": 4, "num_stages": 2},
    {"FC": 32, "num_warps": 8, "num_stages": 2},
    {"FC": 16, "num_warps": 4, "num_stages": 1},
    {"FC": 64, "num_warps": 8, "num_stages": 1},
]


def sec_fft_conv(device, quick, ceil, sizes) -> list[dict[str, Any]]:
    rows = []
    cuda = device.startswith("cuda")
    dt = torch.bfloat16 if cuda else torch.float32
    B, H = (4, 768) if not quick else (1, 16)
    for L in sizes or ([1024, 2048, 4096, 8192, 16384, 32768] if not quick else [1024, 4096]):
        u = torch.randn(B, H, L, device=device, dtype=dt)
        g = torch.randn(B, H, L, device=device, dtype=dt)
        k = torch.randn(H, L, device=device) / math.sqrt(L)
        d = torch.randn(H, device=device)
        row: dict[str, Any] = {"B": B, "H": H, "L": L, "dtype": str(dt)[6:]}
        ref = fft_conv_reference(u, k, d, g)
        exact = fft_conv_reference(u[:1].double(), k.double(), d.double(), g[:1].double())
        row["ref_rel_err_vs_fp64"] = rel_err(ref[:1], exact)
        mono = _fft_mod.monarch_factors(L) is not None

        def mono_fn(precision="tf32"):
            return fft_conv(u, k, d, g, method="monarch", precision=precision)

        # "auto" (float16 FFTs for bf16 u at a power-of-two L) and float32 FFTs (the default)
        t = safe(bench, lambda: fft_conv(u, k, d, g, fft_precision="auto"), device)
        row["method"] = "cufft" if cuda else "reference (cpu)"
        row["fft"] = str(fft_signal_dtype("auto", dt, device, L))[6:]
        row["fft_conv_ms"] = t
        row["rel_err_vs_fp64"] = safe(
            lambda: rel_err(fft_conv(u, k, d, g, fft_precision="auto")[:1], exact)
        )
        t32 = safe(bench, lambda: fft_conv(u, k, d, g, fft_precision="float32"), device)
        row["fft_conv_fp32_ms"] = t32
        row["fp32_rel_err_vs_fp64"] = safe(
            lambda: rel_err(fft_conv(u, k, d, g, fft_precision="float32")[:1], exact)
        )
        if cuda and mono:  # the experimental fused kernel, opt-in
            row["sweep"], row["best_config"] = sweep(
                _fft_mod.MONARCH_FFT_CONFIG, FFT_CONFIGS, mono_fn, ref, device
            )
            row["monarch_ms"] = safe(bench, mono_fn, device)
            row["monarch_rel_err_vs_fp64"] = safe(lambda: rel_err(mono_fn()[:1], exact))
            row["monarch_ieee_ms"] = safe(bench, lambda: mono_fn("ieee"), device)
            row["monarch_ieee_rel_err_vs_fp64"] = safe(lambda: rel_err(mono_fn("ieee")[:1], exact))
        row["reference_ms"] = safe(bench, lambda: fft_conv_reference(u, k, d, g), device)
        nbytes = 3 * B * H * L * u.element_size() + H * L * 4
        flops = B * H * 3 * 5 * (2 * L) * math.log2(2 * L) / 2  # ~3 real FFTs of size 2L
        if isinstance(t, float):
            row.update(roofline(flops, nbytes, t, ceil))
            if isinstance(row.get("reference_ms"), float):
                row["speedup_vs_reference"] = row["reference_ms"] / t
                if isinstance(t32, float):
                    row["fp32_speedup_vs_reference"] = row["reference_ms"] / t32
                    row["speedup_vs_fp32"] = t32 / t
                if isinstance(row.get("monarch_ms"), float):
                    row["monarch_speedup_vs_reference"] = row["reference_ms"] / row["monarch_ms"]
        rows.append(row)
        log(json.dumps({k_: v_ for k_, v_ in row.items() if k_ != "sweep"}))
    return rows


SECTIONS = {
    "la_tune": sec_la_tune,
    "la": sec_linear_attention,
    "la_train": sec_la_train,
    "swa": sec_sliding_window,
    "monarch": sec_monarch,
    "fft": sec_fft_conv,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (< 1 min on CPU)")
    ap.add_argument("--sections", default="check,la_tune,la,la_train,swa,monarch,fft")
    ap.add_argument("--sizes", default=None, help="comma list overriding each section's sizes")
    ap.add_argument("--out-dir", default=None, help="also write JSON + log here (e.g. $OUT)")
    args = ap.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU; run with --device cpu")
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    env = {"torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        env["triton"] = None
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, sms=p.multi_processor_count, mem_gb=p.total_memory / 2**30)
    log(json.dumps(env))
    t0 = time.time()
    ceil = safe(ceilings, device)
    log(f"ceilings: {ceil}")
    result: dict[str, Any] = {"env": env, "ceilings": ceil, "quick": args.quick}
    secs = args.sections.split(",")
    if "check" in secs and device.startswith("cuda"):
        from kernels.selfcheck import DTYPES, grid

        checks = safe(lambda: list(grid("gpu", list(DTYPES.values()), device)))
        result["checks"] = checks
        if isinstance(checks, list):
            bad = [c for c in checks if not c["ok"]]
            log(f"correctness grid: {len(checks) - len(bad)}/{len(checks)} ok")
            for c in bad:
                log(f"  FAILED {json.dumps(c)}")
        else:
            log(f"correctness grid failed to run: {checks}")
    for name in secs:
        if name in SECTIONS:
            log(f"== {name} ({time.time() - t0:.0f}s)")
            result[name] = safe(SECTIONS[name], device, args.quick, ceil, sizes)
            if isinstance(result[name], str):
                log(result[name])
    result["wall_s"] = time.time() - t0
    # tables last, so they end the output
    for name in secs:
        rows = result.get(name)
        if isinstance(rows, list) and rows:
            print(f"\n## {name}")
            print_table(
                [{k: v for k, v in r.items() if k not in ("sweep", "best_config")} for r in rows]
            )
    RESULTS.mkdir(exist_ok=True)
    dev = device_name(device)
    suffix = "-quick" if args.quick else ""
    path = RESULTS / f"kernels-{dev}{suffix}.json"
    payload = {"benchmark": "kernels", "device": dev, **result}
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {path}")
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"kernels-{dev}{suffix}.json").write_text(json.dumps(payload, indent=1, default=str))
        (out / "kernels-log.txt").write_text("\n".join(LOG))


if __name__ == "__main__":
    main()
