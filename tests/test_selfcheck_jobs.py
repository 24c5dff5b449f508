"""`python -m kernels.selfcheck --jobs N` (kernels/selfcheck_jobs.py): the same rows as a serial
run, exit statuses, and a unit that crashes or prints nothing reported as a failed row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.selfcheck_jobs import CHECK_FAILED, run_units

ROOT = Path(__file__).resolve().parents[1]


def _selfcheck(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kernels.selfcheck", "--device", "cpu", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip


def _rows(proc: subprocess.CompletedProcess) -> list[tuple]:
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return sorted((r["kernel"], r["dtype"], json.dumps(r.get("shape")), r["ok"]) for r in rows)


def test_parallel_units_give_the_serial_rows():
    pytest.importorskip("triton")
    picked = ("--kernels", "monarch_matmul,sliding_window_attention")
    serial, parallel = _selfcheck(*picked), _selfcheck(*picked, "--jobs", "2")
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr[-2000:]
    assert _rows(parallel) == _rows(serial) and len(_rows(serial)) >= 10
    assert "(4/4 units)" in parallel.stderr  # one unit per kernel group and dtype


def test_unknown_kernel_is_refused_with_the_choices():
    proc = _selfcheck("--kernels", "monarch,fft_conv")
    assert proc.returncode == 2 and "unknown ['monarch']" in proc.stderr
    assert "monarch_matmul" in proc.stderr


def _child(rows: list[dict], status: int) -> list[str]:
    code = "".join(f"print({json.dumps(json.dumps(r))});" for r in rows)
    return [sys.executable, "-c", f"import sys;{code}sys.exit({status})"]


def test_run_units_reports_failed_checks_crashes_and_silent_units():
    good = {"kernel": "a", "dtype": "fp32", "ok": True}
    bad = {"kernel": "b", "dtype": "fp32", "ok": False}
    out: list[dict] = []
    assert run_units({("a", "fp32"): _child([good], 0)}, 2, out.append) is True
    assert out == [good]

    out.clear()  # a failed check: its row, exit status CHECK_FAILED, no extra row
    assert run_units({("b", "fp32"): _child([bad], CHECK_FAILED)}, 2, out.append) is False
    assert out == [bad]

    out.clear()  # a crash after one ok row (a traceback exits 1): the row and an error row
    units = {("a", "fp32"): _child([good], 1), ("c", "fp16"): _child([], 0)}
    lines: list[str] = []
    assert run_units(units, 2, out.append, lines.append) is False
    errors = [r for r in out if "error" in r]
    assert {(r["kernel"], r["dtype"]) for r in errors} == {("a", "fp32"), ("c", "fp16")}
    assert all(not r["ok"] for r in errors) and good in out
    assert any("exit status 1" in r["error"] for r in errors) and len(lines) == 2
