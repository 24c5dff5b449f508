"""Linear attention with the Taylor (BASED) or Hedgehog feature map, computed on chip.

The Triton kernels build phi(q), phi(k) in registers and keep only the state
S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) in HBM (B*H*(1+F)*e floats); phi is
never written out. The feature vector is split as phi = [c, P1, P2]:
Taylor: c = 1, P1 = x / d^(1/4), P2 = vec(x x^T) / (sqrt(2) sqrt(d));
Hedgehog: c = 0, P1 = softmax(xW + b), P2 = softmax(-(xW + b)).
Non-causal: a state pass split over the sequence, the splits summed, an output pass (Taylor
with d <= 16: the tensor-core kernels of kernels/linear_attn_fwd.py).
Causal: per-split key states and their prefix sums over splits, then the chunked causal
form (intra-chunk quadratic, inter-chunk state) over every split in parallel. The Taylor
backward is fused too (non-causal with d <= 16: kernels/linear_attn_bwd_noncausal.py, else
kernels/linear_attn_bwd.py); Hedgehog's recomputes the reference.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2, use_triton
from kernels.linear_attn_bwd import taylor_backward
from kernels.linear_attn_bwd_noncausal import noncausal_backward_fits, taylor_backward_noncausal
from kernels.linear_attn_fwd import TAYLOR_FWD_MAX_DP, taylor_forward
from kernels.linear_attn_inputs import check_inputs
from kernels.linear_attn_parallel import (
    PARALLEL_MAX_N,
    quadratic_form_fits,
    taylor_causal_parallel,
)
from kernels.linear_attn_parallel_bwd import PARALLEL_TRAIN_MAX_N, taylor_causal_parallel_train
from kernels.reference import FeatureMap, linear_attention_reference
from kernels.taylor import feature_sizes, multiprocessors, sequence_splits, state_width

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import (
        feature_parts,
        head_ranges,
        init_state,
        load_projection,
        load_state,
        load_tile,
        split_program,
        split_rows,
        state_program,
        state_row,
        store_state,
    )

    @triton.jit
    def _la_state_kernel(
        k_ptr, v_ptr, w_ptr, b_ptr, m_ptr, ws_ptr,
        N, H, D, E, FH, rows_per_split, d_real,
        skb, skh, skn, svb, svh, svn,
        TAYLOR: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr, NSPLIT, HAS_MASK: tl.constexpr,
    ):  # fmt: skip
        """State (s0, S, z) of the keys in one (b, h, split) into one workspace row."""
        pid_bh, pid_s, b, h = state_program(H)
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, FH, 0, DP, EP, F1)
        dt = k_ptr.dtype.element_ty
        w, bias = load_projection(w_ptr, b_ptr, h, D, FH, rd, rf, d_ok, f_ok, dt, TAYLOR, DP, F1)
        s0 = tl.zeros((EP,), dtype=tl.float32)
        s1 = tl.zeros((F1, EP), dtype=tl.float32)
        s2 = tl.zeros((F2, EP), dtype=tl.float32)
        z1 = tl.zeros((F1,), dtype=tl.float32)
        z2 = tl.zeros((F2,), dtype=tl.float32)
        cnt = tl.zeros((BLOCK,), dtype=tl.float32)
        start, stop = split_rows(pid_s, rows_per_split, N)
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        for n0 in range(start, stop, BLOCK):
            rn = n0 + tl.arange(0, BLOCK)
            n_ok = rn < stop
            kt = load_tile(kb, rn, skn, rd, n_ok[:, None] & d_ok[None, :])
            if HAS_MASK:  # padded keys (key_mask == 0) drop out of S and z
                km = tl.load(m_ptr + b * N + rn, mask=n_ok, other=0.0)
                n_ok = n_ok & (km != 0.0)
            cnt += n_ok.to(tl.float32)
            vt = load_tile(vb, rn, svn, re, n_ok[:, None] & e_ok[None, :])
            p1, p2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
            s0 += tl.sum(vt.to(tl.float32), axis=0)
            s1 += tl.dot(tl.trans(p1.to(vt.dtype)), vt)
            s2 += tl.dot(tl.trans(p2.to(vt.dtype)), vt)
            z1 += tl.sum(p1, axis=0)
            z2 += tl.sum(p2, axis=0)
        st = state_row(ws_ptr, pid_bh * NSPLIT + pid_s, EP, F1, F2)
        store_state(st, re, s0, s1, s2, tl.sum(cnt, axis=0), z1, z2, 1, EP, F1, F2)

    @triton.jit
    def _la_out_kernel(
        q_ptr, w_ptr, b_ptr, o_ptr, ws_ptr,
        N, H, D, E, FH, d_real, eps,
        sqb, sqh, sqn, sob, soh, son,
        TAYLOR: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr,
    ):  # fmt: skip
        # 1-D grid (no 65535 limit on B*H); consecutive programs share one (b, h) state
        pid = tl.program_id(0).to(tl.int64)
        n_blocks = tl.cdiv(N, BLOCK)
        pid_n = (pid % n_blocks).to(tl.int32)
        pid_bh = pid // n_blocks
        b = pid_bh // H
        h = pid_bh % H
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, FH, 0, DP, EP, F1)
        dt = q_ptr.dtype.element_ty
        w, bias = load_projection(w_ptr, b_ptr, h, D, FH, rd, rf, d_ok, f_ok, dt, TAYLOR, DP, F1)
        rn = pid_n * BLOCK + tl.arange(0, BLOCK)
        n_ok = rn < N
        qt = load_tile(q_ptr + b * sqb + h * sqh, rn, sqn, rd, n_ok[:, None] & d_ok[None, :])
        p1, p2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
        st = state_row(ws_ptr, pid_bh, EP, F1, F2)
        s0, s1, s2, z0, z1, z2 = load_state(st, re, EP, F1, F2)
        num = tl.dot(p1.to(dt), s1.to(dt)) + tl.dot(p2.to(dt), s2.to(dt))
        den = tl.sum(p1 * z1[None, :], axis=1) + tl.sum(p2 * z2[None, :], axis=1)
        if TAYLOR:
            num += s0[None, :]
            den += z0
        out = num / (den[:, None] + eps)
        tl.store(
            o_ptr + b * sob + h * soh + rn[:, None] * son + re[None, :],
            out.to(o_ptr.dtype.element_ty),
            mask=n_ok[:, None] & e_ok[None, :],
        )

    @triton.jit
    def _la_causal_kernel(
        q_ptr, k_ptr, v_ptr, w_ptr, b_ptr, o_ptr, ws_ptr,
        N, H, D, E, FH, rows_per_split, d_real, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        TAYLOR: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        BLOCK_E: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr, NSPLIT,
        HAS_INIT: tl.constexpr,
    ):  # fmt: skip
        """Chunked causal form over one (b, h, split, value-column block): the state of the
        earlier splits (ws, exclusive prefix) carried through chunks of BLOCK rows."""
        pid, pid_e, pid_bh, pid_s, b, h = split_program(H, NSPLIT)
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, FH, pid_e * BLOCK_E, DP, BLOCK_E, F1)
        dt = q_ptr.dtype.element_ty
        w, bias = load_projection(w_ptr, b_ptr, h, D, FH, rd, rf, d_ok, f_ok, dt, TAYLOR, DP, F1)
        st = state_row(ws_ptr, pid, EP, F1, F2)
        s0, s1, s2, z0, z1, z2 = init_state(st, re, HAS_INIT, BLOCK_E, EP, F1, F2)
        qb = q_ptr + b * sqb + h * sqh
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        ob = o_ptr + b * sob + h * soh
        ri = tl.arange(0, BLOCK)
        tril = ri[:, None] >= ri[None, :]
        start, stop = split_rows(pid_s, rows_per_split, N)
        for n0 in range(start, stop, BLOCK):
            rn = n0 + ri
            n_ok = rn < stop
            m2 = n_ok[:, None] & d_ok[None, :]
            qt = load_tile(qb, rn, sqn, rd, m2)
            kt = load_tile(kb, rn, skn, rd, m2)
            vt = load_tile(vb, rn, svn, re, n_ok[:, None] & e_ok[None, :])
            q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
            k1, k2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
            # contribution of earlier chunks through the state
            num = tl.dot(q1.to(dt), s1.to(dt)) + tl.dot(q2.to(dt), s2.to(dt))
            den = tl.sum(q1 * z1[None, :], axis=1) + tl.sum(q2 * z2[None, :], axis=1)
            # intra-chunk part: A = phi(q) phi(k)^T, lower triangle
            if TAYLOR:
                s = tl.dot(qt, tl.trans(kt)).to(tl.float32) / tl.sqrt(d_real)
                a = 1.0 + s + 0.5 * s * s
                num += s0[None, :]
                den += z0
            else:
                a = tl.dot(q1.to(dt), tl.trans(k1.to(dt))).to(tl.float32)
                a += tl.dot(q2.to(dt), tl.trans(k2.to(dt))).to(tl.float32)
            a = tl.where(tril & n_ok[None, :], a, 0.0)
            num += tl.dot(a.to(dt), vt)
            den += tl.sum(a, axis=1)
            out = num / (den[:, None] + eps)
            tl.store(
                ob + rn[:, None] * son + re[None, :], out.to(dt), mask=n_ok[:, None] & e_ok[None, :]
            )
            # update the state with this chunk's keys
            s0 += tl.sum(vt.to(tl.float32), axis=0)
            s1 += tl.dot(tl.trans(k1.to(dt)), vt)
            s2 += tl.dot(tl.trans(k2.to(dt)), vt)
            z0 += tl.sum(n_ok.to(tl.float32), axis=0)
            z1 += tl.sum(k1, axis=0)
            z2 += tl.sum(k2, axis=0)


# Launch settings on CUDA, per kernel: the fastest of benchmarks/kernels.py's sweep on an H100
# (bf16, B=8, H=12, N=16k, d=16, e=64; benchmarks/results/kernels-NVIDIA-H100-80GB-HBM3.json),
# except "out": 64 rows, since it reads the float32 state (128 rows spill 360 bytes/thread when
# compiled for sm_90; 64 rows none). Not yet re-timed on a GPU. "state" / "out" serve Hedgehog
# (and the causal split states). "taylor_state" / "taylor_out": the non-causal Taylor forward
# (kernels/linear_attn_fwd.py), picked by compiling for sm_90 offline with Triton 3.6 (ptxas
# -v, SASS of the inner loops): no spills, 194 and 233 registers, so one 8-warp state program
# and two 4-warp output programs per SM (SLOTS_PER_SM); 25 and 30 warp instructions per row
# in the inner loops, against 179 and 288 for "state" / "out". num_stages 1: both loops
# prefetch their next tile by hand; with Triton's cp.async pipelining of the state loop ptxas
# serialises every wgmma (C7515). COST_ROWS (a program's fixed cost, in rows) and MIN_ROWS
# decide how rows are cut into programs (linear_attn_fwd.balanced_runs). To be re-timed on
# the H200 with benchmarks/la_fwd_sweep.py (results/la-noncausal-fwd-sweep-NVIDIA-H200.jsonl):
# at B=8, N=16k these settings were within 1% of the best of the sweep; at small N the sweep's
# rows are too noisy (2-4x between identical settings) to move them. "taylor_bwd_*": the
# non-causal Taylor backward, from per-kernel H200 times (benchmarks/la_bwd_passes.py,
# results/la-noncausal-bwd-passes-NVIDIA-H200.jsonl): 4 warps beat 8 for the dq, dk, dv passes
# (dq 0.77 vs 1.99 ms at B=8, N=64k); the dS pass at 8 warps, one program per SM, as the
# forward's state pass (0.82 ms; at 4 warps 2.82). "_small": up to 2^19 rows (B=8, H=12 at 4k;
# B=1 at 32k) the dq and dv passes as 8-warp 128-row programs (dv at B=1, 4k: 0.010 vs 0.015
# ms; at B=8, 64k slower: 0.55 vs 0.46), backward / forward at B=1, 1k-4k 1.81-1.82 vs 2.10-2.24
# (benchmarks/la_bwd.py's main section with each setting, results/la-noncausal-bwd-*-H200).
_RUN2 = {"num_stages": 1, "SLOTS_PER_SM": 2, "MIN_ROWS": 64}
CONFIG: dict[str, dict[str, int]] = {
    "state": {"BLOCK": 64, "num_warps": 8},
    "out": {"BLOCK": 64, "num_warps": 8},
    "causal": {"BLOCK": 32, "num_warps": 4, "BLOCK_E": 32},
    "taylor_state": {"BLOCK": 64, "num_warps": 8, "num_stages": 1,
                     "SLOTS_PER_SM": 1, "COST_ROWS": 512, "MIN_ROWS": 64},
    "taylor_out": {"BLOCK": 64, "num_warps": 4, "num_stages": 1,
                   "SLOTS_PER_SM": 2, "COST_ROWS": 256, "MIN_ROWS": 64},
    "taylor_bwd_q": {**_RUN2, "BLOCK": 64, "num_warps": 4, "COST_ROWS": 256},
    "taylor_bwd_s": {**_RUN2, "BLOCK": 64, "num_warps": 8, "SLOTS_PER_SM": 1, "COST_ROWS": 512},
    "taylor_bwd_k": {**_RUN2, "BLOCK": 64, "num_warps": 4, "SPLIT": 1, "COST_ROWS": 256},
    "taylor_bwd_v": {**_RUN2, "BLOCK": 64, "num_warps": 4, "COST_ROWS": 256},
    # inputs of at most MAX_ROWS rows (B * H * N): 8-warp dq and dv programs of 128-row blocks
    # (they replace "taylor_bwd_q" / "_v" there: a change to those needs one here too)
    "taylor_bwd_q_small": {**_RUN2, "BLOCK": 128, "num_warps": 8, "SLOTS_PER_SM": 1,
                           "COST_ROWS": 256, "MAX_ROWS": 1 << 19},
    "taylor_bwd_v_small": {**_RUN2, "BLOCK": 128, "num_warps": 8, "SLOTS_PER_SM": 1,
                           "COST_ROWS": 256, "MAX_ROWS": 1 << 19},
}  # fmt: skip


def la_forward_triton(q, k, v, feature_map, causal, eps, w, bias, key_mask=None):
    """Forward launches; returns (out, state, nsplit, rows) where state (float32) is what the
    backward reuses: the total state per (b, h) (non-causal), or the exclusive prefix state
    per (b, h, split) (causal, None with one split)."""
    B, H, N, D = q.shape
    E = v.shape[-1]
    fh = 0 if feature_map == "taylor" else w.shape[-1]
    taylor, DP, F1, F2 = feature_sizes(feature_map, D, fh)
    if taylor and not causal and DP <= TAYLOR_FWD_MAX_DP:
        cfg_s, cfg_o = CONFIG["taylor_state"], CONFIG["taylor_out"]
        return taylor_forward(q, k, v, eps, key_mask, cfg_s, cfg_o)
    q = q if q.stride(-1) == 1 else q.contiguous()
    if taylor:  # no projection: any pointer will do (never read), and no fill kernel runs
        w, bias = q, q
    else:
        w = w.to(q.dtype).contiguous()
        bias = (
            torch.zeros(H, fh, device=q.device, dtype=torch.float32)
            if bias is None
            else bias.float().contiguous()
        )
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    out = torch.empty(B, H, N, E, device=q.device, dtype=q.dtype)
    cuda = q.is_cuda
    sms = multiprocessors(q.device)
    EP = next_pow2(E)
    W = state_width(EP, F1, F2)
    sblock = CONFIG["state"]["BLOCK"] if cuda else 16
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else out

    def key_states(nsplit: int, rows: int, masked: bool) -> torch.Tensor:
        """(B*H, nsplit, W) float32: the key state of each split of `rows` rows."""
        local = torch.empty(B * H, nsplit, W, device=q.device, dtype=torch.float32)
        _la_state_kernel[(B * H, nsplit)](
            k, v, w, bias, mask, local, N, H, D, E, fh, rows, float(D),
            k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            TAYLOR=taylor, BLOCK=sblock, DP=DP, EP=EP, F1=F1, F2=F2, NSPLIT=nsplit,
            HAS_MASK=masked, num_warps=CONFIG["state"]["num_warps"],
        )  # fmt: skip
        return local

    if causal:
        cfg = CONFIG["causal"]
        BLOCK = cfg["BLOCK"] if cuda else 16
        BLOCK_E = min(EP, cfg["BLOCK_E"] if F2 >= 256 else 64)
        n_eb = triton.cdiv(E, BLOCK_E)
        blk = max(BLOCK, sblock)
        nsplit, rows = sequence_splits(N, B * H * n_eb, blk, 4 * BLOCK if cuda else blk, sms)
        state = None
        if nsplit > 1:  # per-split key states, then their exclusive prefix sums over splits
            local = key_states(nsplit, rows, masked=False)
            state = torch.nn.functional.pad(local[:, :-1].cumsum(1), (0, 0, 1, 0))
        _la_causal_kernel[(B * H * nsplit, n_eb)](
            q, k, v, w, bias, out, state if state is not None else out,
            N, H, D, E, fh, rows, float(D), eps,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            TAYLOR=taylor, BLOCK=BLOCK, DP=DP, EP=EP, BLOCK_E=BLOCK_E, F1=F1, F2=F2,
            NSPLIT=nsplit, HAS_INIT=state is not None, num_warps=cfg["num_warps"],
        )  # fmt: skip
        return out, state, nsplit, rows
    # state pass split over the sequence so that about WAVES x SMs programs run at every N
    nsplit, rows = sequence_splits(N, B * H, sblock, 2 * sblock if cuda else sblock, sms)
    local = key_states(nsplit, rows, masked=key_mask is not None)
    state = local.sum(1) if nsplit > 1 else local.view(B * H, W)
    BLOCK = CONFIG["out"]["BLOCK"] if cuda else 16
    _la_out_kernel[(triton.cdiv(N, BLOCK) * B * H,)](
        q, w, bias, out, state, N, H, D, E, fh, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        TAYLOR=taylor, BLOCK=BLOCK, DP=DP, EP=EP, F1=F1, F2=F2,
        num_warps=CONFIG["out"]["num_warps"],
    )  # fmt: skip
    return out, state, nsplit, rows


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, w, bias, feature_map, causal, eps, key_mask):
        out, state, nsplit, rows = la_forward_triton(
            q, k, v, feature_map, causal, eps, w, bias, key_mask
        )
        ctx.save_for_backward(q, k, v, w, bias, key_mask, state)
        ctx.cfg = (feature_map, causal, eps, nsplit, rows)
        return out

    @staticmethod
    def backward(ctx, go):
        q, k, v, w, bias, key_mask, state = ctx.saved_tensors
        feature_map, causal, eps, nsplit, rows = ctx.cfg
        if feature_map == "taylor":  # fused Triton backward, no reference recompute
            if not causal and noncausal_backward_fits(q, v):  # tensor cores
                grads = taylor_backward_noncausal(q, k, v, go, state, eps, key_mask, CONFIG)
            else:  # kernels/linear_attn_bwd.py
                grads = taylor_backward(q, k, v, go, state, causal, eps, nsplit, rows, key_mask)
            res = [g if t.requires_grad else None for g, t in zip(grads, (q, k, v))]
            return (*res, None, None, None, None, None, None)
        # Hedgehog: gradients by recomputing the float32 reference under autograd
        with torch.enable_grad():
            ins = [t.detach().requires_grad_(t.requires_grad) if t is not None else None
                   for t in (q, k, v, w, bias)]  # fmt: skip
            ref = linear_attention_reference(
                ins[0], ins[1], ins[2], feature_map, causal, eps, ins[3], ins[4],
                key_mask=key_mask,
            )  # fmt: skip
            wanted = [t for t in ins if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(ref, wanted, go) if wanted else [])
        res = [next(grads) if t is not None and t.requires_grad else None for t in ins]
        return (*res, None, None, None, None)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: FeatureMap = "taylor",
    causal: bool = False,
    eps: float = 1e-6,
    hedgehog_weight: torch.Tensor | None = None,
    hedgehog_bias: torch.Tensor | None = None,
    backend: str = "auto",
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linear attention out_i = phi(q_i) S / (phi(q_i).z + eps) with S = sum_j phi(k_j) v_j^T.

    q, k: (B, H, N, d); v: (B, H, N, e); returns (B, H, N, e) in q's dtype. feature_map:
    "taylor" (BASED, 1 + d + d^2 features; keep d small, e.g. 16), "hedgehog" (needs
    hedgehog_weight (H, d, F), optional hedgehog_bias (H, F); 2F features) or a callable
    (runs the reference). causal=True sums over j <= i. backend: "auto" (Triton on CUDA or under
    TRITON_INTERPRET=1, else the PyTorch reference), "triton" or "reference". key_mask: (B, N),
    nonzero = real token; keys where it is 0 (padding) are left out of S and z (non-causal on
    the Triton path; causal with a mask runs the reference). On the Triton path the Taylor
    map's backward is fused too (kernels/linear_attn_bwd*.py); Hedgehog's reruns the reference.
    """
    check_inputs(q, k, v, feature_map, hedgehog_weight, hedgehog_bias, key_mask, eps)
    builtin = isinstance(feature_map, str) and feature_map in ("taylor", "hedgehog")
    if (
        builtin
        and q.numel() * v.shape[-1] > 0  # empty inputs: the reference (no zero-size grids)
        and not (causal and key_mask is not None)
        and q.dtype != torch.float64
        and (feature_map != "taylor" or q.shape[-1] <= 32)
        and use_triton(backend, q, k, v)
    ):
        training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        N = q.shape[2]
        quadratic = causal and feature_map == "taylor" and quadratic_form_fits(q, v)
        if quadratic and not training and N <= PARALLEL_MAX_N:
            return taylor_causal_parallel(q, k, v, float(eps))  # quadratic form: short N
        if quadratic and training and N <= PARALLEL_TRAIN_MAX_N and q.dtype != torch.float32:
            # float32 keeps the chunked kernels: one TF32 pass per product here (dq 2.6e-3
            # off at value mean 10 on the H200 and growing with the mean)
            return taylor_causal_parallel_train(q, k, v, float(eps))  # with its own backward
        return _LinearAttention.apply(
            q, k, v, hedgehog_weight, hedgehog_bias, feature_map, causal, float(eps), key_mask
        )
    if backend == "triton" and not builtin:
        raise ValueError("backend='triton' supports feature_map 'taylor' or 'hedgehog' only")
    return linear_attention_reference(
        q, k, v, feature_map, causal, eps, hedgehog_weight, hedgehog_bias, key_mask=key_mask
    )


def linear_attention_flops(B: int, H: int, N: int, d: int, e: int, n_features: int) -> float:
    """Useful FLOPs of non-causal linear attention: state + output matmuls (2 * 2*N*F*e)."""
    return 4.0 * B * H * N * n_features * e
