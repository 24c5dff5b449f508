"""Run a check script in Triton's CPU interpreter, in a fresh Python process.

TRITON_INTERPRET=1 must be set before triton is imported, so tests of Triton kernels run
their checks in a subprocess; the script prints one JSON value as its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(script: str, *python_args: str, timeout: int = 600) -> Any:
    """The JSON value on the last stdout line of `python [python_args] -c script`."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *python_args, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
