"""Fused Triton backward of Taylor (BASED) linear attention, causal and non-causal.

With a_ij = phi(q_i).phi(k_j) = 1 + s + s^2/2 (s = q_i.k_j / sqrt(d)), num_i = sum_j a_ij v_j,
den_i = sum_j a_ij and out_i = num_i / (den_i + eps), the upstream gradient g_i gives
dnum_i = g_i r_i and dden_i = -r_i (g_i . out_i) with r_i = 1 / (den_i + eps). Then

- dphi(q_i) = S dnum_i + z dden_i (S, z: the key state the query saw);
- dS = sum_i phi(q_i) dnum_i^T, dz = sum_i phi(q_i) dden_i (over the queries that saw key j);
- dphi(k_j) = dS v_j + dz, dv_j = dS^T phi(k_j);

and dq, dk follow through the feature map (`taylor_input_grad`). Causal: the same over the
earlier (dq) or later (dk, dv) chunks, plus the intra-chunk part as a masked quadratic form,
da_ij = dnum_i.v_j + dden_i, dq_i += sum_j da_ij (1 + s_ij) k_j / sqrt(d), and likewise
dk_j, dv_j. Three kernels, over (b, h, sequence split[, value-column block]):

1. `_la_bwd_q_kernel` walks its split forward from the key state the forward left (total, or
   prefix of the earlier splits; causal: updated chunk by chunk): r, dden and dq;
2. `_la_bwd_state_kernel` sums dS, dz over the queries of each split (like the forward's
   state pass, with dnum in place of v); causal: exclusive suffix sums over the splits;
3. `_la_bwd_kv_kernel` walks its split backward from dS, dz of the later splits (causal;
   updated chunk by chunk) or of all queries (non-causal): dk, dv.

dq and dk are summed over the value-column blocks (float32 partials, one torch sum). In the
dq pass each block uses its own share of dden (-r times g . out over its columns; dq is
linear in it) and writes it; the shares are summed (one small torch sum) for passes 2 and 3.

Nothing runs through the PyTorch reference; phi is never written to memory.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2
from kernels.taylor import feature_sizes, multiprocessors, sequence_splits, state_width

# Launch settings on CUDA (rows per chunk, value columns per program, warps): the fewest
# register spills among benchmarks/kernels.py's la_tune candidates when compiled for sm_90
# (bf16, d=16, e=64); not yet timed on a GPU (la_tune sweeps them by fwd+bwd time).
CONFIG_BWD: dict[str, dict[str, int]] = {
    "q": {"BLOCK": 32, "BLOCK_E": 32, "num_warps": 8},
    "state": {"BLOCK": 64, "num_warps": 8},
    "kv": {"BLOCK": 16, "BLOCK_E": 32, "num_warps": 4},
}

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import (
        feature_parts,
        head_ranges,
        init_state,
        load_tile,
        split_program,
        split_rows,
        state_program,
        state_row,
        store_state,
        taylor_input_grad,
    )

    @triton.jit
    def _la_bwd_q_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, o_ptr, st_ptr, dq_ptr, r_ptr, dd_ptr,
        N, H, D, E, BH, rows_per_split, d_real, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn, sob, soh, son,
        CAUSAL: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr,
        EP: tl.constexpr, BLOCK_E: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr,
        NSPLIT,
    ):  # fmt: skip
        pid, pid_e, pid_bh, pid_s, b, h = split_program(H, NSPLIT)
        first_i = (pid_e == 0).to(tl.int32)  # r is written by one value-column block
        ri = tl.arange(0, BLOCK)
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, F1, pid_e * BLOCK_E, DP, BLOCK_E, F1)
        dt = q_ptr.dtype.element_ty
        sq = tl.sqrt(d_real)
        w = tl.zeros((DP, F1), dtype=dt)  # Taylor: no projection
        bias = tl.zeros((F1,), dtype=tl.float32)
        # the key state seen by this split's first query
        st = state_row(st_ptr, pid if CAUSAL else pid_bh, EP, F1, F2)
        s0, s1, s2, z0, z1, z2 = init_state(st, re, HAS_INIT, BLOCK_E, EP, F1, F2)
        tril = ri[:, None] >= ri[None, :]
        qb = q_ptr + b * sqb + h * sqh
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        gb = g_ptr + b * sgb + h * sgh
        ob = o_ptr + b * sob + h * soh
        start, stop = split_rows(pid_s, rows_per_split, N)
        for n0 in range(start, stop, BLOCK):
            rn = n0 + ri
            n_ok = rn < stop
            me = n_ok[:, None] & e_ok[None, :]
            md = n_ok[:, None] & d_ok[None, :]
            qt = load_tile(qb, rn, sqn, rd, md)
            gt = load_tile(gb, rn, sgn, re, me).to(tl.float32)
            ot = load_tile(ob, rn, son, re, me)
            q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
            den = z0 + tl.sum(q1 * z1[None, :], axis=1) + tl.sum(q2 * z2[None, :], axis=1)
            if CAUSAL:
                kt = load_tile(kb, rn, skn, rd, md)
                vt = load_tile(vb, rn, svn, re, me)
                s = tl.dot(qt, tl.trans(kt)).to(tl.float32) / sq
                causal_ok = tril & n_ok[None, :]
                den += tl.sum(tl.where(causal_ok, 1.0 + s + 0.5 * s * s, 0.0), axis=1)
            r = 1.0 / (den + eps)
            dnum = gt * r[:, None]
            # this block's share of dden = -r (g . out): dq and dk are linear in it
            dden = -r * tl.sum(gt * ot.to(tl.float32), axis=1)
            g1 = tl.dot(dnum.to(dt), tl.trans(s1.to(dt))).to(tl.float32)
            g2 = tl.dot(dnum.to(dt), tl.trans(s2.to(dt))).to(tl.float32)
            g1 += dden[:, None] * z1[None, :]
            g2 += dden[:, None] * z2[None, :]
            dq = taylor_input_grad(qt, g1, g2, d_real, BLOCK, DP)
            if CAUSAL:
                da = tl.dot(dnum.to(dt), tl.trans(vt)).to(tl.float32) + dden[:, None]
                da = tl.where(causal_ok, da * (1.0 + s), 0.0)
                dq += tl.dot(da.to(dt), kt).to(tl.float32) / sq
                k1, k2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
                s1 += tl.dot(tl.trans(k1.to(dt)), vt)
                s2 += tl.dot(tl.trans(k2.to(dt)), vt)
                z0 += tl.sum(n_ok.to(tl.float32), axis=0)
                z1 += tl.sum(k1, axis=0)
                z2 += tl.sum(k2, axis=0)
            tl.store(
                dq_ptr + ((pid_e * BH + pid_bh) * N + rn[:, None]) * D + rd[None, :],
                dq,
                mask=md,
            )
            tl.store(r_ptr + pid_bh * N + rn, r, mask=rn < stop * first_i)
            tl.store(dd_ptr + (pid_e * BH + pid_bh) * N + rn, dden, mask=n_ok)

    @triton.jit
    def _la_bwd_state_kernel(
        q_ptr, g_ptr, r_ptr, dd_ptr, dst_ptr,
        N, H, D, E, rows_per_split, d_real,
        sqb, sqh, sqn, sgb, sgh, sgn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, F1: tl.constexpr,
        F2: tl.constexpr, NSPLIT,
    ):  # fmt: skip
        """dS = sum_i phi(q_i) dnum_i^T, dz = sum_i phi(q_i) dden_i over one (b, h, split)."""
        pid_bh, pid_s, b, h = state_program(H)
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, F1, 0, DP, EP, F1)
        dt = q_ptr.dtype.element_ty
        w = tl.zeros((DP, F1), dtype=dt)
        bias = tl.zeros((F1,), dtype=tl.float32)
        ds0 = tl.zeros((EP,), dtype=tl.float32)
        ds1 = tl.zeros((F1, EP), dtype=tl.float32)
        ds2 = tl.zeros((F2, EP), dtype=tl.float32)
        dz0 = tl.zeros((BLOCK,), dtype=tl.float32)
        dz1 = tl.zeros((F1,), dtype=tl.float32)
        dz2 = tl.zeros((F2,), dtype=tl.float32)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        start, stop = split_rows(pid_s, rows_per_split, N)
        for n0 in range(start, stop, BLOCK):
            rn = n0 + tl.arange(0, BLOCK)
            n_ok = rn < stop
            qt = load_tile(qb, rn, sqn, rd, n_ok[:, None] & d_ok[None, :])
            gt = load_tile(gb, rn, sgn, re, n_ok[:, None] & e_ok[None, :])
            r = tl.load(r_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
            dden = tl.load(dd_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
            dnum = (gt.to(tl.float32) * r[:, None]).to(dt)
            q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
            ds0 += tl.sum(dnum.to(tl.float32), axis=0)
            ds1 += tl.dot(tl.trans(q1.to(dt)), dnum)
            ds2 += tl.dot(tl.trans(q2.to(dt)), dnum)
            dz0 += dden
            dz1 += tl.sum(q1 * dden[:, None], axis=0)
            dz2 += tl.sum(q2 * dden[:, None], axis=0)
        st = state_row(dst_ptr, pid_bh * NSPLIT + pid_s, EP, F1, F2)
        store_state(st, re, ds0, ds1, ds2, tl.sum(dz0, axis=0), dz1, dz2, 1, EP, F1, F2)

    @triton.jit
    def _la_bwd_kv_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, r_ptr, dd_ptr, m_ptr, dst_ptr, dk_ptr, dv_ptr,
        N, H, D, E, BH, rows_per_split, d_real,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn, sdb, sdh, sdn,
        CAUSAL: tl.constexpr, HAS_INIT: tl.constexpr, HAS_MASK: tl.constexpr,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, BLOCK_E: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr, NSPLIT,
    ):  # fmt: skip
        pid, pid_e, pid_bh, pid_s, b, h = split_program(H, NSPLIT)
        first = pid_e == 0
        ri = tl.arange(0, BLOCK)
        rd, re, rf, d_ok, e_ok, f_ok = head_ranges(D, E, F1, pid_e * BLOCK_E, DP, BLOCK_E, F1)
        dt = q_ptr.dtype.element_ty
        sq = tl.sqrt(d_real)
        w = tl.zeros((DP, F1), dtype=dt)  # Taylor: no projection
        bias = tl.zeros((F1,), dtype=tl.float32)
        # dS, dz of the queries after this split (causal) or of all (non-causal)
        st = state_row(dst_ptr, pid if CAUSAL else pid_bh, EP, F1, F2)
        ds0, ds1, ds2, dz0, dz1, dz2 = init_state(st, re, HAS_INIT, BLOCK_E, EP, F1, F2)
        if HAS_INIT:  # the z terms belong to one value block
            dz1 = tl.where(first, dz1, 0.0)
            dz2 = tl.where(first, dz2, 0.0)
        tril = ri[:, None] >= ri[None, :]
        qb = q_ptr + b * sqb + h * sqh
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        gb = g_ptr + b * sgb + h * sgh
        start, stop = split_rows(pid_s, rows_per_split, N)
        n_chunks = tl.cdiv(stop - start, BLOCK)
        for it in range(0, n_chunks):
            rn = start + (n_chunks - 1 - it) * BLOCK + ri  # last chunk first
            n_ok = rn < stop
            md = n_ok[:, None] & d_ok[None, :]
            me = n_ok[:, None] & e_ok[None, :]
            kt = load_tile(kb, rn, skn, rd, md)
            vt = load_tile(vb, rn, svn, re, me)
            k1, k2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
            g1 = tl.dot(vt, tl.trans(ds1.to(dt))).to(tl.float32) + dz1[None, :]
            g2 = tl.dot(vt, tl.trans(ds2.to(dt))).to(tl.float32) + dz2[None, :]
            dk = taylor_input_grad(kt, g1, g2, d_real, BLOCK, DP)
            dv = tl.dot(k1.to(dt), ds1.to(dt)).to(tl.float32)
            dv += tl.dot(k2.to(dt), ds2.to(dt)).to(tl.float32) + ds0[None, :]
            if CAUSAL:
                qt = load_tile(qb, rn, sqn, rd, md)
                gt = load_tile(gb, rn, sgn, re, me)
                r = tl.load(r_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
                dden = tl.load(dd_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
                dden = tl.where(first, dden, 0.0)  # the z terms belong to one value block
                dnum = gt.to(tl.float32) * r[:, None]
                q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
                # rows i (queries) x columns j (keys) of this chunk, i >= j
                s = tl.dot(qt, tl.trans(kt)).to(tl.float32) / sq
                causal_ok = tril & n_ok[None, :] & n_ok[:, None]
                a = tl.where(causal_ok, 1.0 + s + 0.5 * s * s, 0.0)
                da = tl.dot(dnum.to(dt), tl.trans(vt)).to(tl.float32) + dden[:, None]
                da = tl.where(causal_ok, da * (1.0 + s), 0.0)
                dv += tl.dot(tl.trans(a.to(dt)), dnum.to(dt)).to(tl.float32)
                dk += tl.dot(tl.trans(da.to(dt)), qt).to(tl.float32) / sq
                ds0 += tl.sum(dnum, axis=0)
                ds1 += tl.dot(tl.trans(q1.to(dt)), dnum.to(dt))
                ds2 += tl.dot(tl.trans(q2.to(dt)), dnum.to(dt))
                dz1 += tl.sum(q1 * dden[:, None], axis=0)
                dz2 += tl.sum(q2 * dden[:, None], axis=0)
            keep = n_ok
            if HAS_MASK:  # padded keys (key_mask == 0) were left out of the forward
                km = tl.load(m_ptr + b * N + rn, mask=n_ok, other=0.0)
                keep = n_ok & (km != 0.0)
            dk = tl.where(keep[:, None], dk, 0.0)
            dv = tl.where(keep[:, None], dv, 0.0)
            tl.store(
                dk_ptr + ((pid_e * BH + pid_bh) * N + rn[:, None]) * D + rd[None, :],
                dk,
                mask=md,
            )
            tl.store(
                dv_ptr + b * sdb + h * sdh + rn[:, None] * sdn + re[None, :],
                dv.to(dv_ptr.dtype.element_ty),
                mask=me,
            )


def taylor_backward(q, k, v, out, grad_out, state, causal, eps, nsplit, rows, key_mask=None):
    """(dq, dk, dv) of Taylor linear attention from the forward's saved output and state.

    state: float32 workspace rows of the forward (kernels/taylor.py): total key state per
    (b, h) (non-causal) or exclusive prefix per (b, h, split) of `rows` rows (causal; None
    with one split). Causal with key_mask is not supported (the forward runs the reference).
    """
    B, H, N, D = q.shape
    E = v.shape[-1]
    _, DP, F1, F2 = feature_sizes("taylor", D, 0)
    EP = next_pow2(E)
    W = state_width(EP, F1, F2)
    BH = B * H
    cuda = q.is_cuda
    q, k, v, o, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, out, grad_out))
    f32 = dict(device=q.device, dtype=torch.float32)
    cq, cs, ckv = CONFIG_BWD["q"], CONFIG_BWD["state"], CONFIG_BWD["kv"]
    BE_q = min(EP, cq["BLOCK_E"]) if cuda else min(EP, 32)
    BE_kv = min(EP, ckv["BLOCK_E"]) if cuda else min(EP, 32)
    BLK_q, BLK_s, BLK_kv = (cq["BLOCK"], cs["BLOCK"], ckv["BLOCK"]) if cuda else (16, 16, 16)
    ne_q, ne_kv = triton.cdiv(E, BE_q), triton.cdiv(E, BE_kv)
    if causal:  # the forward's splits: its prefix states are where each split starts
        ns_q = ns_s = ns_kv = nsplit
        rows_q = rows_s = rows_kv = rows
    else:
        sms = multiprocessors(q.device)
        lo = 1 if cuda else 0  # min rows: 2 blocks on a GPU, 1 in the interpreter
        ns_q, rows_q = sequence_splits(N, BH * ne_q, BLK_q, BLK_q << lo, sms)
        ns_s, rows_s = sequence_splits(N, BH, BLK_s, BLK_s << lo, sms)
        ns_kv, rows_kv = sequence_splits(N, BH * ne_kv, BLK_kv, BLK_kv << lo, sms)
    dq_ws = torch.empty(ne_q, B, H, N, D, **f32)
    dk_ws = torch.empty(ne_kv, B, H, N, D, **f32)
    dv = torch.empty(B, H, N, E, device=q.device, dtype=v.dtype)
    r = torch.empty(B, H, N, **f32)
    dd_ws = torch.empty(ne_q, B, H, N, **f32)
    has_init = state is not None
    _la_bwd_q_kernel[(BH * ns_q, ne_q)](
        q, k, v, g, o, state if has_init else r, dq_ws, r, dd_ws,
        N, H, D, E, BH, rows_q, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), g.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        CAUSAL=causal, HAS_INIT=has_init, BLOCK=BLK_q, DP=DP, EP=EP, BLOCK_E=BE_q,
        F1=F1, F2=F2, NSPLIT=ns_q, num_warps=cq["num_warps"],
    )  # fmt: skip
    dden = dd_ws.sum(0) if ne_q > 1 else dd_ws[0]  # -r (g . out), from the blocks' shares
    dst = None
    if not causal or ns_s > 1:  # per-split dS, dz of the queries
        dstate = torch.empty(BH, ns_s, W, **f32)
        _la_bwd_state_kernel[(BH, ns_s)](
            q, g, r, dden, dstate, N, H, D, E, rows_s, float(D),
            q.stride(0), q.stride(1), q.stride(2), g.stride(0), g.stride(1), g.stride(2),
            BLOCK=BLK_s, DP=DP, EP=EP, F1=F1, F2=F2, NSPLIT=ns_s, num_warps=cs["num_warps"],
        )  # fmt: skip
        if causal:  # dS of the queries in later splits: exclusive suffix sums over splits
            suffix = dstate[:, 1:].flip(1).cumsum(1).flip(1)
            dst = torch.nn.functional.pad(suffix, (0, 0, 0, 1))
        else:
            dst = dstate.sum(1) if ns_s > 1 else dstate.view(BH, W)
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else r
    _la_bwd_kv_kernel[(BH * ns_kv, ne_kv)](
        q, k, v, g, r, dden, mask, dst if dst is not None else r, dk_ws, dv,
        N, H, D, E, BH, rows_kv, float(D),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), g.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        CAUSAL=causal, HAS_INIT=dst is not None, HAS_MASK=key_mask is not None,
        BLOCK=BLK_kv, DP=DP, EP=EP, BLOCK_E=BE_kv, F1=F1, F2=F2, NSPLIT=ns_kv,
        num_warps=ckv["num_warps"],
    )  # fmt: skip
    dq = (dq_ws.sum(0) if ne_q > 1 else dq_ws[0]).to(q.dtype)
    dk = (dk_ws.sum(0) if ne_kv > 1 else dk_ws[0]).to(k.dtype)
    return dq, dk, dv
