"""Fused non-causal forward of Taylor (BASED) linear attention, built for the tensor cores.

phi(x) = [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))]. Two kernels, one float32 state
per (b, h) between them (workspace layout: kernels/taylor.py, which the backward reads):

1. `_taylor_state_kernel`, per (b, h, sequence split), three tensor-core products per block
   of keys and no reduction over rows on the CUDA cores:
   S2 += vec(k k^T)^T V (the 256-row expansion built transposed, directly in the MMA
   operand layout), and with A = [k^T; 1; 0] (AUX rows): A V = [S1; s0] and A K = [Z2; z1]
   (Z2 = K^T K is z2 as a d x d matrix); z0 counts the keys.
2. `_taylor_out_kernel`, per (b, h, run of row blocks): the total state is read once per
   program, scaled (feature constants, 1 / number of keys) and cast to the compute dtype,
   then every row block does num = q S1 + vec(q q^T) S2 + s0 on the tensor cores and
   den = z0 + q.z1 + q^T Z2 q (a d x d product, split-tf32 for float32 accuracy) instead of a
   256-wide dot per row. Dividing num and den (and eps) by the key count changes nothing in
   exact arithmetic and keeps a float16 state in range at long N.

The launch settings come in as dicts (kernels/linear_attn.py's CONFIG); the split rules are
`state_splits` and `out_runs`.
"""

from __future__ import annotations

import functools

import torch

from kernels.common import HAS_TRITON, next_pow2
from kernels.taylor import feature_sizes, multiprocessors, state_width

#: Rows of the auxiliary operand A = [k^T; 1; 0]: >= d + 1, and 64 so that it is one
#: warpgroup-wide (wgmma) tile on Hopper instead of a 16-row mma.sync repeated by every warp.
AUX_ROWS = 64

#: Widest padded head dim the fused forward takes; wider Taylor heads (d 17..32) keep the
#: generic kernels of kernels/linear_attn.py (a 1024-row state would not fit on chip).
TAYLOR_FWD_MAX_DP = 16

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import (
        load_tile,
        split_rows,
        state_program,
        state_row,
        store_taylor_state,
    )

    @triton.jit
    def _key_tile(kb, vb, mb, rn, stop, skn, svn, rd, re, ra, D, E, HAS_MASK: tl.constexpr):
        """(k, v, k^T in the first rows of an AUX-row tile, kept rows) of the keys `rn`; rows
        past `stop` or padded (key_mask == 0) load as zeros, so they drop out of S and z."""
        keep = rn < stop
        if HAS_MASK:
            keep = keep & (tl.load(mb + rn, mask=keep, other=0.0) != 0.0)
        kt = load_tile(kb, rn, skn, rd, keep[:, None] & (rd < D)[None, :])
        vt = load_tile(vb, rn, svn, re, keep[:, None] & (re < E)[None, :])
        aux = tl.load(kb + rn[None, :] * skn + ra[:, None], keep[None, :] & (ra < D)[:, None], 0.0)
        return kt, vt, aux, keep

    @triton.jit
    def _taylor_state_kernel(
        k_ptr, v_ptr, m_ptr, ws_ptr,
        N, H, D, E, rows_per_split, d_real,
        skb, skh, skn, svb, svh, svn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AUX: tl.constexpr,
        NSPLIT, HAS_MASK: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """Key state (s0, S1, S2, z0, z1, z2) of one (b, h, split) into one workspace row."""
        pid_bh, pid_s, b, h = state_program(H)
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        ra = tl.arange(0, AUX)
        dt = k_ptr.dtype.element_ty
        s2 = tl.zeros((F2, EP), dtype=tl.float32)
        sa = tl.zeros((AUX, EP), dtype=tl.float32)  # rows < DP: S1 (unscaled); row DP: s0
        za = tl.zeros((AUX, DP), dtype=tl.float32)  # rows < DP: K^T K; row DP: sum of keys
        cnt = tl.zeros((BLOCK,), dtype=tl.float32)
        start, stop = split_rows(pid_s, rows_per_split, N)
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        rn = start + tl.arange(0, BLOCK)
        nxt = _key_tile(kb, vb, m_ptr + b * N, rn, stop, skn, svn, rd, re, ra, D, E, HAS_MASK)
        for n0 in range(start, stop, BLOCK):
            # this block's keys were loaded during the previous block's products; load the next
            kt, vt, aux, keep = nxt
            rn = n0 + BLOCK + tl.arange(0, BLOCK)
            nxt = _key_tile(kb, vb, m_ptr + b * N, rn, stop, skn, svn, rd, re, ra, D, E, HAS_MASK)
            kf = tl.trans(kt).to(tl.float32)  # (DP, BLOCK)
            p2t = tl.reshape(kf[:, None, :] * kf[None, :, :], (F2, BLOCK)).to(dt)
            s2 = tl.dot(p2t, vt, s2, input_precision=PREC)
            aux = tl.where((ra[:, None] == DP) & keep[None, :], 1.0, aux.to(tl.float32)).to(dt)
            sa = tl.dot(aux, vt, sa, input_precision=PREC)
            za = tl.dot(aux, kt, za, input_precision=PREC)
            cnt += keep.to(tl.float32)
        # the feature constants of phi, applied once: P1 = k / d^(1/4), P2 = vec(k k^T) * c2
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        st = state_row(ws_ptr, pid_bh * NSPLIT + pid_s, EP, DP, F2)
        store_taylor_state(st, sa, s2, za, tl.sum(cnt, axis=0), c1, c2, 1.0, DP, EP)

    @triton.jit
    def _taylor_out_kernel(
        q_ptr, o_ptr, ws_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real, eps,
        sqb, sqh, sqn, sob, soh, son,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
    ):  # fmt: skip
        """Output rows of one run of row blocks of one (b, h), from its total key state."""
        # 1-D grid (no 65535 limit on B*H); consecutive programs share one (b, h) state
        pid = tl.program_id(0).to(tl.int64)
        pid_bh = pid // n_runs
        pid_r = (pid % n_runs).to(tl.int32)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F2)
        d_ok = rd < D
        e_ok = re < E
        dt = q_ptr.dtype.element_ty
        # the state, once per program: phi's constants folded in, divided by the key count
        st = state_row(ws_ptr, pid_bh, EP, DP, F2)
        oz = EP * (1 + DP + F2)
        z0 = tl.load(st + oz)
        inv = 1.0 / tl.maximum(z0, 1.0)
        c1 = inv / tl.sqrt(tl.sqrt(d_real))
        c2 = inv / (1.4142135623730951 * tl.sqrt(d_real))
        s0 = tl.load(st + re) * inv
        s1 = (tl.load(st + EP + rd[:, None] * EP + re[None, :]) * c1).to(dt)
        s2 = (tl.load(st + EP + DP * EP + rf[:, None] * EP + re[None, :]) * c2).to(dt)
        z1 = tl.load(st + oz + 1 + rd) * c1
        z2 = tl.load(st + oz + 1 + DP + rd[:, None] * DP + rd[None, :]) * c2
        den0 = z0 * inv + eps * inv
        start = pid_r * rows_per_run
        stop = tl.minimum(start + rows_per_run, N)
        qb = q_ptr + b * sqb + h * sqh
        ob = o_ptr + b * sob + h * soh
        rn = start + tl.arange(0, BLOCK)
        q_next = load_tile(qb, rn, sqn, rd, (rn < stop)[:, None] & d_ok[None, :])
        for n0 in range(start, stop, BLOCK):
            rn = n0 + tl.arange(0, BLOCK)
            n_ok = rn < stop
            qt = q_next  # prefetched: the next block's load runs under this block's products
            rn_next = rn + BLOCK
            q_next = load_tile(qb, rn_next, sqn, rd, (rn_next < stop)[:, None] & d_ok[None, :])
            qf = qt.to(tl.float32)
            p2 = tl.reshape(qf[:, :, None] * qf[:, None, :], (BLOCK, F2)).to(dt)
            num = tl.dot(p2, s2, tl.dot(qt, s1))
            t = tl.dot(qf, z2, input_precision="tf32x3") + z1[None, :]
            den = tl.sum(t * qf, axis=1) + den0
            out = (num + s0[None, :]) / den[:, None]
            tl.store(
                ob + rn[:, None] * son + re[None, :],
                out.to(o_ptr.dtype.element_ty),
                mask=n_ok[:, None] & e_ok[None, :],
            )


@functools.lru_cache(maxsize=4096)
def balanced_runs(
    n: int, heads: int, block: int, slots: int, cost_rows: int, min_rows: int
) -> tuple[int, int]:
    """(runs per head, rows per run): n rows of each of `heads` heads cut into runs of whole
    blocks, one program each, with `slots` programs resident on the GPU at once. Picks the
    least modelled time rounds x (rows per run + cost_rows), rounds = ceil(programs / slots)
    and cost_rows a program's fixed cost in rows (its state store or load), so that the last
    round is not left nearly empty; runs of about min_rows rows or more; ties: fewer runs."""
    blocks = -(-n // block)
    cap = max(1, min(blocks, -(-n // max(min_rows, block)), -(-8 * slots // heads)))
    best = (0, 1, blocks * block)
    for want in range(1, cap + 1):
        per = -(-blocks // want)
        runs = -(-blocks // per)
        t = -(-heads * runs // slots) * (per * block + cost_rows)
        if want == 1 or t < best[0]:
            best = (t, runs, per * block)
    return best[1], best[2]


def configured_runs(n: int, heads: int, block: int, cfg: dict, sms: int) -> tuple[int, int]:
    """`balanced_runs` with a launch config's SLOTS_PER_SM (times the SMs), COST_ROWS and
    MIN_ROWS."""
    slots = cfg["SLOTS_PER_SM"] * sms
    return balanced_runs(n, heads, block, slots, cfg["COST_ROWS"], cfg["MIN_ROWS"])


def state_splits(n: int, heads: int, block: int, cfg: dict, sms: int | None) -> tuple[int, int]:
    """(splits, rows per split) of the state pass (`balanced_runs` with cfg's SLOTS_PER_SM,
    COST_ROWS, MIN_ROWS). sms=None (the interpreter): two splits whenever n has two blocks."""
    if sms is None:
        rows = -(-n // 2 // block) * block if n > block else -(-n // block) * block
        return -(-n // rows), rows
    return configured_runs(n, heads, block, cfg, sms)


def out_runs(n: int, heads: int, block: int, cfg: dict, sms: int | None) -> tuple[int, int]:
    """(runs per head, rows per run) of the output pass: each program a run of whole row blocks
    of one head, whose state it reads once (`balanced_runs` with cfg's settings). sms=None
    (the interpreter): runs of two blocks, so the loop over blocks is exercised."""
    if sms is None:
        blocks = -(-n // block)
        return -(-blocks // 2), 2 * block
    return configured_runs(n, heads, block, cfg, sms)


def taylor_state(k, v, key_mask, cfg: dict) -> tuple[torch.Tensor, int, int]:
    """(state, nsplit, rows): the state pass and the sum over its splits; state (B*H, W)
    float32 is the total key state per (b, h), which the output pass and the backward read."""
    B, H, N, D = k.shape
    E = v.shape[-1]
    _, DP, F1, F2 = feature_sizes("taylor", D, 0)
    EP = next_pow2(E)
    W = state_width(EP, F1, F2)
    k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k, v))
    block = cfg["BLOCK"] if k.is_cuda else 16
    nsplit, rows = state_splits(N, B * H, block, cfg, multiprocessors(k.device))
    local = torch.empty(B * H, nsplit, W, device=k.device, dtype=torch.float32)
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else local
    _taylor_state_kernel[(B * H, nsplit)](
        k, v, mask, local, N, H, D, E, rows, float(D),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        BLOCK=block, DP=DP, EP=EP, AUX=max(AUX_ROWS, 2 * DP), NSPLIT=nsplit,
        HAS_MASK=key_mask is not None, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        PREC="tf32x3" if k.dtype == torch.float32 else "tf32",  # float32: float32-accurate S
    )  # fmt: skip
    return (local.sum(1) if nsplit > 1 else local.view(B * H, W)), nsplit, rows


def taylor_out(q, state, e: int, eps: float, cfg: dict) -> torch.Tensor:
    """The output pass: (B, H, N, e) in q's dtype from the total key state of `taylor_state`."""
    B, H, N, D = q.shape
    DP = feature_sizes("taylor", D, 0)[1]
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty(B, H, N, e, device=q.device, dtype=q.dtype)
    block = cfg["BLOCK"] if q.is_cuda else 16
    runs, run_rows = out_runs(N, B * H, block, cfg, multiprocessors(q.device))
    _taylor_out_kernel[(B * H * runs,)](
        q, out, state, N, H, D, e, run_rows, runs, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        BLOCK=block, DP=DP, EP=next_pow2(e),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return out


def taylor_forward(q, k, v, eps, key_mask, cfg_state: dict, cfg_out: dict):
    """(out, state, nsplit, rows) of the non-causal Taylor forward (two kernel launches and,
    with several splits, one sum)."""
    state, nsplit, rows = taylor_state(k, v, key_mask, cfg_state)
    return taylor_out(q, state, v.shape[-1], eps, cfg_out), state, nsplit, rows
