"""GPU time of each kernel of the non-causal Taylor linear attention, forward and backward.

PYTHONPATH=. python -m benchmarks.la_bwd_passes > benchmarks/results/la-noncausal-bwd-passes-<gpu>.jsonl

Runs the forward (kernels/linear_attn_fwd.py) and the backward
(kernels/linear_attn_bwd_noncausal.py) 20 times under torch.profiler and prints, per (launch
settings, B, N), the median GPU time of every kernel launch in launch order, their sums and the
ratio backward / forward (H = 12, d 16, e 64, bf16): the per-pass view behind the backward's
CONFIG in kernels/linear_attn.py. LA_PASSES='[["s 4 warps", {"s": {"num_warps": 4,
"SLOTS_PER_SM": 2}}]]' adds one run per [label, overrides] pair, the
overrides keyed by pass (q, s, k, v: CONFIG["taylor_bwd_<pass>"], which then also replaces
the pass's "_small" settings). Needs a CUDA GPU (the
profiler's kernel events); benchmarks/la_bwd.py times the whole backward against the older
kernels and checks its errors.
"""

# ruff: noqa: B023 (each timed function runs inside its own loop iteration)

from __future__ import annotations

import json
import os
import sys

import torch

import kernels.linear_attn as la
import kernels.linear_attn_bwd_noncausal as nc
import kernels.linear_attn_fwd as fwd
from benchmarks.gpu_timing import per_kernel

H, D, E, EPS = 12, 16, 64, 1e-6
SHAPES = [(1, 4096), (8, 2048), (8, 16384), (8, 65536), (1, 65536)]


def run(label: str, cfg: dict) -> None:
    for B, N in SHAPES:
        torch.manual_seed(0)
        q, k, v, g = (
            torch.randn(B, H, N, x, device="cuda", dtype=torch.bfloat16) for x in (D, D, E, E)
        )

        def forward():
            return fwd.taylor_forward(q, k, v, EPS, None, cfg["taylor_state"], cfg["taylor_out"])

        state = forward()[1]
        f = per_kernel(forward)
        b = per_kernel(lambda: nc.taylor_backward_noncausal(q, k, v, g, state, EPS, None, cfg))
        ft, bt = sum(t for _, t in f), sum(t for _, t in b)
        row = {"label": label, "B": B, "N": N, "fwd": f, "bwd": b, "fwd_ms": round(ft, 4),
               "bwd_ms": round(bt, 4), "ratio": round(bt / ft, 3)}  # fmt: skip
        print(json.dumps(row), flush=True)


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks.la_bwd_passes needs a CUDA GPU (it reads the profiler's kernel events)"
        )
    print(json.dumps({"label": "env", "gpu": torch.cuda.get_device_name(0),
                      "config": {k: v for k, v in la.CONFIG.items() if k.startswith("taylor")}}))  # fmt: skip
    run("default", la.CONFIG)
    for label, overrides in json.loads(os.environ.get("LA_PASSES", "[]")):
        cfg = la.CONFIG
        for name, settings in overrides.items():  # each holds at every size
            cfg = nc.with_pass_settings(cfg, name, settings)
        run(label, cfg)


if __name__ == "__main__":
    main()
