"""Triton kernels in Triton's CPU interpreter (TRITON_INTERPRET=1) vs float64 references.

The interpreter must be switched on before triton is imported, so the checks run in a
subprocess (`python -m kernels.selfcheck`); each line it prints is one kernel/shape/dtype
case with forward and gradient errors. numpy has no bfloat16: bf16 is checked on the GPU
(benchmarks/results/kernels-*.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results() -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "kernels.selfcheck", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "kernel", ["linear_attention", "sliding_window_attention", "monarch_matmul", "fft_conv"]
)
def test_kernel_matches_reference_in_interpreter(results, kernel):
    rows = [r for r in results if r["kernel"] == kernel]
    assert len(rows) >= 6, f"too few {kernel} cases ran: {len(rows)}"
    assert {r["dtype"] for r in rows} == {"float32", "float16"}
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    # the interpreter runs float32 exactly: far tighter than the bound used on the GPU
    assert max(r["fwd_rel_err"] for r in rows if r["dtype"] == "float32") < 1e-5


@pytest.mark.parametrize("kernel", ["la_parallel", "bert_embed_ln", "bert_layer_norm", "bert_mean"])
def test_inference_kernels_match_reference_in_interpreter(results, kernel):
    """Forward-only kernels: the quadratic causal Taylor form and the packed BERT glue."""
    rows = [r for r in results if r["kernel"] == kernel]
    assert {r["dtype"] for r in rows} == {"float32", "float16"}, rows
    assert not [r for r in rows if not r["ok"]]
    assert max(r["fwd_rel_err"] for r in rows if r["dtype"] == "float32") < 1e-5


def test_grid_covers_odd_shapes_and_both_modes(results):
    la = [r for r in results if r["kernel"] == "linear_attention"]
    assert {(r["feature_map"], r["causal"]) for r in la} == {
        ("taylor", False), ("taylor", True), ("hedgehog", False), ("hedgehog", True)
    }  # fmt: skip
    assert any(r["shape"][2] % 16 for r in la)  # sequence not a multiple of the block
    assert any(r["shape"][0] == 1 for r in la) and any(r["shape"][1] > 1 for r in la)
    assert any(r["key_mask"] for r in la)  # padding masks on the Triton path
    fft = [r for r in results if r["kernel"] == "fft_conv"]
    assert any(r["k_len"] == 2 * r["shape"][2] for r in fft)  # M2 bidirectional layout
    assert {r["method"] for r in fft} >= {"monarch", "cufft"}  # both Triton paths


def test_taylor_forward_grid_covers_splits_runs_masks_and_padding(results):
    """The non-causal Taylor forward (kernels/linear_attn_fwd.py) in the interpreter: several
    state splits and output runs (N=100 and 77 in blocks of 16, runs of two blocks, a ragged
    last one), B=1 and B>1, head dim 4 and value dim 40 padded to the block, a padding mask."""
    rows = [
        r
        for r in results
        if r["kernel"] == "linear_attention" and r["feature_map"] == "taylor" and not r["causal"]
    ]
    assert {r["dtype"] for r in rows} == {"float32", "float16"}
    assert not [r for r in rows if not r["ok"]]
    assert any(r["shape"][2] > 64 and r["shape"][0] == 1 for r in rows)
    assert any(r["shape"][2] > 64 and r["shape"][0] > 1 and r["key_mask"] for r in rows)
    assert any(r["shape"][3] < 16 and r["shape"][4] % 16 for r in rows)


def test_taylor_forward_float16_state_stays_in_range(results):
    """Regression (issue 24): the output pass cast the float32 key state to float16 as it was;
    at N=1024 with keys ~24 and values ~1, S2 reaches ~1e5 > 65504 and the output was inf.
    The state is now divided by the key count (num and den alike) before the cast."""
    rows = [r for r in results if r["kernel"] == "linear_attention_range"]
    assert [r["dtype"] for r in rows] == ["float16"]
    assert all(r["ok"] and r["fwd_rel_err"] < 2e-3 for r in rows), rows
