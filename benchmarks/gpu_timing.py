"""Timing helpers shared by the GPU kernel benchmarks (la_fwd_sweep, la_bwd, m2_*).

`kernel_ms` / `graph_ms`: Triton's do_bench median (eager: includes the host's launch cost)
and do_bench_cudagraph median (replayed from a CUDA graph: the GPU's time alone); in a
smoke run (Triton's CPU interpreter) one call timed with perf_counter, and no graphs. Both
return the error text instead of raising, so that one configuration that fails to compile
does not stop a run. `cuda_event_ms`: median of CUDA-event timings of whole forwards.
`JsonLines`: one JSON object per line with the seconds since start, and a time budget;
`StepLog`: {"step": ..., "t": ...} lines and `guarded` steps (a failure is one error line).
`per_kernel`: each GPU kernel's median time within one call, from torch.profiler's trace.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any


def kernel_ms(fn: Callable[[], Any], smoke: bool) -> float | str:
    try:
        if smoke:
            t = time.perf_counter()
            fn()
            return round((time.perf_counter() - t) * 1e3, 5)
        from triton.testing import do_bench

        return round(float(do_bench(fn, warmup=10, rep=40, return_mode="median")), 5)
    except Exception as e:  # noqa: BLE001 - a config that fails to compile must not stop the run
        return f"{type(e).__name__}: {str(e)[:160]}"


def graph_ms(fn: Callable[[], Any], smoke: bool) -> float | str:
    """Median ms of fn replayed from a CUDA graph: the GPU's time without the host's launch
    cost (eager calls below ~0.3 ms measure the Python side, not the kernels)."""
    if smoke:
        return "no CUDA graphs in the interpreter"
    try:
        from triton.testing import do_bench_cudagraph

        return round(float(do_bench_cudagraph(fn, rep=40, return_mode="median")), 5)
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e)[:160]}"


def cuda_event_ms(fn: Callable[[], Any], reps: int) -> float:
    """Median ms of fn() with CUDA events, after 2 warm-up calls, under inference_mode."""
    import torch

    with torch.inference_mode():
        fn()
        fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


class JsonLines:
    """Prints rows as JSON lines with t_s (seconds since construction); left(): budget left."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.time()
        self.budget_s = budget_s

    def emit(self, **row: Any) -> None:
        row["t_s"] = round(time.time() - self.t0, 1)
        print(json.dumps(row), flush=True)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)


def compiled_variants(kernels: dict[str, Any], seen: set[int]) -> list[dict[str, Any]]:
    """Registers / spills / shared memory of every variant of `kernels` (name -> Triton
    JITFunction) compiled since the last call (`seen` holds the ones already reported)."""
    rows = []
    for name, fn in kernels.items():
        try:
            caches = [c[0] for c in fn.device_caches.values()]
        except Exception:  # noqa: BLE001 - Triton internals differ between versions
            return rows
        for cache in caches:
            for key, k in list(cache.items()):
                if id(k) in seen:
                    continue
                seen.add(id(k))
                k = k.result() if hasattr(k, "result") else k
                md = k.metadata
                rows.append({"kernel": name, "regs": getattr(k, "n_regs", None),
                             "spills": getattr(k, "n_spills", None),
                             "shared": getattr(md, "shared", None),
                             "num_warps": getattr(md, "num_warps", None),
                             "num_stages": getattr(md, "num_stages", None),
                             "key": str(key)[-200:]})  # fmt: skip
    return rows


class StepLog:
    """{"step": name, "t": seconds since construction, ...} lines; `guarded(step, fn)` runs
    fn and turns an exception into one error line, so one failing step does not end a run
    (the CUDA cache is emptied after each step)."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def emit(self, step: str, **kw: Any) -> None:
        print(json.dumps({"step": step, "t": round(time.time() - self.t0, 1), **kw}), flush=True)

    def guarded(self, step: str, fn: Callable[[], Any]) -> None:
        import torch

        try:
            fn()
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc()[-1500:]
            self.emit(step, error=f"{type(e).__name__}: {e}"[:600], tb=tb)
        finally:
            torch.cuda.empty_cache()


def per_kernel(fn: Callable[[], Any], reps: int = 20) -> list[tuple[str, float]]:
    """(kernel name, median ms) of each GPU kernel launch of one call of fn, in launch order,
    from `reps` calls under torch.profiler (needs a CUDA GPU)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "kernel"]
    events.sort(key=lambda e: e["ts"])
    per_call = len(events) // reps
    out = []
    for i in range(per_call):
        durs = sorted(e["dur"] for e in events[i::per_call])
        out.append((events[i]["name"][:40], round(durs[len(durs) // 2] / 1000, 4)))
    return out
