"""Fused Triton backward of Taylor linear attention (kernels/linear_attn_bwd.py; non-causal
with d <= 16: the tensor-core kernels of kernels/linear_attn_bwd_noncausal.py).

The kernels run in Triton's CPU interpreter, which must be switched on before triton is
imported, so every check runs in a subprocess: `python -m kernels.selfcheck --kernels
linear_attention_bwd` (gradients against float64 autograd through the reference), run with
the older kernels refused for non-causal calls so that its non-causal rows prove the new path;
the fused (SPLIT 0) launch variants; and a script that makes the reference unusable during
backward to prove that the gradients do not come from recomputing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.taylor import WAVES, sequence_splits

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}


def _run(args: list[str]) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# the selfcheck CLI with the older kernels refused for non-causal calls, and the new ones counted
GUARDED_SELFCHECK = r"""
import sys
import kernels.linear_attn as la
from kernels import selfcheck

older, newer, calls = la.taylor_backward, la.taylor_backward_noncausal, []

def causal_only(*a, **k):
    wide = not la.noncausal_backward_fits(a[0], a[2])  # float32 values past 64: shared memory
    assert a[5] or wide, "a non-causal backward went through kernels/linear_attn_bwd.py"
    if wide and not a[5]:
        print("WIDE", flush=True)
    return older(*a, **k)

def counted(*a, **k):
    calls.append(1)
    return newer(*a, **k)

la.taylor_backward, la.taylor_backward_noncausal = causal_only, counted
sys.argv = ["selfcheck", "--device", "cpu", "--kernels", "linear_attention_bwd"]
selfcheck.main()
print("CALLS", len(calls))
"""


@pytest.fixture(scope="module")
def guarded() -> tuple[list[dict], int]:
    pytest.importorskip("triton")
    proc = subprocess.run([sys.executable, "-c", GUARDED_SELFCHECK], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    calls = [int(line.split()[1]) for line in lines if line.startswith("CALLS")]
    wide = sum(1 for line in lines if line == "WIDE")
    return [json.loads(line) for line in lines if line.startswith("{")], calls[0], wide


@pytest.fixture(scope="module")
def rows(guarded) -> list[dict]:
    return guarded[0]


def test_fused_backward_matches_float64_reference(rows):
    assert len(rows) >= 8
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    for r in rows:
        assert r["backward"] == "triton" and len(r["grad_rel_errs"]) == 3  # dq, dk, dv
        if r["dtype"] == "float32":  # the interpreter computes float32 exactly
            assert max(r["grad_rel_errs"]) < 1e-5, r
        elif r.get("k_scale") or r.get("v_mean"):
            # dq ~2e-3 (older kernels the same): the forward's state rounds vec(k k^T) to 16
            # bits in S2 but not in z2, and S2 - z2 mu^T is ~10x smaller than S2 here
            assert max(r["grad_rel_errs"]) < 5e-3 and max(r["grad_rel_errs"][1:]) < 1e-3, r
        else:
            assert max(r["grad_rel_errs"]) < 2e-3, r


def test_noncausal_rows_went_through_the_tensor_core_backward(guarded):
    """Every non-causal row of the selfcheck grid called taylor_backward_noncausal once (the
    older non-causal path raised in that run), and the causal rows the older kernels."""
    rows, calls, wide = guarded
    noncausal = sum(1 for r in rows if not r["causal"])
    # float32 rows with values wider than 64 keep the older kernels (noncausal_backward_fits)
    expect_wide = sum(
        1 for r in rows if not r["causal"] and r["dtype"] == "float32" and r["shape"][4] > 64
    )
    assert calls == noncausal - expect_wide > 0 and wide == expect_wide


def test_backward_grid_covers_both_modes_and_ragged_shapes(rows):
    assert {r["causal"] for r in rows} == {False, True}
    assert {r["dtype"] for r in rows} == {"float32", "float16"}
    assert any(r["shape"][2] % 16 for r in rows)  # N not a multiple of the row block
    assert any(r["shape"][4] > 32 for r in rows if r["causal"])  # several value-column blocks
    assert any(r["shape"][2] >= 64 for r in rows if r["causal"])  # several sequence splits
    assert any(r["shape"][3] < 16 for r in rows)  # head dim padded to the block
    assert any(r["key_mask"] for r in rows)
    nc = [r for r in rows if not r["causal"]]  # the tensor-core kernels (interpreter: 16-row
    assert {r["shape"][3] for r in nc} >= {4, 8, 16}  # blocks, runs of two blocks)
    assert {r["shape"][4] for r in nc} >= {24, 40, 100}  # e padded to a power of two
    assert any(r["shape"][2] > 64 for r in nc)  # three or more runs per head
    assert any(r["shape"][0] > 1 and r["shape"][1] > 1 for r in nc)
    assert any(r["key_mask"] and r["dtype"] == "float16" for r in nc)
    assert {r["dtype"] for r in nc if r.get("v_mean")} == {"float32", "float16"}
    assert any(r.get("k_scale") for r in nc if r["dtype"] == "float16")


# the SPLIT 0 launch variant (dk with dv in one kernel): same gradients
FUSED_LAUNCHES = r"""
import json, torch
import kernels.linear_attn as la
from kernels.selfcheck import check_linear_attention_backward as check
la.CONFIG["taylor_bwd_k"] = {**la.CONFIG["taylor_bwd_k"], "SPLIT": 0}
torch.manual_seed(0)
print(json.dumps(check(2, 3, 70, 8, 40, False, torch.float32, "cpu", masked=True)))
print(json.dumps(check(1, 2, 100, 16, 24, False, torch.float16, "cpu", v_mean=10.0)))
"""


def test_fused_launch_variants_match_the_reference():
    pytest.importorskip("triton")
    res = _run(["-c", FUSED_LAUNCHES])
    assert len(res) == 2 and all(r["ok"] for r in res), res
    assert max(res[0]["grad_rel_errs"]) < 1e-5 and max(res[1]["grad_rel_errs"]) < 5e-3, res


NO_REFERENCE_IN_BACKWARD = r"""
import json, torch
import kernels.linear_attn as la
from kernels.reference import linear_attention_reference as ref

older = la.taylor_backward

def refuse(*a, **k):
    raise AssertionError("backward recomputed through the PyTorch reference")

def refuse_older(*a, **k):
    raise AssertionError("non-causal backward through kernels/linear_attn_bwd.py")

torch.manual_seed(1)
for causal in (False, True):
    q, k = torch.randn(2, 2, 45, 16), torch.randn(2, 2, 45, 16)
    v = torch.randn(2, 2, 45, 40)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    out = la.linear_attention(*ins, "taylor", causal, backend="triton")
    g = torch.randn_like(out)
    la.linear_attention_reference = refuse
    la.taylor_backward = older if causal else refuse_older
    out.backward(g)
    la.linear_attention_reference, la.taylor_backward = ref, older
    exact = [t.double().requires_grad_() for t in (q, k, v)]
    ref(*exact, "taylor", causal).backward(g.double())
    errs = [float((a.grad.double() - b.grad).norm() / b.grad.norm()) for a, b in zip(ins, exact)]
    print(json.dumps({"causal": causal, "errs": errs}))
"""


def test_backward_does_not_recompute_the_reference():
    """Regression (issue 24): the Taylor backward used to rerun the reference under autograd.
    Non-causal (d 16) takes the tensor-core kernels, never the older ones."""
    pytest.importorskip("triton")
    res = _run(["-c", NO_REFERENCE_IN_BACKWARD])
    assert [r["causal"] for r in res] == [False, True]
    for r in res:
        assert max(r["errs"]) < 1e-5, r


LARGE_KEYS = r"""
import json, torch
from kernels.selfcheck import check_linear_attention_backward as check
torch.manual_seed(0)
for causal, N, k_scale in ((False, 128, 60.0), (True, 256, 30.0)):
    print(json.dumps(check(1, 2, N, 16, 40, causal, torch.float16, "cpu", k_scale=k_scale)))
"""


def test_backward_float16_state_stays_in_range():
    """Regression: the backward cast the float32 key state S to float16 as it was. Keys ~ 60,
    values ~ 1 + 0.1 N(0, 1), N=128: S2 ~ 8e4 > 65504 and dq was inf (the forward is fine).
    dnum ~ 1 / den was cast too, into float16's subnormals (dk 5% off), and dq took g . out
    from the float16 output, which cancels against S g (causal, keys ~ 30: dq 2.4% off).
    Now every operand is scaled by a power of two and the mean value is taken out of S."""
    pytest.importorskip("triton")
    rows = _run(["-c", LARGE_KEYS])
    assert [r["causal"] for r in rows] == [False, True]
    for r in rows:
        assert r["backward"] == "triton" and r["fwd_rel_err"] < 2e-3, r
        assert max(r["grad_rel_errs"]) < 1e-2, r  # tolerance(float16)


@pytest.mark.parametrize("programs, block, min_rows", [(12, 64, 128), (24, 64, 128)])
def test_sequence_splits_fill_the_gpu_at_every_length(programs, block, min_rows):
    """B=1, H=12 on 132 SMs: the state pass used to stop splitting at 256 rows per split (192
    programs at 4k, 96 at 2k). Now about WAVES programs per SM whenever the rows allow, no
    fewer programs at a longer sequence, and the splits tile the sequence exactly."""
    sms, seen = 132, 0
    for n in [1000, 1024, 2048, 4096, 8192, 8193, 16384, 32768, 65536]:
        nsplit, rows = sequence_splits(n, programs, block, min_rows, sms)
        assert rows % block == 0 and (nsplit - 1) * rows < n <= nsplit * rows
        total = programs * nsplit
        assert total >= seen - programs  # (a ragged n adds one split)
        seen = total
        assert total >= WAVES * sms or rows <= 2 * min_rows, (n, nsplit, rows)
    assert sequence_splits(4096, 12, 64, 128, sms)[0] * 12 >= WAVES * sms
    # the interpreter (sms=None) takes two splits whenever the rows allow
    assert sequence_splits(37, 2, 16, 16, None) == (3, 16)
    assert sequence_splits(20, 2, 16, 16, None) == (1, 32)


def test_small_inputs_take_the_small_launch_settings():
    from kernels.linear_attn import CONFIG
    from kernels.linear_attn_bwd_noncausal import pass_config, with_pass_settings

    for name in "qv":  # dq and dv have settings for small inputs; dS and dk do not
        small, big = CONFIG[f"taylor_bwd_{name}_small"], CONFIG[f"taylor_bwd_{name}"]
        assert pass_config(CONFIG, name, small["MAX_ROWS"]) is small
        assert pass_config(CONFIG, name, small["MAX_ROWS"] + 1) is big
        assert pass_config(CONFIG, name, 1) is small
    for name in "sk":
        assert pass_config(CONFIG, name, 1) is CONFIG[f"taylor_bwd_{name}"]
    bare = {k: v for k, v in CONFIG.items() if not k.endswith("_small")}  # none given: default
    assert pass_config(bare, "q", 1) is CONFIG["taylor_bwd_q"]
    # a benchmark's changed setting holds at every size: the pass's _small entry is left out
    swept = with_pass_settings(CONFIG, "v", {"BLOCK": 32})
    assert pass_config(swept, "v", 1)["BLOCK"] == 32 and "taylor_bwd_v_small" in CONFIG
    assert pass_config(swept, "q", 1) is CONFIG["taylor_bwd_q_small"]
    no_limit = {**CONFIG, "taylor_bwd_v_small": {"BLOCK": 128}}
    with pytest.raises(ValueError, match="MAX_ROWS"):
        pass_config(no_limit, "v", 1)
