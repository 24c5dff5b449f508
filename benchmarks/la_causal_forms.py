"""Causal Taylor linear attention on a GPU: the quadratic form vs the chunked kernel vs fla.

    PYTHONPATH=. python benchmarks/la_causal_forms.py > benchmarks/results/la-causal-forms-<gpu>.jsonl

B in {1, 8}, H=12, d=16, e=64, bf16, N 512-16k, inference (no grad): `taylor_causal_parallel`
(kernels/linear_attn_parallel.py), the chunked causal kernel (`linear_attention` with the
quadratic form switched off), and flash-linear-attention's BASED kernels when importable
(`parallel_based`, `fused_chunk_based`; carry fla-core and einops wheels to a GPU without
network), triton.testing.do_bench medians in ms; the quadratic form's error against the
float64 reference at N <= 4k; then a small sweep of its launch settings. One JSON object per
line. `PARALLEL_MAX_N` (where `linear_attention` switches forms) is read off these rows.
"""

# ruff: noqa: B023 (each timed lambda is run by bench() inside its own loop iteration)

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton.testing  # noqa: E402

import kernels.linear_attn as la  # noqa: E402
import kernels.linear_attn_parallel as lp  # noqa: E402
from benchmarks.kernels import fla_based, fla_inputs  # noqa: E402
from kernels import linear_attention, linear_attention_reference  # noqa: E402

H, D, E, DT = 12, 16, 64, torch.bfloat16


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100)


def inputs(B: int, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k = (torch.randn(B, H, N, D, device="cuda", dtype=DT) for _ in range(2))
    return q, k, torch.randn(B, H, N, E, device="cuda", dtype=DT)


def main() -> None:
    la.PARALLEL_MAX_N = 0  # "chunked" below means the chunked kernel at every N
    fla = fla_based()
    for B in (1, 8):
        for N in (512, 1024, 2048, 4096, 8192, 16384):
            q, k, v = inputs(B, N)
            row = {"B": B, "N": N}
            with torch.no_grad():
                row["parallel_ms"] = bench(lambda: lp.taylor_causal_parallel(q, k, v))
                row["chunked_ms"] = bench(lambda: linear_attention(q, k, v, "taylor", causal=True))
                for name, (fn, layout) in fla.items():
                    args, _ = fla_inputs(layout, (q, k, v), None)
                    row[f"fla_{name}_ms"] = bench(lambda fn=fn, a=args: fn(*a))
                if N <= 4096:
                    one = [t[:1].double() for t in (q, k, v)]
                    ref = linear_attention_reference(*one, "taylor", causal=True)
                    got = lp.taylor_causal_parallel(q[:1], k[:1], v[:1]).double()
                    row["parallel_rel_err"] = float((got - ref).norm() / ref.norm())
            print(json.dumps(row), flush=True)
    for B, N in ((8, 2048), (8, 4096)):
        q, k, v = inputs(B, N)
        for BM in (64, 128):
            for warps in (4, 8):
                for stages in (2, 3):
                    lp.CONFIG.update(BM=BM, num_warps=warps, num_stages=stages)
                    try:
                        t = bench(lambda: lp.taylor_causal_parallel(q, k, v))
                    except Exception as ex:  # noqa: BLE001 (a setting that does not compile)
                        t = f"ERR {type(ex).__name__}"
                    cfg = {"BM": BM, "warps": warps, "stages": stages}
                    print(json.dumps({"sweep": [B, N], **cfg, "ms": t}), flush=True)


if __name__ == "__main__":
    main()
