"""Non-causal Taylor linear attention backward on a GPU: timings against the forward, errors,
launch settings (the issue's target: backward <= 2x forward).

PYTHONPATH=. python -m benchmarks.la_bwd > benchmarks/results/la-noncausal-bwd-<gpu>.jsonl
Prints one JSON object per line (section = env | main | sweep | best | compiled | done); stays
under LA_BWD_BUDGET_S (default 300 s; what is left is skipped); LA_BWD_SECTIONS=main runs the
main section only. On a CPU (TRITON_INTERPRET=1) it is a smoke run of this script's logic:
float32, H=2, tiny N, one call per timing.

- main: B in {1, 8}, H=12, d=16, e=64, bf16, N 1k..64k: the forward (kernels/linear_attn_fwd.py,
  as linear_attention runs it), the new backward (kernels/linear_attn_bwd_noncausal.py) and
  the older `taylor_backward` (kernels/linear_attn_bwd.py) from the same saved state, each
  eager (triton.testing.do_bench: includes the host's launch cost) and replayed from a CUDA
  graph (do_bench_cudagraph: GPU time), the ratios backward / forward, forward + backward
  through autograd, and at N <= 8k the errors of dq, dk, dv against float64 autograd of the
  reference (new and old).
- sweep: CONFIG["taylor_bwd_q" / "_s" / "_k" / "_v"] overridden one setting at a time (SPLIT,
  BLOCK / num_warps, the run-cutting knobs) at (B, N) = (8, 16k) and (1, 2k): backward time,
  and the largest relative difference of its gradients from the default settings'.
- compiled: registers / spills / shared memory of every compiled variant of the new kernels.
"""

# ruff: noqa: B023 (each timed lambda is run by bench() inside its own loop iteration)

from __future__ import annotations

import copy
import os
import time

import torch
import triton

import kernels.linear_attn as la
import kernels.linear_attn_bwd as old_bwd
import kernels.linear_attn_bwd_ds as ds
import kernels.linear_attn_bwd_noncausal as nc
import kernels.linear_attn_fwd as fwd
from benchmarks.gpu_timing import JsonLines, compiled_variants, graph_ms, kernel_ms
from kernels.reference import linear_attention_reference

T0 = time.time()
BUDGET = float(os.environ.get("LA_BWD_BUDGET_S", 300))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SMOKE = DEV == "cpu"  # a logic check of this script in Triton's interpreter (TRITON_INTERPRET=1)
DT = torch.float32 if SMOKE else torch.bfloat16  # numpy (the interpreter) has no bfloat16
H, D, E = (2, 16, 64) if SMOKE else (12, 16, 64)
NS = [48, 100] if SMOKE else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
SWEEP = [(1, 100)] if SMOKE else [(8, 16384), (1, 2048)]
EPS = 1e-6
DEFAULT = copy.deepcopy(la.CONFIG)
SEEN: set[int] = set()


RUN = JsonLines(BUDGET)
emit, left = RUN.emit, RUN.left


def bench(fn) -> float | str:
    return kernel_ms(fn, SMOKE)


def bench_graph(fn) -> float | str:
    return graph_ms(fn, SMOKE)


def ratio(a, b) -> float | None:
    return round(a / b, 3) if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def inputs(B: int, N: int):
    torch.manual_seed(0)
    q, k, v, g = (torch.randn(B, H, N, x, device=DEV, dtype=DT) for x in (D, D, E, E))
    return q, k, v, g


def forward(q, k, v):
    """The forward as linear_attention runs it: (out, state, nsplit, rows)."""
    return fwd.taylor_forward(
        q, k, v, EPS, None, la.CONFIG["taylor_state"], la.CONFIG["taylor_out"]
    )


def grad_errs(grads, exact) -> dict:
    res = {}
    for name, a, b in zip(("dq", "dk", "dv"), grads, exact):
        a, b = a.double(), b.double()
        res[name] = float((a - b).norm() / b.norm()) if torch.isfinite(a).all() else float("inf")
    return res


def main_section() -> None:
    for B in (1, 8):
        for N in NS:
            if left() < 30:
                emit(section="main", B=B, N=N, skipped="time budget")
                continue
            q, k, v, g = inputs(B, N)
            row = {"section": "main", "B": B, "H": H, "N": N, "d": D, "e": E, "dtype": str(DT)[6:]}
            _, state, nsplit, rows = forward(q, k, v)

            def new():
                return nc.taylor_backward_noncausal(q, k, v, g, state, EPS, None, la.CONFIG)

            def old():
                return old_bwd.taylor_backward(q, k, v, g, state, False, EPS, nsplit, rows)

            for name, fn in (("fwd", lambda: forward(q, k, v)), ("bwd", new), ("old_bwd", old)):
                row[f"{name}_ms"] = bench(fn)
                row[f"{name}_graph_ms"] = bench_graph(fn)
            for t, label in (("", "eager"), ("graph_", "graph")):
                fwd_ms, new_ms, old_ms = (row[f"{n}_{t}ms"] for n in ("fwd", "bwd", "old_bwd"))
                row[f"bwd_over_fwd_{label}"] = ratio(new_ms, fwd_ms)
                row[f"old_bwd_over_fwd_{label}"] = ratio(old_ms, fwd_ms)
                row[f"speedup_vs_old_{label}"] = ratio(old_ms, new_ms)
            if row["bwd_over_fwd_graph"] is not None:  # the target
                row["target_met"] = row["bwd_over_fwd_graph"] <= 2.0
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            row["train_ms"] = bench(lambda: la.linear_attention(qg, kg, vg, "taylor").backward(g))
            if N <= 8192:
                exact = [t.double().requires_grad_() for t in (q, k, v)]
                linear_attention_reference(*exact, "taylor", False, EPS).backward(g.double())
                ex = [t.grad for t in exact]
                row.update({f"err_{a}": b for a, b in grad_errs(new(), ex).items()})
                row.update({f"old_err_{a}": b for a, b in grad_errs(old(), ex).items()})
                del exact, ex
            emit(**row)
            if not SMOKE:
                torch.cuda.empty_cache()
    compiled()


# One setting changed at a time from DEFAULT. Offline sm_90 compiles (Triton 3.6, bf16, d 16,
# e 64; registers, spills): q 64/4: 255, none (64/8: 202; 128/4 spills 484 bytes); k 64/4:
# 248, none. The dS pass on the H200 (its `compiled` rows): 64/8 199-202, 128/8 244, none.
VARIANTS: list[tuple[str, dict]] = [
    ("q", {"BLOCK": 128, "num_warps": 8, "SLOTS_PER_SM": 1}), ("q", {"num_warps": 8}),
    ("q", {"COST_ROWS": 0}), ("q", {"COST_ROWS": 2048}), ("q", {"SLOTS_PER_SM": 1}),
    ("s", {"BLOCK": 128}), ("s", {"SLOTS_PER_SM": 2}), ("s", {"COST_ROWS": 0}), ("s", {"COST_ROWS": 4096}),
    ("k", {"SPLIT": 0}), ("k", {"BLOCK": 128, "num_warps": 8, "SLOTS_PER_SM": 1}),
    ("k", {"COST_ROWS": 0}), ("k", {"SLOTS_PER_SM": 1}),
    ("v", {"BLOCK": 128, "num_warps": 8, "SLOTS_PER_SM": 1}), ("v", {"COST_ROWS": 0}),
    ("v", {"SLOTS_PER_SM": 1}),
]  # fmt: skip


def sweep_section() -> None:
    best: dict = {}
    data = {}
    for B, N in SWEEP:
        q, k, v, g = inputs(B, N)
        state = forward(q, k, v)[1]
        ref = nc.taylor_backward_noncausal(q, k, v, g, state, EPS, None, DEFAULT)
        data[(B, N)] = (q, k, v, g, state, ref)
    for which, var in [("default", {}), *VARIANTS]:
        if left() < 10:
            emit(section="sweep", kernel=which, config=var, skipped="time budget")
            continue
        # the changed setting holds at every size (the pass's _small entry left out)
        cfg = nc.with_pass_settings(DEFAULT, which, var) if var else dict(DEFAULT)
        for (B, N), (q, k, v, g, state, ref) in data.items():

            def run():
                return nc.taylor_backward_noncausal(q, k, v, g, state, EPS, None, cfg)

            t, tg = bench(run), bench_graph(run)
            try:  # the same gradients as the default settings (a variant's own bug shows here)
                diff = max(grad_errs(run(), ref).values())
            except Exception as e:  # noqa: BLE001
                diff = f"{type(e).__name__}: {str(e)[:160]}"
            emit(section="sweep", kernel=which, change=var, B=B, N=N, ms=t, graph_ms=tg,
                 rel_diff_vs_default=diff)  # fmt: skip
            key = tg if isinstance(tg, float) else t
            if isinstance(key, float) and key < best.get((B, N), (1e9,))[0]:
                best[(B, N)] = (key, which, var)
        compiled()
    for (B, N), (t, which, var) in sorted(best.items()):
        emit(section="best", B=B, N=N, ms=t, kernel=which, change=var)


def compiled() -> None:
    """Registers / spills of the kernels compiled since the last call."""
    kernels = {name: getattr(nc, name) for name in ("_taylor_bwd_q_kernel", "_taylor_bwd_k_kernel")}
    kernels["taylor_bwd_s_kernel"] = ds.taylor_bwd_s_kernel
    for row in compiled_variants(kernels, SEEN):
        emit(section="compiled", **row)


if __name__ == "__main__":
    gpu = torch.cuda.get_device_name(0) if not SMOKE else "cpu (interpreter smoke run)"
    emit(section="env", gpu=gpu, sms=fwd.multiprocessors(torch.device(DEV)),
         torch=torch.__version__, triton=triton.__version__,
         config={k: v for k, v in DEFAULT.items() if k.startswith("taylor")}, budget_s=BUDGET)  # fmt: skip
    sections = os.environ.get("LA_BWD_SECTIONS", "main,sweep").split(",")
    if "main" in sections:
        main_section()
    if "sweep" in sections:
        sweep_section()
    emit(section="done", wall_s=round(time.time() - T0, 1))
