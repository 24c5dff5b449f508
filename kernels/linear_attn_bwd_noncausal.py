"""Non-causal Taylor (BASED) backward for head dims d <= 16, built like the tensor-core forward.

Notation as in kernels/linear_attn_bwd.py: r_i = 1 / (den_i + eps), dnum_i = g_i r_i,
dden_i = -r_i (g_i . out_i); dphi(q_i) = S dnum_i + z dden_i, dS = sum_i phi(q_i) dnum_i^T,
dz = sum_i phi(q_i) dden_i, dphi(k_j) = dS v_j + dz, dv_j = dS^T phi(k_j). The input is the
forward's total float32 key state per (b, h) (kernels/linear_attn_fwd.py's `taylor_state`;
layout in kernels/taylor.py, phi's constants c1 = d^-1/4, c2 = 1 / (sqrt(2) sqrt(d)) applied).

With the keys' mean value mu = s0 / z0 taken out of S (as the older backward's q pass),
w_i = (S - z mu^T) g_i, t_i = phi(q_i) . w_i and dd_i = dden_i + r_i g_i . mu =
r_i^2 (eps g_i . mu - t_i): dphi(q_i) = r_i w_i + dd_i z, and, summed over the queries,
dphi(k_j) = dS (v_j - mu) + dzc with dzc = sum_i phi(q_i) dd_i = dz + dS mu. `out` is not
read, and no pass subtracts two nearly equal terms when the values' mean is far from 0 (the
older backward's dk did: 3.7e-3 off in float16 at values ~ 10 + N(0, 1), here 5e-4). S2, z2,
dS2, dzc2 are symmetric in their two feature indices (vec(x x^T)), so the quadratic feature's
gradient (M + M^T) x is 2 M x: one (BLOCK, DP, DP) reduction per row block.

One loop over a run of row blocks of one (b, h) per program (1-D grid; runs cut by
`linear_attn_fwd.out_runs`), products on the tensor cores, no reduction over rows on the
CUDA cores that a product can do. Two kernels, each launched whole or in two halves:

1. `_taylor_bwd_q_kernel` (queries). DQ: the centred state, transposed and cast, loaded once;
   per block den = z0 + c1 q.z1 + c2 q^T Z2 q (as the forward), w = g (S - z mu^T)^T (BLOCK x
   272 outputs), t, dd and dq. DS: the run's partial dS, dzc the way the forward's state pass
   builds S, z: dS2 += vec(q q^T)^T dnum (the expansion built transposed), with A = [q^T; 1; 0]
   (AUX rows) A dnum = [dS1; ds0] and A (dd q) = [Zc2; dzc1], dzc0 = sum dd; one workspace
   row per run, the runs summed by one torch sum (summing them in the key pass would read
   runs_q x runs_k rows per head). CONFIG SPLIT 1 runs DQ (writing r, dd: 8 bytes a row) and
   DS as two launches: compiled for sm_90 (bf16, d 16, e 64, 64 rows, 8 warps) DQ alone takes
   216 registers and DS alone spills 40 bytes (the forward's state pass 56), together ~1 KB.
2. `_taylor_bwd_k_kernel` (keys), from the total dS, dzc. DV: dv = ds0 + c1 k dS1 +
   c2 vec(k k^T) dS2 (the forward's numerator, no division). DK: mu, dS transposed and dzc
   loaded once; dphi(k) = (v - mu) dS^T + dzc (products) and dk through phi. Keys with
   key_mask == 0 get dk = dv = 0 (queries are never masked). SPLIT 1: DK and DV as two launches
   (k read twice; 187 and 211 registers, no spills; together 104 bytes of spills).

16-bit operands are multiplied by exact powers of two before their cast (`scaled_cast`:
the centred state and dS to a max |.| in [2^14, 2^15); dnum by c with c / (z0 / 2 + eps) < 1,
a bound on c r since phi(q).phi(k) = ((1 + s)^2 + 1) / 2 >= 1/2, so |c dnum| <= |g|), and the
float32 results multiplied back; dd q (of any magnitude) goes through a tf32 product instead.
float32 inputs: every product in tf32x3 (one TF32 pass left dq 2.7% off at value mean 10
on the H200), and float32 values padded past 64 keep kernels/linear_attn_bwd.py
(`noncausal_backward_fits`: shared memory). Launch settings: kernels/linear_attn.py's CONFIG["taylor_bwd_q" / "_s" /
"_k" / "_v"].
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2
from kernels.linear_attn_fwd import AUX_ROWS, TAYLOR_FWD_MAX_DP, out_runs
from kernels.taylor import feature_sizes, multiprocessors, state_width

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import abs_max, load_tile, pow2_scale, scaled_cast, state_row

    @triton.jit
    def _query_tile(qb, gb, rn, stop, sqn, sgn, rd, re, ra, D, E, DS: tl.constexpr):
        """(q, g, q^T in the first rows of an AUX-row tile (DS; else 0)) of the rows `rn`; rows
        past `stop` load as zeros, so they add nothing to dS and dzc."""
        ok = rn < stop
        qt = load_tile(qb, rn, sqn, rd, ok[:, None] & (rd < D)[None, :])
        gt = load_tile(gb, rn, sgn, re, ok[:, None] & (re < E)[None, :])
        aux = 0.0
        if DS:
            aux = tl.load(
                qb + rn[None, :] * sqn + ra[:, None], ok[None, :] & (ra < D)[:, None], 0.0
            )
        return qt, gt, aux

    @triton.jit
    def _key_rows(
        kb, vb, mb, rn, stop, skn, svn, rd, re, D, E, HAS_MASK: tl.constexpr, DK: tl.constexpr
    ):
        """(k, v (DK; else 0), kept rows) of the keys `rn`; rows past `stop` or padded
        (key_mask == 0) load as zeros and are not kept (their dk, dv are 0)."""
        keep = rn < stop
        if HAS_MASK:
            keep = keep & (tl.load(mb + rn, mask=keep, other=0.0) != 0.0)
        kt = load_tile(kb, rn, skn, rd, keep[:, None] & (rd < D)[None, :])
        vt = 0.0
        if DK:
            vt = load_tile(vb, rn, svn, re, keep[:, None] & (re < E)[None, :])
        return kt, vt, keep

    @triton.jit
    def _taylor_bwd_q_kernel(
        q_ptr, g_ptr, st_ptr, dq_ptr, part_ptr, rdd_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real, eps,
        sqb, sqh, sqn, sgb, sgh, sgn, sdb, sdh, sdn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AUX: tl.constexpr,
        PREC: tl.constexpr, DQ: tl.constexpr, DS: tl.constexpr,
    ):  # fmt: skip
        """One run of row blocks of one (b, h). DQ: dq (without DS also r, dd per row, into
        rdd_ptr); DS: the run's partial (dS, dzc) into workspace row `pid` (state layout,
        phi(q)'s constants applied; without DQ from the r, dd of rdd_ptr)."""
        pid = tl.program_id(0).to(tl.int64)
        pid_bh = pid // n_runs
        pid_r = (pid % n_runs).to(tl.int32)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F2)
        ra = tl.arange(0, AUX)
        dt = q_ptr.dtype.element_ty
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        st = state_row(st_ptr, pid_bh, EP, DP, F2)
        oz = EP * (1 + DP + F2)
        z0 = tl.load(st + oz)
        if DQ:  # the key state, once per program: z, mu and (S - z mu^T)^T, scaled and cast
            mu = tl.load(st + re) / tl.maximum(z0, 1.0)
            z1 = tl.load(st + oz + 1 + rd)
            z2 = tl.load(st + oz + 1 + DP + rd[:, None] * DP + rd[None, :])
            z2f = tl.load(st + oz + 1 + DP + rf)
            s1t = tl.load(st + EP + rd[None, :] * EP + re[:, None]) - mu[:, None] * z1[None, :]
            s2t = tl.load(st + EP + DP * EP + rf[None, :] * EP + re[:, None])
            s1h, u1 = scaled_cast(s1t, dt)
            s2h, u2 = scaled_cast(s2t - mu[:, None] * z2f[None, :], dt)
        if DS:
            cr, ur = pow2_scale(1.0 / (0.5 * z0 + eps), -1)  # c r < 1 for every query
            ds2 = tl.zeros((F2, EP), dtype=tl.float32)
            sa = tl.zeros((AUX, EP), dtype=tl.float32)  # rows < DP: sum q dnum^T c; DP: sum dnum c
            za = tl.zeros((AUX, DP), dtype=tl.float32)  # rows < DP: sum dd q q^T; DP: sum dd q
            dz0 = tl.zeros((BLOCK,), dtype=tl.float32)
        start = pid_r * rows_per_run
        stop = tl.minimum(start + rows_per_run, N)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        db = dq_ptr + b * sdb + h * sdh
        rdd = rdd_ptr + pid_bh * 2 * N
        rn = start + tl.arange(0, BLOCK)
        nxt = _query_tile(qb, gb, rn, stop, sqn, sgn, rd, re, ra, D, E, DS)
        for n0 in range(start, stop, BLOCK):
            # this block's rows were loaded during the previous block's products; load the next
            qt, gt, aux = nxt
            rn = n0 + tl.arange(0, BLOCK)
            nxt = _query_tile(qb, gb, rn + BLOCK, stop, sqn, sgn, rd, re, ra, D, E, DS)
            n_ok = rn < stop
            qf = qt.to(tl.float32)
            gf = gt.to(tl.float32)
            if DQ:
                zq = tl.dot(qf, z2, input_precision="tf32x3")  # Z2 q (Z2 symmetric)
                r = 1.0 / (tl.sum(qf * (c1 * z1[None, :] + c2 * zq), axis=1) + z0 + eps)
            else:
                r = tl.load(rdd + rn, mask=n_ok, other=0.0)
            if DS:  # dS += phi(q) dnum^T (dnum c, |.| <= |g|) as the state pass builds S
                dnh = (gf * (r * cr)[:, None]).to(dt)
                qtf = tl.trans(qt).to(tl.float32)  # (DP, BLOCK)
                p2t = tl.reshape(qtf[:, None, :] * qtf[None, :, :], (F2, BLOCK)).to(dt)
                ds2 = tl.dot(p2t, dnh, ds2, input_precision=PREC)
                auxf = tl.where((ra[:, None] == DP) & n_ok[None, :], 1.0, aux.to(tl.float32))
                sa = tl.dot(auxf.to(dt), dnh, sa, input_precision=PREC)
            if DQ:  # w = (S - z mu^T) g; W2 q from its quadratic part; t = phi(q) . w = q . hw
                w1 = tl.dot(gt, s1h, input_precision=PREC).to(tl.float32)
                w2 = tl.dot(gt, s2h, input_precision=PREC).to(tl.float32)
                wq = tl.sum(tl.reshape(w2, (BLOCK, DP, DP)) * qf[:, None, :], axis=2) * (c2 * u2)
                hw = (c1 * u1) * w1 + wq
                gmu = tl.sum(gf * mu[None, :], axis=1)
                dd = r * r * (eps * gmu - tl.sum(qf * hw, axis=1))
                # dphi(q) = r w + dd z, through phi: dq = c1 dphi1 + 2 c2 mat(dphi2) q
                dq = (hw + wq) * r[:, None] + (c1 * z1[None, :] + 2.0 * c2 * zq) * dd[:, None]
                tl.store(
                    db + rn[:, None] * sdn + rd[None, :],
                    dq.to(dq_ptr.dtype.element_ty),
                    mask=n_ok[:, None] & (rd < D)[None, :],
                )
                if not DS:
                    tl.store(rdd + rn, r, mask=n_ok)
                    tl.store(rdd + N + rn, dd, mask=n_ok)
            else:
                dd = tl.load(rdd + N + rn, mask=n_ok, other=0.0)
            if DS:  # dzc += phi(q) dd (dd q of any magnitude: tf32, float32's range)
                za = tl.dot(auxf, qf * dd[:, None], za, input_precision=PREC)
                dz0 += dd
        if DS:  # the run's partial: phi(q)'s constants applied, c undone
            pr = state_row(part_ptr, pid, EP, DP, F2)
            is_one = ra[:, None] == DP
            tl.store(pr + re, tl.sum(tl.where(is_one, sa, 0.0), axis=0) * ur)
            tl.store(
                pr + EP + ra[:, None] * EP + re[None, :], sa * (c1 * ur), mask=ra[:, None] < DP
            )
            tl.store(pr + EP + DP * EP + rf[:, None] * EP + re[None, :], ds2 * (c2 * ur))
            one = tl.arange(0, 16)  # dzc0 through a 16-wide vector, one element kept
            tl.store(pr + oz + one, tl.zeros((16,), tl.float32) + tl.sum(dz0, axis=0), mask=one < 1)
            tl.store(pr + oz + 1 + rd, tl.sum(tl.where(is_one, za, 0.0), axis=0) * c1)
            tl.store(
                pr + oz + 1 + DP + ra[:, None] * DP + rd[None, :], za * c2, mask=ra[:, None] < DP
            )

    @triton.jit
    def _taylor_bwd_k_kernel(
        k_ptr, v_ptr, m_ptr, st_ptr, ds_ptr, dk_ptr, dv_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real,
        skb, skh, skn, svb, svh, svn, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, HAS_MASK: tl.constexpr,
        DK: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """dk (DK) and dv (DV) of one run of row blocks of one (b, h), from the total dS, dzc."""
        pid = tl.program_id(0).to(tl.int64)
        pid_bh = pid // n_runs
        pid_r = (pid % n_runs).to(tl.int32)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F2)
        dt = k_ptr.dtype.element_ty
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        oz = EP * (1 + DP + F2)
        ds = state_row(ds_ptr, pid_bh, EP, DP, F2)
        if DV:  # dv = phi(k) dS: phi(k)'s constants folded into dS, one scale for both parts
            ds0 = tl.load(ds + re)
            d1 = tl.load(ds + EP + rd[:, None] * EP + re[None, :]) * c1
            d2 = tl.load(ds + EP + DP * EP + rf[:, None] * EP + re[None, :]) * c2
            cv, uv = pow2_scale(tl.maximum(abs_max(d1), abs_max(d2)), 14)
            d1h = (d1 * cv).to(dt)
            d2h = (d2 * cv).to(dt)
        if DK:  # dphi(k) = (v - mu) dS^T + dzc: mu, dS transposed, dzc
            st = state_row(st_ptr, pid_bh, EP, DP, F2)
            mu = tl.load(st + re) / tl.maximum(tl.load(st + oz), 1.0)
            d1t, ut1 = scaled_cast(tl.load(ds + EP + rd[None, :] * EP + re[:, None]), dt)
            d2t, ut2 = scaled_cast(tl.load(ds + EP + DP * EP + rf[None, :] * EP + re[:, None]), dt)
            zc1 = tl.load(ds + oz + 1 + rd)
            zc2 = tl.load(ds + oz + 1 + DP + rd[:, None] * DP + rd[None, :])
        start = pid_r * rows_per_run
        stop = tl.minimum(start + rows_per_run, N)
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        mb = m_ptr + b * N
        rn = start + tl.arange(0, BLOCK)
        nxt = _key_rows(kb, vb, mb, rn, stop, skn, svn, rd, re, D, E, HAS_MASK, DK)
        for n0 in range(start, stop, BLOCK):
            kt, vt, keep = nxt  # prefetched during the previous block
            rn = n0 + tl.arange(0, BLOCK)
            nxt = _key_rows(kb, vb, mb, rn + BLOCK, stop, skn, svn, rd, re, D, E, HAS_MASK, DK)
            n_ok = rn < stop
            kf = kt.to(tl.float32)
            if DV:
                p2 = tl.reshape(kf[:, :, None] * kf[:, None, :], (BLOCK, F2)).to(dt)
                dv = tl.dot(p2, d2h, tl.dot(kt, d1h, input_precision=PREC), input_precision=PREC)
                dv = dv * uv + ds0[None, :]
                tl.store(
                    dv_ptr + b * sdvb + h * sdvh + rn[:, None] * sdvn + re[None, :],
                    tl.where(keep[:, None], dv, 0.0).to(dv_ptr.dtype.element_ty),
                    mask=n_ok[:, None] & (re < E)[None, :],
                )
            if DK:
                vc = (vt.to(tl.float32) - mu[None, :]).to(dt)
                g1 = tl.dot(vc, d1t, input_precision=PREC).to(tl.float32) * ut1 + zc1[None, :]
                g2 = tl.dot(vc, d2t, input_precision=PREC).to(tl.float32)
                # dk = c1 dphi1 + 2 c2 mat(dphi2) k, mat(dphi2) = mat(g2) + Zc2 (symmetric)
                gk = tl.sum(tl.reshape(g2, (BLOCK, DP, DP)) * kf[:, None, :], axis=2) * ut2
                gk += tl.dot(kf, zc2, input_precision="tf32x3")
                dk = c1 * g1 + (2.0 * c2) * gk
                tl.store(
                    dk_ptr + b * sdkb + h * sdkh + rn[:, None] * sdkn + rd[None, :],
                    tl.where(keep[:, None], dk, 0.0).to(dk_ptr.dtype.element_ty),
                    mask=n_ok[:, None] & (rd < D)[None, :],
                )


def noncausal_backward_fits(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether these kernels take the backward: padded head dim <= TAYLOR_FWD_MAX_DP, padded
    value dim <= 128 (one program holds a whole value row), and for float32 inputs (3xTF32 products, twice the shared memory per operand) a padded value dim
    <= 64: at 128 the query pass needs 350 KB of shared memory on an H200 (limit 227 KB), so
    wider float32 values keep kernels/linear_attn_bwd.py."""
    ep = next_pow2(v.shape[-1])
    if next_pow2(q.shape[-1]) > TAYLOR_FWD_MAX_DP or ep > 128:  # sizes checked on the GPU
        return False
    return q.dtype != torch.float32 or ep <= 64


def taylor_backward_noncausal(q, k, v, grad_out, state, eps, key_mask, config: dict):
    """(dq, dk, dv) of non-causal Taylor linear attention, d <= 16, from the forward's total
    float32 key state per (b, h) (`taylor_state`). config: launch settings per pass as in
    kernels/linear_attn.py's CONFIG (BLOCK, num_warps, num_stages and `out_runs`' SLOTS_PER_SM,
    COST_ROWS, MIN_ROWS): "taylor_bwd_q" (dq; with SPLIT 0 the same programs also sum dS, dzc),
    "taylor_bwd_s" (dS, dzc from the r, dd the dq pass wrote), "taylor_bwd_k" (dk; with SPLIT 0
    also dv), "taylor_bwd_v" (dv). Launches: 2 to 4 kernels and, with several runs in the dS
    pass, one sum."""
    cfg = {p: config[f"taylor_bwd_{p}"] for p in "qskv"}
    B, H, N, D = q.shape
    E = v.shape[-1]
    _, DP, F1, F2 = feature_sizes("taylor", D, 0)
    EP = next_pow2(E)
    W = state_width(EP, F1, F2)
    BH = B * H
    q, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, grad_out))
    cuda, sms = q.is_cuda, multiprocessors(q.device)
    f32 = dict(device=q.device, dtype=torch.float32)
    dq = torch.empty(B, H, N, D, device=q.device, dtype=q.dtype)
    split_q = bool(cfg["q"]["SPLIT"])
    rdd = torch.empty(BH, 2, N, **f32) if split_q else dq  # r, dd per query between passes

    # float32 inputs: every product in 3xTF32 (float32 accuracy); one TF32 pass loses the
    # value-mean centring to cancellation (dq 2.7% off at value mean 10 on the H200)
    prec = "tf32x3" if q.dtype == torch.float32 else "tf32"

    def cut(c: dict) -> tuple[int, int, int]:  # (BLOCK, runs per head, rows per run)
        blk = c["BLOCK"] if cuda else 16
        return (blk, *out_runs(N, BH, blk, c, sms))

    def query_pass(c: dict, with_dq: bool, with_ds: bool) -> tuple[torch.Tensor, int]:
        blk, runs, rows = cut(c)
        part = torch.empty(BH * runs, W, **f32) if with_ds else dq
        _taylor_bwd_q_kernel[(BH * runs,)](
            q, g, state, dq, part, rdd, N, H, D, E, rows, runs, float(D), eps,
            q.stride(0), q.stride(1), q.stride(2), g.stride(0), g.stride(1), g.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2),
            BLOCK=blk, DP=DP, EP=EP, AUX=max(AUX_ROWS, 2 * DP),
            PREC=prec, DQ=with_dq, DS=with_ds,
            num_warps=c["num_warps"], num_stages=c["num_stages"],
        )  # fmt: skip
        return part, runs

    if split_q:
        query_pass(cfg["q"], True, False)
        part, runs = query_pass(cfg["s"], False, True)
    else:
        part, runs = query_pass(cfg["q"], True, True)
    dstate = part.view(BH, runs, W).sum(1) if runs > 1 else part
    dk = torch.empty(B, H, N, D, device=k.device, dtype=k.dtype)
    dv = torch.empty(B, H, N, E, device=v.device, dtype=v.dtype)
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else dstate

    def key_pass(c: dict, with_dk: bool, with_dv: bool) -> None:
        blk, runs, rows = cut(c)
        _taylor_bwd_k_kernel[(BH * runs,)](
            k, v, mask, state, dstate, dk, dv, N, H, D, E, rows, runs, float(D),
            k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2),
            BLOCK=blk, DP=DP, EP=EP, HAS_MASK=key_mask is not None, DK=with_dk, DV=with_dv,
            PREC=prec,
            num_warps=c["num_warps"], num_stages=c["num_stages"],
        )  # fmt: skip

    if cfg["k"]["SPLIT"]:
        key_pass(cfg["k"], True, False)
        key_pass(cfg["v"], False, True)
    else:
        key_pass(cfg["k"], True, True)
    return dq, dk, dv
