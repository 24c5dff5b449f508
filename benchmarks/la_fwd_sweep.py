"""Non-causal Taylor linear attention forward on a GPU: timings, launch settings, errors.

PYTHONPATH=. python -m benchmarks.la_fwd_sweep > benchmarks/results/la-noncausal-fwd-sweep-<gpu>.jsonl
Prints one JSON object per line (section = env | compiled | committed | main | sweep | best
| done); stays under ~3 minutes (LA_SWEEP_BUDGET_S, default 160 s, skips what is left);
LA_SWEEP_SECTIONS=main runs the main section only.

- main: B in {1, 8}, H=12, d=16, e=64, bf16, N 1k..64k: linear_attention(q, k, v, "taylor")
  (new: kernels/linear_attn_fwd.py), its state pass (+ split sum) and output pass alone, the
  old generic kernels (la.TAYLOR_FWD_MAX_DP = 0) in the same run, the forward replayed from a
  CUDA graph (graph_ms: GPU time without the host's launch cost), the forward with inputs
  that require grad (as benchmarks/kernels.py la_train timed it), TFLOP/s and % of 695
  TFLOP/s (useful FLOPs 4 B H N 273 64); errors vs float64 at N <= 8k.
- sweep: CONFIG["taylor_state"] / ["taylor_out"] overridden (BLOCK, num_warps, num_stages,
  then the run-cutting knobs) at N in {2k, 16k}, B in {1, 8}: pass time alone.
- compiled: registers / spills / shared memory of every compiled variant.
"""

# ruff: noqa: B023 (each timed lambda is run by bench() inside its own loop iteration)

from __future__ import annotations

import copy
import json
import os
import time

import torch
import triton

import kernels.linear_attn as la
import kernels.linear_attn_fwd as fwd
from benchmarks.gpu_timing import JsonLines, compiled_variants, graph_ms, kernel_ms
from kernels.reference import linear_attention_reference

T0 = time.time()
BUDGET = float(os.environ.get("LA_SWEEP_BUDGET_S", 160))
PEAK = 695e12
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SMOKE = DEV == "cpu"  # a logic check of this script in Triton's interpreter (TRITON_INTERPRET=1)
DT = torch.float32 if SMOKE else torch.bfloat16  # numpy (the interpreter) has no bfloat16
H, D, E = (2, 16, 64) if SMOKE else (12, 16, 64)
NS = [48, 100] if SMOKE else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
SWEEP_NS = (100,) if SMOKE else (16384, 2048)
DEFAULT = copy.deepcopy(la.CONFIG)
SEEN: set[int] = set()


RUN = JsonLines(BUDGET)
emit, left = RUN.emit, RUN.left


def bench(fn) -> float | str:
    return kernel_ms(fn, SMOKE)


def bench_graph(fn) -> float | str:
    return graph_ms(fn, SMOKE)


def flops(B: int, N: int) -> float:
    return 4.0 * B * H * N * (1 + D + D * D) * E


def rate(fl: float, ms) -> dict:
    if not isinstance(ms, float):
        return {}
    return {
        "tflops": round(fl / (ms * 1e-3) / 1e12, 1),
        "pct_roofline": round(100 * fl / (ms * 1e-3) / PEAK, 1),
    }


def inputs(B: int, N: int, grad: bool = False):
    torch.manual_seed(0)
    return [torch.randn(B, H, N, x, device=DEV, dtype=DT, requires_grad=grad) for x in (D, D, E)]


def compiled() -> None:
    """Registers / spills of the kernels compiled since the last call."""
    kernels = {name: getattr(fwd, name) for name in ("_taylor_state_kernel", "_taylor_out_kernel")}
    for row in compiled_variants(kernels, SEEN):
        emit(section="compiled", **row)


def rel_errs(out, ref) -> dict:
    o, r = out.double(), ref.double()
    return {
        "rel_err": float((o - r).norm() / r.norm()),
        "max_rel_err": float((o - r).abs().max() / r.abs().max()),
    }


def committed() -> None:
    path = "benchmarks/results/kernels-NVIDIA-H200.json"
    try:
        res = json.load(open(path))
    except OSError:
        return
    for r in res.get("la", []):
        if "taylor_ms" in r:
            emit(section="committed", B=r["B"], N=r["N"], old_ms=r["taylor_ms"], source=path)
    for r in res.get("la_train", []):
        if r.get("B") == 1 and "noncausal_ours_fwd_ms" in r:
            emit(section="committed", B=1, N=r["N"], old_fwd_requires_grad_ms=r["noncausal_ours_fwd_ms"], source=path)  # fmt: skip


def main_section() -> None:
    cs, co = la.CONFIG["taylor_state"], la.CONFIG["taylor_out"]
    sms = fwd.multiprocessors(torch.device(DEV))
    for B in (1, 8):
        for N in NS:
            if left() < 20:
                emit(section="main", B=B, N=N, skipped="time budget")
                continue
            q, k, v = inputs(B, N)
            fl = flops(B, N)
            row = {"section": "main", "B": B, "H": H, "N": N, "d": D, "e": E, "dtype": str(DT)[6:]}
            row["splits"] = fwd.state_splits(N, B * H, cs["BLOCK"], cs, sms)
            row["runs"] = fwd.out_runs(N, B * H, co["BLOCK"], co, sms)
            t = bench(lambda: la.linear_attention(q, k, v, "taylor"))
            row.update(total_ms=t, **rate(fl, t))
            tg = bench_graph(lambda: la.linear_attention(q, k, v, "taylor"))
            row.update(graph_ms=tg, **{f"graph_{a}": b for a, b in rate(fl, tg).items()})
            state, _, _ = fwd.taylor_state(k, v, None, cs)
            ts = bench(lambda: fwd.taylor_state(k, v, None, cs))
            to = bench(lambda: fwd.taylor_out(q, state, E, 1e-6, co))
            row.update(state_ms=ts, out_ms=to)
            row.update({f"state_{a}": b for a, b in rate(fl / 2, ts).items()})
            row.update({f"out_{a}": b for a, b in rate(fl / 2, to).items()})
            la.TAYLOR_FWD_MAX_DP = 0  # the generic kernels this replaces, same run
            try:
                t_old = bench(lambda: la.linear_attention(q, k, v, "taylor"))
                out_old = la.linear_attention(q, k, v, "taylor")
            finally:
                la.TAYLOR_FWD_MAX_DP = fwd.TAYLOR_FWD_MAX_DP
            row["old_ms"] = t_old
            if isinstance(t, float) and isinstance(t_old, float):
                row["speedup_vs_old"] = round(t_old / t, 2)
            if B == 1:  # as la_train timed it: inputs that require grad, forward only
                qg, kg, vg = inputs(B, N, grad=True)
                row["fwd_requires_grad_ms"] = bench(
                    lambda: la.linear_attention(qg, kg, vg, "taylor")
                )
            if N <= 8192:
                out = la.linear_attention(q, k, v, "taylor")
                ref = linear_attention_reference(q.double(), k.double(), v.double(), "taylor")
                row.update(rel_errs(out, ref))
                row.update({f"old_{a}": b for a, b in rel_errs(out_old, ref).items()})
                del ref
            emit(**row)
            if not SMOKE:
                torch.cuda.empty_cache()
    compiled()


# (BLOCK, num_warps, num_stages); offline sm_90 compiles (Triton 3.6) of these: state 64/8:
# 194 regs, 25 warp instr/row; 128/8: 246, 29; 32/8: 174, 41. out 64/4: 233, 30; 128/8: 178,
# 30; 64/8: 150, 50 (no spills anywhere). num_stages > 1 changes nothing while the loops
# prefetch by hand (kept as a check that it still does not).
STATE_KERNEL = [(64, 8, 1), (64, 8, 3), (128, 8, 1), (32, 8, 1)]
OUT_KERNEL = [(64, 4, 1), (64, 4, 3), (128, 8, 1), (64, 8, 1)]
STATE_CUT = [{"COST_ROWS": c} for c in (0, 128, 2048, 8192)]
STATE_CUT += [{"SLOTS_PER_SM": 2}, {"MIN_ROWS": 256}, {"MIN_ROWS": 1024}]
OUT_CUT = [{"COST_ROWS": c} for c in (0, 64, 1024, 4096)]
OUT_CUT += [{"SLOTS_PER_SM": s} for s in (1, 3, 4)]


def sweep_section() -> None:
    shapes = [(B, N) for N in SWEEP_NS for B in (8, 1)]
    best: dict = {}
    for which, kern, cuts in (("taylor_state", STATE_KERNEL, STATE_CUT), ("taylor_out", OUT_KERNEL, OUT_CUT)):  # fmt: skip
        variants = [dict(BLOCK=b, num_warps=w, num_stages=s) for b, w, s in kern] + cuts
        for var in variants:
            if left() < 8:
                emit(section="sweep", kernel=which, config=var, skipped="time budget")
                continue
            cfg = {**DEFAULT[which], **var}
            for B, N in shapes:
                q, k, v = inputs(B, N)
                if which == "taylor_state":
                    t = bench(lambda: fwd.taylor_state(k, v, None, cfg))
                else:
                    state, _, _ = fwd.taylor_state(k, v, None, DEFAULT["taylor_state"])
                    t = bench(lambda: fwd.taylor_out(q, state, E, 1e-6, cfg))
                emit(
                    section="sweep",
                    kernel=which,
                    B=B,
                    N=N,
                    config=cfg,
                    ms=t,
                    **rate(flops(B, N) / 2, t),
                )
                if isinstance(t, float) and t < best.get((which, B, N), (1e9,))[0]:
                    best[(which, B, N)] = (t, cfg)
            compiled()
    for (which, B, N), (t, cfg) in sorted(best.items()):
        emit(section="best", kernel=which, B=B, N=N, ms=t, config=cfg, default=DEFAULT[which])


if __name__ == "__main__":
    gpu = torch.cuda.get_device_name(0) if not SMOKE else "cpu (interpreter smoke run)"
    emit(section="env", gpu=gpu, sms=fwd.multiprocessors(torch.device(DEV)),
         torch=torch.__version__, triton=triton.__version__, config=DEFAULT, budget_s=BUDGET)  # fmt: skip
    sections = os.environ.get("LA_SWEEP_SECTIONS", "main,sweep").split(",")
    committed()
    if "main" in sections:
        main_section()
    if "sweep" in sections:
        sweep_section()
    emit(section="done", wall_s=round(time.time() - T0, 1))
