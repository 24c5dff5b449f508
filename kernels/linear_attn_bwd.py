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

16-bit operands: each float32 operand of a tensor-core product is multiplied by an exact power
of two before its cast to the compute dtype (`kernels.taylor.pow2_scale`: S, dS, da to a max
|.| in [2^14, 2^15), dnum to at most |g|) and the product multiplied back in float32, since S grows as N |k|^2 |v|
(inf in float16) and dnum as 1 / den (subnormal). The q pass takes the keys' mean value
mu = s0 / z0 out of S: with w_i = (S - z mu^T) g_i, g_i . out_i = (g_i . mu)(1 - eps r_i) +
r_i phi(q_i) . w_i (causal: + r_i sum_j a_ij g_i . (v_j - mu) in the chunk) and dphi(q_i) =
r_i w_i + z (dden_i + r_i g_i . mu): `out` is not read, and S g_i, z (g_i . out_i) (nearly
equal for values of mean far from 0: dq 2% off in float16) no longer cancel.

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
        abs_max,
        feature_parts,
        head_ranges,
        init_state,
        load_tile,
        pow2_scale,
        scaled_cast,
        split_program,
        split_rows,
        state_program,
        state_row,
        store_state,
        taylor_input_grad,
    )

    @triton.jit
    def _centred(mu, s1, s2, z1, z2, dt):
        """S - z mu^T for the S1, S2 parts, scaled and cast to dt, with their 1 / c (c from a
        bound on max |S - z mu^T|, so no float32 copy of it is made)."""
        m = tl.max(tl.abs(mu), axis=0)
        c1, u1 = pow2_scale(abs_max(s1) + m * tl.max(tl.abs(z1), axis=0), 14)
        c2, u2 = pow2_scale(abs_max(s2) + m * tl.max(tl.abs(z2), axis=0), 14)
        s1h = ((s1 - z1[:, None] * mu[None, :]) * c1).to(dt)
        s2h = ((s2 - z2[:, None] * mu[None, :]) * c2).to(dt)
        return s1h, s2h, u1, u2

    @triton.jit
    def _phi_dot_grad(xf, z1, z2, d_real, DP: tl.constexpr):
        """d(phi(x) . z)/dx of float32 rows x for one z = (z1, z2): `taylor_input_grad` with g1,
        g2 the same for every row; x . it = P1 . z1 + 2 P2 . z2 (P2 quadratic in x)."""
        zm = tl.reshape(z2, (DP, DP))
        t = tl.sum(zm[None, :, :] * xf[:, None, :], axis=2)
        t += tl.sum(zm[None, :, :] * xf[:, :, None], axis=1)
        return z1[None, :] / tl.sqrt(tl.sqrt(d_real)) + t / (1.4142135623730951 * tl.sqrt(d_real))

    @triton.jit
    def _la_bwd_q_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, st_ptr, dq_ptr, r_ptr, dd_ptr,
        N, H, D, E, BH, rows_per_split, d_real, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn,
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
        c1 = 1.0 / tl.sqrt(sq)  # P1 = x / d^(1/4)
        w = tl.zeros((DP, F1), dtype=dt)  # Taylor: no projection
        bias = tl.zeros((F1,), dtype=tl.float32)
        # the key state seen by this split's first query
        st = state_row(st_ptr, pid if CAUSAL else pid_bh, EP, F1, F2)
        s0, s1, s2, z0, z1, z2 = init_state(st, re, HAS_INIT, BLOCK_E, EP, F1, F2)
        mu = s0 / tl.maximum(z0, 1.0)  # the keys' mean value
        if not CAUSAL:  # one state for the whole split
            s1h, s2h, u1, u2 = _centred(mu, s1, s2, z1, z2, dt)
        tril = ri[:, None] >= ri[None, :]
        qb = q_ptr + b * sqb + h * sqh
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        gb = g_ptr + b * sgb + h * sgh
        start, stop = split_rows(pid_s, rows_per_split, N)
        for n0 in range(start, stop, BLOCK):
            rn = n0 + ri
            n_ok = rn < stop
            me = n_ok[:, None] & e_ok[None, :]
            md = n_ok[:, None] & d_ok[None, :]
            qt = load_tile(qb, rn, sqn, rd, md)
            gt = load_tile(gb, rn, sgn, re, me)
            xf, gf = qt.to(tl.float32), gt.to(tl.float32)
            # phi(q) is not built: bz = d(phi(q) . z)/dq, and q . bz = P1 . z1 + 2 P2 . z2
            bz = _phi_dot_grad(xf, z1, z2, d_real, DP)
            den = z0 + 0.5 * (tl.sum(xf * bz, axis=1) + tl.sum(xf * z1[None, :], axis=1) * c1)
            gmu = tl.sum(gf * mu[None, :], axis=1)
            t = tl.sum(gf * (s0 - z0 * mu)[None, :], axis=1)  # t = phi(q) . (S - z mu^T) g
            if CAUSAL:  # the state of the rows before this chunk
                s1h, s2h, u1, u2 = _centred(mu, s1, s2, z1, z2, dt)
            # w = (S - z mu^T) g (g as loaded, the centred state scaled); dq = d(phi(q) . w)/dq
            w1 = tl.dot(gt, tl.trans(s1h)).to(tl.float32) * u1
            w2 = tl.dot(gt, tl.trans(s2h)).to(tl.float32) * u2
            dq = taylor_input_grad(qt, w1, w2, d_real, BLOCK, DP)
            t += 0.5 * (tl.sum(xf * dq, axis=1) + tl.sum(xf * w1, axis=1) * c1)
            if CAUSAL:
                kt = load_tile(kb, rn, skn, rd, md)
                vt = load_tile(vb, rn, svn, re, me)
                s = tl.dot(qt, tl.trans(kt)).to(tl.float32) / sq
                causal_ok = tril & n_ok[None, :]
                a = tl.where(causal_ok, 1.0 + s + 0.5 * s * s, 0.0)
                den += tl.sum(a, axis=1)
                gv = tl.dot(gt, tl.trans(vt)).to(tl.float32) - gmu[:, None]  # g . (v_j - mu)
                t += tl.sum(a * gv, axis=1)
            r = 1.0 / (den + eps)
            # g . out = (g . mu)(1 - eps r) + r t; dd = dden + r (g . mu), dden = -r (g . out):
            # this block's share (dq and dk are linear in it), free of out's 16-bit rounding
            dd = r * r * (eps * gmu - t)
            dq = dq * r[:, None] + bz * dd[:, None]  # from dphi(q) = r w + dd z
            if CAUSAL:  # da = r g . v_j + dden = r g . (v_j - mu) + dd
                da = tl.where(causal_ok, (gv * r[:, None] + dd[:, None]) * (1.0 + s), 0.0)
                dah, ua = scaled_cast(da, dt)
                dq += tl.dot(dah, kt).to(tl.float32) * (ua / sq)
                k1, k2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
                s0 += tl.sum(vt.to(tl.float32), axis=0)
                s1 += tl.dot(tl.trans(k1.to(dt)), vt)
                s2 += tl.dot(tl.trans(k2.to(dt)), vt)
                z0 += tl.sum(n_ok.to(tl.float32), axis=0)
                z1 += tl.sum(k1, axis=0)
                z2 += tl.sum(k2, axis=0)
                mu = s0 / tl.maximum(z0, 1.0)
            tl.store(
                dq_ptr + ((pid_e * BH + pid_bh) * N + rn[:, None]) * D + rd[None, :],
                dq,
                mask=md,
            )
            tl.store(r_ptr + pid_bh * N + rn, r, mask=rn < stop * first_i)
            tl.store(dd_ptr + (pid_e * BH + pid_bh) * N + rn, dd - r * gmu, mask=n_ok)

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
        rmax = tl.zeros((BLOCK,), dtype=tl.float32)
        for n0 in range(start, stop, BLOCK):  # one scale c of dnum for the split (< 1 / max r)
            rn = n0 + tl.arange(0, BLOCK)
            rmax = tl.maximum(rmax, tl.load(r_ptr + pid_bh * N + rn, mask=rn < stop, other=0.0))
        c, u = pow2_scale(tl.max(rmax, axis=0), -1)
        for n0 in range(start, stop, BLOCK):
            rn = n0 + tl.arange(0, BLOCK)
            n_ok = rn < stop
            qt = load_tile(qb, rn, sqn, rd, n_ok[:, None] & d_ok[None, :])
            gt = load_tile(gb, rn, sgn, re, n_ok[:, None] & e_ok[None, :])
            r = tl.load(r_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
            dden = tl.load(dd_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
            dnh = (gt.to(tl.float32) * (r * c)[:, None]).to(dt)  # c dnum: |.| <= |g|
            q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
            ds0 += tl.sum(dnh.to(tl.float32), axis=0)
            ds1 += tl.dot(tl.trans(q1.to(dt)), dnh)
            ds2 += tl.dot(tl.trans(q2.to(dt)), dnh)
            dz0 += dden
            dz1 += tl.sum(q1 * dden[:, None], axis=0)
            dz2 += tl.sum(q2 * dden[:, None], axis=0)
        st = state_row(dst_ptr, pid_bh * NSPLIT + pid_s, EP, F1, F2)
        store_state(st, re, ds0 * u, ds1 * u, ds2 * u, tl.sum(dz0, axis=0), dz1, dz2, 1, EP, F1, F2)

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
        u = tl.sum(tl.zeros((16,), dtype=tl.float32), axis=0) + 1.0  # dS = (ds1, ds2) u
        if not CAUSAL:  # one dS for the whole split
            ds1h, u1 = scaled_cast(ds1, dt)
            ds2h, u2 = scaled_cast(ds2, dt)
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
            if CAUSAL:  # dS of the queries after this chunk
                ds1h, u1 = scaled_cast(ds1, dt)
                ds2h, u2 = scaled_cast(ds2, dt)
                u1 *= u
                u2 *= u
            kt = load_tile(kb, rn, skn, rd, md)
            vt = load_tile(vb, rn, svn, re, me)
            k1, k2 = feature_parts(kt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
            g1 = tl.dot(vt, tl.trans(ds1h)).to(tl.float32) * u1 + dz1[None, :]
            g2 = tl.dot(vt, tl.trans(ds2h)).to(tl.float32) * u2 + dz2[None, :]
            dk = taylor_input_grad(kt, g1, g2, d_real, BLOCK, DP)
            dv = tl.dot(k1.to(dt), ds1h).to(tl.float32) * u1
            dv += tl.dot(k2.to(dt), ds2h).to(tl.float32) * u2 + ds0[None, :]
            if CAUSAL:
                qt = load_tile(qb, rn, sqn, rd, md)
                gt = load_tile(gb, rn, sgn, re, me)
                r = tl.load(r_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
                dden = tl.load(dd_ptr + pid_bh * N + rn, mask=n_ok, other=0.0)
                dden = tl.where(first, dden, 0.0)  # the z terms belong to one value block
                q1, q2 = feature_parts(qt, n_ok, w, bias, f_ok, d_real, True, BLOCK, DP)
                # rows i (queries) x columns j (keys) of this chunk, i >= j
                s = tl.dot(qt, tl.trans(kt)).to(tl.float32) / sq
                causal_ok = tril & n_ok[None, :] & n_ok[:, None]
                # a_ij r_i = a_ij / den_i is in (0, 1]: dv_j = sum_i (a_ij r_i) g_i
                ar = tl.where(causal_ok, (1.0 + s + 0.5 * s * s) * r[:, None], 0.0)
                da = tl.dot(gt, tl.trans(vt)).to(tl.float32) * r[:, None] + dden[:, None]
                da = tl.where(causal_ok, da * (1.0 + s), 0.0)
                dah, ua = scaled_cast(da, dt)
                dv += tl.dot(tl.trans(ar.to(dt)), gt).to(tl.float32)
                dk += tl.dot(tl.trans(dah), qt).to(tl.float32) * (ua / sq)
                # c dnum (|.| <= |g|) per chunk: r spans orders of magnitude over a split
                c, uc = pow2_scale(tl.max(r, axis=0), -1)
                dnh = (gt.to(tl.float32) * (r * c)[:, None]).to(dt)
                ds0 += tl.sum(dnh.to(tl.float32), axis=0) * uc
                ds1 = ds1 * (c * u) + tl.dot(tl.trans(q1.to(dt)), dnh)  # now dS c
                ds2 = ds2 * (c * u) + tl.dot(tl.trans(q2.to(dt)), dnh)
                u = uc
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


def taylor_backward(q, k, v, grad_out, state, causal, eps, nsplit, rows, key_mask=None):
    """(dq, dk, dv) of Taylor linear attention from the forward's saved state (the forward's
    output is not needed: g . out is computed from the state).

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
    q, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, grad_out))
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
        q, k, v, g, state if has_init else r, dq_ws, r, dd_ws,
        N, H, D, E, BH, rows_q, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), g.stride(2),
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
