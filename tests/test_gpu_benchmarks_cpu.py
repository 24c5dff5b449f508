"""The GPU-only per-kernel benchmarks import on a CPU machine and stop with a message that says
they need a CUDA GPU (a broken import, e.g. of the shared timing helpers, fails here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("module", ["benchmarks.fft_conv_passes", "benchmarks.la_bwd_passes"])
def test_gpu_benchmark_stops_clearly_without_a_gpu(module):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "needs a CUDA GPU" in proc.stderr, proc.stderr[-2000:]
