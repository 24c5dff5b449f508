"""dS, dzc pass of the non-causal Taylor backward (kernels/linear_attn_bwd_noncausal.py has the
notation and the pass order): one run of query rows per program, from the r, dd per row that
the dq pass wrote, built like the forward's state pass (kernels/linear_attn_fwd.py), with the
keys and values replaced by the queries and dnum = g r: dS2 += vec(q q^T)^T dnum (the 256-row
expansion built transposed, in the MMA operand layout), and with A = [q^T; 1; 0] (AUX rows)
A dnum = [dS1; ds0] and A (dd q) = [Zc2; dzc1]; dzc0 = sum dd.

On the H200 (B = 8, N = 64k, bf16) this one 8-warp program per run takes 0.82 ms (the
forward's state pass 0.83); the former split of the same sums into three programs for dS2's
8 x 8 quadrants (dS2 is symmetric) and one for the rest took 0.95 + 0.36 ms, and this program
at 4 warps 2.82 ms (benchmarks/results/la-noncausal-bwd-passes-NVIDIA-H200.jsonl, runs 5-9).
"""

from __future__ import annotations

from kernels.common import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.taylor import load_tile, pow2_scale, run_of, state_row, store_taylor_state

    @triton.jit
    def _query_tile(qb, gb, rdd, rn, stop, sqn, sgn, rd, re, ra, D, E, N):
        """(A, g, r, dd, q) of the rows `rn` (rows past `stop` load as zeros, so they add
        nothing): A = [q^T; 1; 0] (AUX rows, a transposed load as the forward's state pass)."""
        ok = rn < stop
        gt = load_tile(gb, rn, sgn, re, ok[:, None] & (re < E)[None, :])
        r = tl.load(rdd + rn, mask=ok, other=0.0)
        dd = tl.load(rdd + N + rn, mask=ok, other=0.0)
        qt = load_tile(qb, rn, sqn, rd, ok[:, None] & (rd < D)[None, :])
        a = tl.load(qb + rn[None, :] * sqn + ra[:, None], ok[None, :] & (ra < D)[:, None], 0.0)
        a = tl.where((ra[:, None] == rd.shape[0]) & ok[None, :], 1.0, a.to(tl.float32))
        return a.to(gt.dtype), gt, r, dd, qt

    @triton.jit
    def taylor_bwd_s_kernel(
        q_ptr, g_ptr, st_ptr, rdd_ptr, part_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real, eps, sqb, sqh, sqn, sgb, sgh, sgn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, AUX: tl.constexpr,
        PREC: tl.constexpr,
    ):  # fmt: skip
        """One run's partial (dS, dzc) into workspace row `run` (state layout, phi(q)'s
        constants applied), from the r, dd of the dq pass."""
        run = tl.program_id(0).to(tl.int64)
        pid_bh, start, stop = run_of(run, n_runs, rows_per_run, N)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        ra = tl.arange(0, AUX)
        dt = q_ptr.dtype.element_ty
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        oz = EP * (1 + DP + F2)
        z0 = tl.load(state_row(st_ptr, pid_bh, EP, DP, F2) + oz)
        cr, ur = pow2_scale(1.0 / (0.5 * z0 + eps), -1)  # c r < 1 for every query
        s2 = tl.zeros((F2, EP), dtype=tl.float32)  # vec(q q^T) dnum^T c
        sa = tl.zeros((AUX, EP), dtype=tl.float32)  # rows < DP: q dnum^T c; DP: dnum c
        za = tl.zeros((AUX, DP), dtype=tl.float32)  # rows < DP: sum dd q q^T; DP: sum dd q
        dz0 = tl.zeros((BLOCK,), dtype=tl.float32)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        rdd = rdd_ptr + pid_bh * 2 * N
        rn = start + tl.arange(0, BLOCK)
        nxt = _query_tile(qb, gb, rdd, rn, stop, sqn, sgn, rd, re, ra, D, E, N)
        for n0 in range(start, stop, BLOCK):
            a, gt, r, dd, qt = nxt  # prefetched during the previous block
            rn = n0 + tl.arange(0, BLOCK)
            nxt = _query_tile(qb, gb, rdd, rn + BLOCK, stop, sqn, sgn, rd, re, ra, D, E, N)
            dnh = (gt.to(tl.float32) * (r * cr)[:, None]).to(dt)  # dnum c, |.| <= |g|
            qtf = tl.trans(qt).to(tl.float32)
            p2t = tl.reshape(qtf[:, None, :] * qtf[None, :, :], (F2, BLOCK)).to(dt)
            s2 = tl.dot(p2t, dnh, s2, input_precision=PREC)
            sa = tl.dot(a, dnh, sa, input_precision=PREC)
            # dzc += phi(q) dd; dd q of any magnitude: bfloat16 or tf32 (float32's range)
            dq = qt.to(tl.float32) * dd[:, None]
            if dt == tl.bfloat16:  # a bf16 product (q and A exact in bf16)
                za = tl.dot(a, dq.to(dt), za)
            else:
                za = tl.dot(a.to(tl.float32), dq, za, input_precision=PREC)
            dz0 += dd
        # s0, S1, S2; dzc0, dzc1, Zc2: phi(q)'s constants applied, c undone
        pr = state_row(part_ptr, run, EP, DP, F2)
        store_taylor_state(pr, sa, s2, za, tl.sum(dz0, axis=0), c1, c2, ur, DP, EP)
