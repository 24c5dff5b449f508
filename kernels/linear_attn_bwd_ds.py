"""dS, dzc pass of the non-causal Taylor backward (kernels/linear_attn_bwd_noncausal.py has the
notation and the pass order): one run of query rows per program, from the r, dd per row that
the dq pass wrote. dS2 is symmetric, so three programs per run each own one 8 x 8 quadrant of
the 16 x 16 feature pairs and a fourth (LIN) the linear and constant features and dzc.
"""

from __future__ import annotations

from kernels.common import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import load_tile, pow2_scale, run_of, state_row

    @triton.jit
    def _feature_tile(qb, gb, rdd, rn, stop, sqn, sgn, re, rx, ca, cb, D, E, N,
                      LIN: tl.constexpr, DP: tl.constexpr):  # fmt: skip
        """The dS pass's tiles of the rows `rn` (rows past `stop` load as zeros, so they add
        nothing): (A, g, r, dd, q). A (rows, BLOCK): LIN: [q^T; 1; 0] (rx rows: the linear and
        constant features); else the quadrant vec(q[ca] q[cb]^T) of the quadratic features
        (rx = the 8 x 8 (i, j) pairs, ca, cb the columns of q that they pick)."""
        ok = rn < stop
        gt = load_tile(gb, rn, sgn, re, ok[:, None] & (re < E)[None, :])
        r = tl.load(rdd + rn, mask=ok, other=0.0)
        dd = 0.0
        qt = 0.0
        if LIN:
            dd = tl.load(rdd + N + rn, mask=ok, other=0.0)
            rd = tl.arange(0, DP)
            qt = load_tile(qb, rn, sqn, rd, ok[:, None] & (rd < D)[None, :])
            one = tl.where((rd[:, None] == 0) & ok[None, :], 1.0, 0.0).to(gt.dtype)  # (DP, BLOCK)
            a = tl.reshape(tl.permute(tl.join(tl.trans(qt), one), (2, 0, 1)), (2 * DP, rn.shape[0]))
        else:
            xa = tl.trans(load_tile(qb, rn, sqn, ca, ok[:, None] & (ca < D)[None, :])).to(
                tl.float32
            )
            xb = tl.trans(load_tile(qb, rn, sqn, cb, ok[:, None] & (cb < D)[None, :])).to(
                tl.float32
            )
            a = tl.reshape(xa[:, None, :] * xb[None, :, :], (rx.shape[0], rn.shape[0])).to(gt.dtype)
        return a, gt, r, dd, qt

    @triton.jit
    def taylor_bwd_s_kernel(
        q_ptr, g_ptr, st_ptr, rdd_ptr, part_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real, eps, sqb, sqh, sqn, sgb, sgh, sgn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AUX: tl.constexpr,
        PREC: tl.constexpr, LIN: tl.constexpr,
    ):  # fmt: skip
        """One part of one run's partial (dS, dzc) into workspace row `run` (state layout,
        phi(q)'s constants applied), from the r, dd of the dq pass. LIN: s0, S1 and dzc (one
        program per run); else one 8 x 8 quadrant of dS2 (three programs per run: (0, 0),
        (0, 1) also stored as (1, 0) (dS2 is symmetric), (1, 1))."""
        pid = tl.program_id(0).to(tl.int64)
        HALF: tl.constexpr = DP // 2
        run = pid
        quad = 0
        if not LIN:
            run = pid // 3
            quad = (pid % 3).to(tl.int32)
        pid_bh, start, stop = run_of(run, n_runs, rows_per_run, N)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rx = tl.arange(0, AUX if LIN else HALF * HALF)
        ca = (quad // 2) * HALF + tl.arange(0, HALF)  # quadrant rows: 0, 0, 1
        cb = ((quad + 1) // 2) * HALF + tl.arange(0, HALF)  # columns: 0, 1, 1
        dt = q_ptr.dtype.element_ty
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        oz = EP * (1 + DP + F2)
        z0 = tl.load(state_row(st_ptr, pid_bh, EP, DP, F2) + oz)
        cr, ur = pow2_scale(1.0 / (0.5 * z0 + eps), -1)  # c r < 1 for every query
        acc = tl.zeros((rx.shape[0], EP), dtype=tl.float32)  # A dnum^T c
        za = tl.zeros((AUX, DP), dtype=tl.float32)  # rows < DP: sum dd q q^T; DP: sum dd q
        dz0 = tl.zeros((BLOCK,), dtype=tl.float32)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        rdd = rdd_ptr + pid_bh * 2 * N
        rn = start + tl.arange(0, BLOCK)
        nxt = _feature_tile(qb, gb, rdd, rn, stop, sqn, sgn, re, rx, ca, cb, D, E, N, LIN, DP)
        for n0 in range(start, stop, BLOCK):
            a, gt, r, dd, qt = nxt  # prefetched during the previous block
            rn = n0 + tl.arange(0, BLOCK)
            nxt = _feature_tile(
                qb, gb, rdd, rn + BLOCK, stop, sqn, sgn, re, rx, ca, cb, D, E, N, LIN, DP
            )
            dnh = (gt.to(tl.float32) * (r * cr)[:, None]).to(dt)  # dnum c, |.| <= |g|
            acc = tl.dot(a, dnh, acc, input_precision=PREC)
            if LIN:  # dzc += phi(q) dd; dd q of any magnitude: bfloat16 or tf32 (float32's range)
                dq = qt.to(tl.float32) * dd[:, None]
                if dt == tl.bfloat16:  # a bf16 product (q and A exact in bf16)
                    za = tl.dot(a, dq.to(dt), za)
                else:
                    za = tl.dot(a.to(tl.float32), dq, za, input_precision=PREC)
                dz0 += dd
        pr = state_row(part_ptr, run, EP, DP, F2)
        if LIN:  # s0, S1; dzc0, dzc1, Zc2: phi(q)'s constants applied, c undone
            is_one = rx[:, None] == DP
            tl.store(pr + re, tl.sum(tl.where(is_one, acc, 0.0), axis=0) * ur)
            tl.store(
                pr + EP + rx[:, None] * EP + re[None, :], acc * (c1 * ur), mask=rx[:, None] < DP
            )
            one = tl.arange(0, 16)  # dzc0 through a 16-wide vector, one element kept
            tl.store(pr + oz + one, tl.zeros((16,), tl.float32) + tl.sum(dz0, axis=0), mask=one < 1)
            tl.store(pr + oz + 1 + rd, tl.sum(tl.where(is_one, za, 0.0), axis=0) * c1)
            tl.store(
                pr + oz + 1 + DP + rx[:, None] * DP + rd[None, :], za * c2, mask=rx[:, None] < DP
            )
        else:  # the quadrant's rows of S2 (feature i * DP + j) and, off the diagonal, (j, i)
            fi = tl.reshape(ca[:, None] * DP + cb[None, :], (HALF * HALF,))
            fj = tl.reshape(cb[None, :] * DP + ca[:, None], (HALF * HALF,))
            out = acc * (c2 * ur)
            tl.store(pr + EP + DP * EP + fi[:, None] * EP + re[None, :], out)
            mirror = (tl.zeros((HALF * HALF, 1), tl.int32) + quad) == 1  # the (0, 1) quadrant only
            tl.store(pr + EP + DP * EP + fj[:, None] * EP + re[None, :], out, mask=mirror)
