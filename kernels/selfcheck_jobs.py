"""`python -m kernels.selfcheck --jobs N`: the check grid split into units (one kernel group and
one dtype each), each a `python -m kernels.selfcheck` process of its own, N at a time.

The grid's time is mostly Triton compiling each kernel variant on the CPU, so on a machine
with several cores the units overlap well: on the lent H200 (16 cores) the whole GPU grid took
2 min 20 s in 10 processes, where its groups' own times add up to about 9 minutes
(benchmarks/results/kernels-selfcheck-all-NVIDIA-H200.jsonl, `t_s` per group).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

#: exit status of a run in which a check failed (1 is left to errors: an exception's traceback)
CHECK_FAILED = 3

Unit = tuple[str, str]  # (kernel group, dtype name as in --dtypes)


def unit_command(unit: Unit, device: str, size: str) -> list[str]:
    """The command that checks one unit."""
    kernel, dtype = unit
    return [sys.executable, "-m", "kernels.selfcheck", "--device", device, "--size", size,
            "--kernels", kernel, "--dtypes", dtype]  # fmt: skip


def run_units(
    commands: dict[Unit, list[str]],
    jobs: int,
    emit: Callable[[dict[str, Any]], None],
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Runs each unit's command, at most `jobs` at once, and emits every row a unit printed when
    that unit ends; a unit that exits with a status other than 0 or CHECK_FAILED, or prints no
    row, adds a failed row with the end of its stderr. Returns whether every row is ok."""

    def run(unit: Unit) -> tuple[Unit, subprocess.CompletedProcess, list[dict], float]:
        t0 = time.perf_counter()
        proc = subprocess.run(commands[unit], capture_output=True, text=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        return unit, proc, rows, time.perf_counter() - t0

    ok = True
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run, unit) for unit in commands]
        for done, future in enumerate(as_completed(futures), 1):
            (kernel, dtype), proc, rows, secs = future.result()
            for row in rows:
                emit(row)
            bad = sum(not row.get("ok", True) for row in rows)
            if proc.returncode not in (0, CHECK_FAILED) or not rows:
                emit({"kernel": kernel, "dtype": dtype, "ok": False,
                      "error": f"exit status {proc.returncode}: {proc.stderr[-2000:]}"})  # fmt: skip
                bad += 1
            ok = ok and bad == 0
            if progress is not None:
                progress(f"selfcheck: {kernel} {dtype}: {len(rows)} rows, {bad} failed, "
                         f"{secs:.0f} s ({done}/{len(futures)} units)")  # fmt: skip
    return ok


def all_ok(rows: Iterable[dict[str, Any]], emit: Callable[[dict[str, Any]], None]) -> bool:
    """Emits rows as they come (a serial run); whether every row is ok."""
    ok = True
    for row in rows:
        emit(row)
        ok = ok and bool(row.get("ok", True))
    return ok
