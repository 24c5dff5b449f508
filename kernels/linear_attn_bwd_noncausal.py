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
`linear_attn_fwd.out_runs`), products on the tensor cores. Three kernels, four or five launches
(settings: kernels/linear_attn.py's CONFIG, timed per kernel by benchmarks/la_bwd_passes.py):

1. `_taylor_bwd_q_kernel` (queries): the centred state, transposed and cast, loaded once; per
   block den = z0 + c1 q.z1 + c2 q^T Z2 q (as the forward), w = g (S - z mu^T)^T (BLOCK x 272
   outputs), t, dd and dq; r and dd per row into a float32 buffer (8 bytes a row).
2. `taylor_bwd_s_kernel` (kernels/linear_attn_bwd_ds.py: dS, dzc of one run from r, dd; one
   workspace row per run, the runs summed by one torch sum): the forward's state pass with
   the queries for the keys and dnum for the values, one 8-warp program per run. H200, B = 8,
   N = 64k: 0.82 ms (the forward's state pass 0.83); split into three programs for dS2's
   symmetric quadrants and one for the linear part it took 0.95 + 0.36 ms, and the first
   single dS program (220 registers, a float32 dzc product) 1.54 ms.
3. `_taylor_bwd_k_kernel` (keys), from the total dS, dzc. DV: dv = ds0 + c1 k dS1 +
   c2 vec(k k^T) dS2 (the forward's numerator, no division). DK: mu, dS transposed and dzc
   loaded once; dphi(k) = (v - mu) dS^T + dzc (products) and dk through phi. Keys with
   key_mask == 0 get dk = dv = 0 (queries are never masked). CONFIG SPLIT 1: DK and DV as two
   launches (k read twice; SPLIT 0 fuses them: slower on the H200, 1.27 vs 1.06 ms at
   B = 8, N = 64k).

The (BLOCK, DP, DP) reductions of the quadratic gradients (M + M^T) x = 2 M x run over M's
first feature index (M symmetric), which a thread holds whole in the product's register
layout (sm_90 compile of the q pass: 39 -> 21 shuffles, 88 -> 72 warp instructions a row at
8 warps). On the H200 that made the 8-warp q and k passes slower (1.70 -> 1.99, 1.15 -> 1.56
ms at B = 8, N = 64k) and the 4-warp ones faster (1.16 -> 0.77, 0.70 -> 0.60), which CONFIG
now uses (benchmarks/results/la-noncausal-bwd-passes-NVIDIA-H200.jsonl).

16-bit operands are multiplied by exact powers of two before their cast (`scaled_cast`:
the centred state and dS to a max |.| in [2^14, 2^15); dnum by c with c / (z0 / 2 + eps) < 1,
a bound on c r since phi(q).phi(k) = ((1 + s)^2 + 1) / 2 >= 1/2, so |c dnum| <= |g|), and the
float32 results multiplied back; dd q (of any magnitude) goes through a tf32 product instead
(a bf16 one for bf16 inputs: float32's exponent range).
float32 inputs: every product in tf32x3 (one TF32 pass left dq 2.7% off at value mean 10
on the H200), and float32 values padded past 64 keep kernels/linear_attn_bwd.py
(`noncausal_backward_fits`: shared memory).
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2
from kernels.linear_attn_fwd import AUX_ROWS, TAYLOR_FWD_MAX_DP, out_runs
from kernels.taylor import feature_sizes, multiprocessors, state_width

if HAS_TRITON:
    import triton
    import triton.language as tl

    from kernels.linear_attn_bwd_ds import taylor_bwd_s_kernel
    from kernels.taylor import abs_max, load_tile, pow2_scale, run_of, scaled_cast, state_row

    @triton.jit
    def _query_tile(qb, gb, rn, stop, sqn, sgn, rd, re, D, E):
        """(q, g) of the rows `rn`; rows past `stop` load as zeros."""
        ok = rn < stop
        qt = load_tile(qb, rn, sqn, rd, ok[:, None] & (rd < D)[None, :])
        gt = load_tile(gb, rn, sgn, re, ok[:, None] & (re < E)[None, :])
        return qt, gt

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
        q_ptr, g_ptr, st_ptr, dq_ptr, rdd_ptr,
        N, H, D, E, rows_per_run, n_runs, d_real, eps,
        sqb, sqh, sqn, sgb, sgh, sgn, sdb, sdh, sdn,
        BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        """dq of one run of row blocks of one (b, h), and r, dd per row (into rdd_ptr) for the
        dS pass."""
        pid_bh, start, stop = run_of(tl.program_id(0).to(tl.int64), n_runs, rows_per_run, N)
        b = pid_bh // H
        h = pid_bh % H
        F2: tl.constexpr = DP * DP
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F2)
        dt = q_ptr.dtype.element_ty
        c1 = 1.0 / tl.sqrt(tl.sqrt(d_real))
        c2 = 1.0 / (1.4142135623730951 * tl.sqrt(d_real))
        st = state_row(st_ptr, pid_bh, EP, DP, F2)
        oz = EP * (1 + DP + F2)
        z0 = tl.load(st + oz)
        # the key state, once per program: z, mu and (S - z mu^T)^T, scaled and cast
        mu = tl.load(st + re) / tl.maximum(z0, 1.0)
        z1 = tl.load(st + oz + 1 + rd)
        z2 = tl.load(st + oz + 1 + DP + rd[:, None] * DP + rd[None, :])
        z2f = tl.load(st + oz + 1 + DP + rf)
        s1t = tl.load(st + EP + rd[None, :] * EP + re[:, None]) - mu[:, None] * z1[None, :]
        s2t = tl.load(st + EP + DP * EP + rf[None, :] * EP + re[:, None])
        s1h, u1 = scaled_cast(s1t, dt)
        s2h, u2 = scaled_cast(s2t - mu[:, None] * z2f[None, :], dt)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        db = dq_ptr + b * sdb + h * sdh
        rdd = rdd_ptr + pid_bh * 2 * N
        rn = start + tl.arange(0, BLOCK)
        nxt = _query_tile(qb, gb, rn, stop, sqn, sgn, rd, re, D, E)
        for n0 in range(start, stop, BLOCK):
            # this block's rows were loaded during the previous block's products; load the next
            qt, gt = nxt
            rn = n0 + tl.arange(0, BLOCK)
            nxt = _query_tile(qb, gb, rn + BLOCK, stop, sqn, sgn, rd, re, D, E)
            n_ok = rn < stop
            qf = qt.to(tl.float32)
            gf = gt.to(tl.float32)
            zq = tl.dot(qf, z2, input_precision="tf32x3")  # Z2 q (Z2 symmetric)
            r = 1.0 / (tl.sum(qf * (c1 * z1[None, :] + c2 * zq), axis=1) + z0 + eps)
            # w = (S - z mu^T) g; W2 q from its quadratic part; t = phi(q) . w = q . hw
            w1 = tl.dot(gt, s1h, input_precision=PREC).to(tl.float32)
            w2 = tl.dot(gt, s2h, input_precision=PREC).to(tl.float32)
            # W2 is symmetric in its two feature indices: reduce over the first (axis 1)
            wq = tl.sum(tl.reshape(w2, (BLOCK, DP, DP)) * qf[:, :, None], axis=1) * (c2 * u2)
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
            tl.store(rdd + rn, r, mask=n_ok)
            tl.store(rdd + N + rn, dd, mask=n_ok)

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
                gk = tl.sum(tl.reshape(g2, (BLOCK, DP, DP)) * kf[:, :, None], axis=1) * ut2
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


def pass_config(config: dict, name: str, rows: int) -> dict:
    """The launch settings of backward pass `name` (q, s, k, v) for an input of `rows` rows
    (B * H * N): config["taylor_bwd_<name>_small"] when given and rows <= its MAX_ROWS, else
    config["taylor_bwd_<name>"]."""
    small = config.get(f"taylor_bwd_{name}_small")
    if small is not None:
        if "MAX_ROWS" not in small:
            raise ValueError(
                f"config['taylor_bwd_{name}_small'] needs MAX_ROWS (the largest B * H * N it "
                f"takes), got keys {sorted(small)}"
            )
        if rows <= small["MAX_ROWS"]:
            return small
    return config[f"taylor_bwd_{name}"]


def with_pass_settings(config: dict, name: str, settings: dict) -> dict:
    """A copy of `config` whose pass `name` takes `settings` (merged into its entry) at every
    input size: its "_small" entry, which `pass_config` would prefer, is left out."""
    out = {k: v for k, v in config.items() if k != f"taylor_bwd_{name}_small"}
    out[f"taylor_bwd_{name}"] = {**config[f"taylor_bwd_{name}"], **settings}
    return out


def taylor_backward_noncausal(q, k, v, grad_out, state, eps, key_mask, config: dict):
    """(dq, dk, dv) of non-causal Taylor linear attention, d <= 16, from the forward's total
    float32 key state per (b, h) (`taylor_state`). config: launch settings per pass as in
    kernels/linear_attn.py's CONFIG (BLOCK, num_warps, num_stages and `out_runs`' SLOTS_PER_SM,
    COST_ROWS, MIN_ROWS): "taylor_bwd_q" (dq, r, dd), "taylor_bwd_s" (dS, dzc), "taylor_bwd_k"
    (dk; with SPLIT 0 also dv), "taylor_bwd_v" (dv); "taylor_bwd_<pass>_small", where given,
    replaces a pass's settings for inputs of at most its MAX_ROWS rows (B * H * N)."""
    B, H, N, D = q.shape
    cfg = {p: pass_config(config, p, B * H * N) for p in "qskv"}
    E = v.shape[-1]
    _, DP, F1, F2 = feature_sizes("taylor", D, 0)
    EP = next_pow2(E)
    W = state_width(EP, F1, F2)
    BH = B * H
    q, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, grad_out))
    cuda, sms = q.is_cuda, multiprocessors(q.device)
    dq = torch.empty(B, H, N, D, device=q.device, dtype=q.dtype)
    rdd = torch.empty(BH, 2, N, device=q.device, dtype=torch.float32)  # r, dd per query

    # float32 inputs: every product in 3xTF32 (float32 accuracy); one TF32 pass loses the
    # value-mean centring to cancellation (dq 2.7% off at value mean 10 on the H200)
    prec = "tf32x3" if q.dtype == torch.float32 else "tf32"

    def cut(c: dict) -> tuple[int, int, int]:  # (BLOCK, runs per head, rows per run)
        blk = c["BLOCK"] if cuda else 16
        return (blk, *out_runs(N, BH, blk, c, sms))

    blk, runs, rows = cut(cfg["q"])
    c = cfg["q"]
    _taylor_bwd_q_kernel[(BH * runs,)](
        q, g, state, dq, rdd, N, H, D, E, rows, runs, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), g.stride(0), g.stride(1), g.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2),
        BLOCK=blk, DP=DP, EP=EP, PREC=prec,
        num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
    # dS, dzc: one program per run (the forward's state pass, kernels/linear_attn_bwd_ds.py)
    c = cfg["s"]
    blk, runs, rows = cut(c)
    part = torch.empty(BH * runs, W, device=q.device, dtype=torch.float32)
    taylor_bwd_s_kernel[(BH * runs,)](
        q, g, state, rdd, part, N, H, D, E, rows, runs, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), g.stride(0), g.stride(1), g.stride(2),
        BLOCK=blk, DP=DP, EP=EP, AUX=max(AUX_ROWS, 2 * DP), PREC=prec,
        num_warps=c["num_warps"], num_stages=c["num_stages"],
    )  # fmt: skip
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
