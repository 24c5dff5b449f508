"""Helpers shared by the benchmarks: timing, device names and result files."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def device_name(device: str = "cpu") -> str:
    """'cpu' or the GPU's name, for result file names and tables."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0).replace(" ", "-")
    return "cpu"


def timed(fn: Callable[[], Any], sync_cuda: bool = False) -> tuple[Any, float]:
    """Run fn once; return (result, seconds)."""
    if sync_cuda:
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if sync_cuda:
        import torch

        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def write_results(name: str, device: str, payload: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>-<device>.json with the machine described."""
    RESULTS.mkdir(exist_ok=True)
    dev = device_name(device)
    payload = {
        "benchmark": name,
        "device": dev,
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **payload,
    }
    path = RESULTS / f"{name}-{dev}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print rows of dicts as an aligned table."""
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = {c: (lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)) for c in cols}
    cells = [[fmt[c](r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
