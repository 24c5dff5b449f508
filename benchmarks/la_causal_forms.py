"""Causal Taylor linear attention on a GPU: the quadratic form vs the chunked kernel vs fla.

    PYTHONPATH=. python benchmarks/la_causal_forms.py > benchmarks/results/la-causal-forms-<gpu>.jsonl
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/la_causal_forms.py   # CPU smoke run

B in {1, 8}, H=12, d=16, e=64, bf16, triton.testing.do_bench medians in ms, one JSON object
per line; LA_FORMS_SECTIONS (comma list, default all) picks sections:

- infer (rows without "section", as before): N 512-16k, no grad: `taylor_causal_parallel`
  (kernels/linear_attn_parallel.py), the chunked causal kernel (`linear_attention` with the
  quadratic form switched off), fla's BASED kernels when importable (`parallel_based`,
  `fused_chunk_based`; carry fla-core and einops wheels to a GPU without network); the
  quadratic form's error against the float64 reference at N <= 4k. `PARALLEL_MAX_N` (where
  `linear_attention` switches forms) is read off these rows.
- train: N 1k-16k, forward + backward (torch.autograd.grad): `taylor_causal_parallel_train`
  (kernels/linear_attn_parallel_bwd.py; also its forward alone with grad on, which stores r),
  the chunked path (`linear_attention` on inputs that require grad, la.PARALLEL_MAX_N =
  la.PARALLEL_TRAIN_MAX_N = 0:
  the training route before this form had a backward) and fla's two kernels; at N <= 4k the
  forward and gradient errors (dq, dk, dv) of ours and the chunked path against float64
  autograd of the reference (batch row 0).
- check: `grid_la_parallel_backward` (kernels/selfcheck_forward.py) at GPU sizes, bf16, fp16
  and fp32 (tf32 dots): the training path's errors, incl. large keys and values of mean 10.
- sweep_bwd: the backward's CONFIG (rows owned, rows per step, warps, stages) per kernel at
  (B, N) = (8, 2048), (8, 8192): dq_ms (dq kernel alone) and bwd_ms (both); best rows.
- sweep_fwd: the forward's launch settings at (8, 2048), (8, 4096).
- compiled: registers / spills of every compiled variant of the three kernels.

The smoke run (no CUDA: Triton's interpreter, float32, H=2, tiny N, one timing per call)
checks this script's logic only.
"""

# ruff: noqa: B023 (each timed lambda is run by bench() inside its own loop iteration)

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

SMOKE = not torch.cuda.is_available()  # a logic check in Triton's interpreter
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import triton.testing  # noqa: E402

import kernels.linear_attn as la  # noqa: E402
import kernels.linear_attn_parallel as lp  # noqa: E402
import kernels.linear_attn_parallel_bwd as pb  # noqa: E402
from benchmarks.kernels import fla_based, fla_inputs  # noqa: E402
from kernels import linear_attention, linear_attention_reference  # noqa: E402
from kernels.selfcheck_forward import grid_la_parallel_backward  # noqa: E402

DEV = "cpu" if SMOKE else "cuda"
DT = torch.float32 if SMOKE else torch.bfloat16  # numpy (the interpreter) has no bfloat16
H, D, E = (2, 16, 64) if SMOKE else (12, 16, 64)
BS = (1, 2) if SMOKE else (1, 8)
INFER_NS = (48, 100) if SMOKE else (512, 1024, 2048, 4096, 8192, 16384)
TRAIN_NS = (48, 100) if SMOKE else (1024, 2048, 4096, 8192, 16384)
ERR_MAX_N = 4096
SECTIONS = os.environ.get("LA_FORMS_SECTIONS", "infer,train,check,sweep_bwd,sweep_fwd,compiled")
BWD_CONFIG = copy.deepcopy(pb.CONFIG if not SMOKE else pb.INTERPRET_CONFIG)
T0 = time.time()


def emit(**row) -> None:
    print(json.dumps({**row, "t_s": round(time.time() - T0, 1)}), flush=True)


def bench(fn) -> float | str:
    """Median ms (the smoke run: one call's wall time); a failure's text instead."""
    try:
        if SMOKE:
            t = time.perf_counter()
            fn()
            return round((time.perf_counter() - t) * 1e3, 3)
        return float(triton.testing.do_bench(fn, warmup=25, rep=100))
    except Exception as ex:  # noqa: BLE001 (a setting that does not compile, an OOM)
        if not SMOKE:
            torch.cuda.empty_cache()
        return f"ERR {type(ex).__name__}: {str(ex)[:160]}"


def inputs(B: int, N: int, grad: bool = False) -> tuple[torch.Tensor, ...]:
    q, k = (torch.randn(B, H, N, D, device=DEV, dtype=DT) for _ in range(2))
    v = torch.randn(B, H, N, E, device=DEV, dtype=DT)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def fwd_bwd(fn, ins, g):
    """A callable: forward + backward of fn(*ins) with upstream g (no .grad writes)."""
    return lambda: torch.autograd.grad(fn(*ins), ins, g)


def parallel(q, k, v):
    return pb.taylor_causal_parallel_train(q, k, v)


def chunked(q, k, v):
    return linear_attention(q, k, v, "taylor", causal=True)  # la.PARALLEL_MAX_N = 0: chunked


def errors(fn, ins, g) -> dict:
    """Forward and (dq, dk, dv) errors of fn on batch row 0 vs float64 autograd."""
    one = [t[:1].detach().requires_grad_() for t in ins]
    ref_in = [t.double().detach().requires_grad_() for t in one]
    out = fn(*one)
    got = torch.autograd.grad(out, one, g[:1])
    ref = linear_attention_reference(*ref_in, "taylor", causal=True)
    want = torch.autograd.grad(ref, ref_in, g[:1].double())

    def rel(a, b):
        return float((a.double() - b).norm() / b.norm())

    grads = [rel(a, b) for a, b in zip(got, want)]
    return {"fwd_rel_err": rel(out.detach(), ref.detach()), "grad_rel_errs": grads}


def sec_infer(fla) -> None:
    for B in BS:
        for N in INFER_NS:
            q, k, v = inputs(B, N)
            row = {"B": B, "N": N}
            with torch.no_grad():
                row["parallel_ms"] = bench(lambda: lp.taylor_causal_parallel(q, k, v))
                row["chunked_ms"] = bench(lambda: chunked(q, k, v))
                for name, (fn, layout) in fla.items():
                    args, _ = fla_inputs(layout, (q, k, v), None)
                    row[f"fla_{name}_ms"] = bench(lambda fn=fn, a=args: fn(*a))
                if N <= ERR_MAX_N:
                    one = [t[:1].double() for t in (q, k, v)]
                    ref = linear_attention_reference(*one, "taylor", causal=True)
                    got = lp.taylor_causal_parallel(q[:1], k[:1], v[:1]).double()
                    row["parallel_rel_err"] = float((got - ref).norm() / ref.norm())
            print(json.dumps(row), flush=True)


def sec_train(fla) -> None:
    for B in BS:
        for N in TRAIN_NS:
            torch.manual_seed(0)
            ins = inputs(B, N, grad=True)
            g = torch.randn(B, H, N, E, device=DEV, dtype=DT)
            row: dict = {"section": "train", "B": B, "N": N}
            row["parallel_fwdbwd_ms"] = bench(fwd_bwd(parallel, ins, g))
            row["parallel_fwd_ms"] = bench(lambda: parallel(*ins))  # grad on: stores r
            row["chunked_fwdbwd_ms"] = bench(fwd_bwd(chunked, ins, g))
            for name, (fn, layout) in fla.items():
                args, ga = fla_inputs(layout, ins, g)
                row[f"fla_{name}_fwdbwd_ms"] = bench(fwd_bwd(fn, args, ga))
            ours = row["parallel_fwdbwd_ms"]
            if isinstance(ours, float) and isinstance(row["parallel_fwd_ms"], float):
                row["parallel_bwd_ms"] = ours - row["parallel_fwd_ms"]
            for key in [k for k in row if k.endswith("fwdbwd_ms") and k != "parallel_fwdbwd_ms"]:
                if isinstance(ours, float) and isinstance(row[key], float):
                    row[f"speedup_vs_{key[: -len('_fwdbwd_ms')]}"] = row[key] / ours
            if N <= ERR_MAX_N:
                for name, fn in (("parallel", parallel), ("chunked", chunked)):
                    try:
                        e = errors(fn, ins, g)
                    except Exception as ex:  # noqa: BLE001 (float64 reference: memory)
                        e = {"fwd_rel_err": f"ERR {type(ex).__name__}", "grad_rel_errs": []}
                    row[f"{name}_fwd_rel_err"] = e["fwd_rel_err"]
                    row[f"{name}_grad_rel_errs"] = e["grad_rel_errs"]
            emit(**row)


def sec_check() -> None:
    torch.manual_seed(0)
    if SMOKE:  # one tiny row: the grid itself is the tests' (tests/test_la_parallel_bwd.py)
        from kernels.selfcheck_forward import check_la_parallel_backward

        emit(section="check", **check_la_parallel_backward(1, 2, 37, 16, 24, DT, DEV))
        return
    for row in grid_la_parallel_backward(
        "gpu", [torch.bfloat16, torch.float16, torch.float32], DEV
    ):
        emit(section="check", **row)


def _candidates(kernel: str) -> list[dict]:
    """(rows owned, rows per step) pairs, warps, stages; dq owns query rows (BM), dkdv keys."""
    pairs = [(32, 16)] if SMOKE else [(64, 32), (64, 64), (128, 32), (128, 64)]
    out = []
    for own, step in pairs:
        for w in (8,) if SMOKE else (4, 8):
            for s in (2,) if SMOKE else (2, 3):
                cfg = {"BM": own, "BN": step} if kernel == "dq" else {"BM": step, "BN": own}
                out.append({**cfg, "num_warps": w, "num_stages": s})
    return out


def sec_sweep_bwd() -> None:
    table = pb.INTERPRET_CONFIG if SMOKE else pb.CONFIG
    for B, N in ((2, 100),) if SMOKE else ((8, 2048), (8, 8192)):
        torch.manual_seed(0)
        q, k, v = inputs(B, N)
        g = torch.randn(B, H, N, E, device=DEV, dtype=DT)
        out, r = lp.taylor_causal_parallel_fwd(q, k, v)
        best: dict = {}
        for kernel in ("dq", "dkdv"):
            for cfg in _candidates(kernel):
                table.update(copy.deepcopy(BWD_CONFIG))
                table[kernel] = cfg
                row = {"section": "sweep_bwd", "B": B, "N": N, "kernel": kernel, **cfg}
                row["dq_ms"] = bench(lambda: pb.taylor_causal_parallel_backward(
                    q, k, v, out, r, g, 1e-6, need_kv=False))  # fmt: skip
                row["bwd_ms"] = bench(lambda: pb.taylor_causal_parallel_backward(
                    q, k, v, out, r, g, 1e-6))  # fmt: skip
                emit(**row)
                t = row["dq_ms"] if kernel == "dq" else row["bwd_ms"]
                if isinstance(t, float) and t < best.get(kernel, (float("inf"),))[0]:
                    best[kernel] = (t, cfg)
        table.update(copy.deepcopy(BWD_CONFIG))
        for kernel, (t, cfg) in best.items():
            emit(section="best_bwd", B=B, N=N, kernel=kernel, ms=t, **cfg,
                 default=BWD_CONFIG[kernel])  # fmt: skip


def sec_sweep_fwd() -> None:
    default = dict(lp.CONFIG)
    for B, N in ((2, 100),) if SMOKE else ((8, 2048), (8, 4096)):
        q, k, v = inputs(B, N)
        for BM in (64,) if SMOKE else (64, 128):
            for warps in (4,) if SMOKE else (4, 8):
                for stages in (3,) if SMOKE else (2, 3):
                    lp.CONFIG.update(BM=BM, num_warps=warps, num_stages=stages)
                    t = bench(lambda: lp.taylor_causal_parallel(q, k, v))
                    cfg = {"BM": BM, "warps": warps, "stages": stages}
                    print(json.dumps({"sweep": [B, N], **cfg, "ms": t}), flush=True)
    lp.CONFIG.update(default)


def sec_compiled() -> None:
    """Registers / spills / shared memory of the compiled variants (GPU only)."""
    if SMOKE:
        emit(section="compiled", note="no compiled kernels in the interpreter")
        return
    for mod, name in ((lp, "_la_parallel_kernel"), (pb, "_dq_kernel"), (pb, "_dkdv_kernel")):
        try:
            caches = [c[0] for c in getattr(mod, name).device_caches.values()]
        except Exception:  # noqa: BLE001 - Triton internals differ between versions
            return
        for cache in caches:
            for key, kern in list(cache.items()):
                kern = kern.result() if hasattr(kern, "result") else kern
                md = kern.metadata
                emit(section="compiled", kernel=name, regs=getattr(kern, "n_regs", None),
                     spills=getattr(kern, "n_spills", None), shared=getattr(md, "shared", None),
                     num_warps=getattr(md, "num_warps", None),
                     num_stages=getattr(md, "num_stages", None), key=str(key)[-200:])  # fmt: skip


def main() -> None:
    la.PARALLEL_MAX_N = 0  # "chunked" below means the chunked kernel at every N,
    la.PARALLEL_TRAIN_MAX_N = 0  # for training too (ours is called by name)
    fla = fla_based()
    sections = set(SECTIONS.split(","))
    if "infer" in sections:
        sec_infer(fla)
    if "train" in sections:
        sec_train(fla)
    if "check" in sections:
        sec_check()
    if "sweep_bwd" in sections:
        sec_sweep_bwd()
    if "sweep_fwd" in sections:
        sec_sweep_fwd()
    if "compiled" in sections:
        sec_compiled()


if __name__ == "__main__":
    main()
