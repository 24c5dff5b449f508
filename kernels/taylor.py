"""Pieces shared by the linear-attention forward and backward kernels.

- `feature_parts`: phi(x) built on chip as (P1, P2) (the constant feature of the Taylor map is
  handled by the callers through s0 / z0);
- `taylor_input_grad`: dL/dx of the Taylor feature parts;
- `pow2_scale`, `scaled_cast`: exact power-of-two scaling of float32 operands before their cast
  to 16 bits (the backward kernels);
- the float32 state workspace: one row of width `state_width(EP, F1, F2)` per (b, h[, split])
  holding [s0 (EP) | S1 (F1 x EP) | S2 (F2 x EP) | z0 (1) | z1 (F1) | z2 (F2)], where
  S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) (s0 = sum_j v_j, z0 = number of keys).
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2

#: Programs per multiprocessor that the sequence splits aim for.
WAVES = 2


def feature_sizes(feature_map: str, d: int, fh: int) -> tuple[bool, int, int, int]:
    """(taylor, DP, F1, F2): padded head dim and the padded widths of the parts P1, P2."""
    taylor = feature_map == "taylor"
    dp = next_pow2(d)
    if taylor:
        return True, dp, dp, dp * dp
    fp = next_pow2(fh)
    return False, dp, fp, fp


def state_width(ep: int, f1: int, f2: int) -> int:
    """Floats per state row of the workspace (layout in the module docstring)."""
    return ep * (1 + f1 + f2) + 1 + f1 + f2


def multiprocessors(device: torch.device) -> int | None:
    """Streaming multiprocessors of a CUDA device; None elsewhere (Triton's interpreter)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def sequence_splits(
    n: int, programs: int, block: int, min_rows: int, sms: int | None
) -> tuple[int, int]:
    """(splits, rows per split): split n rows so that `programs` x splits reach WAVES x sms.

    Splits double while that target is not met and each keeps at least `min_rows` rows; rows
    per split are a multiple of `block` (so a ragged n may get one split more). sms=None (the
    interpreter): two splits whenever n allows, so the split path runs on tiny shapes.
    """
    nsplit = 1
    if sms is not None:
        while programs * nsplit < WAVES * sms and n >= 2 * nsplit * min_rows:
            nsplit *= 2
    elif n >= 2 * min_rows:
        nsplit = 2
    if nsplit == 1:
        return 1, -(-n // block) * block
    rows = max(block, n // nsplit // block * block)  # rounded down: a ragged n adds a split
    return -(-n // rows), rows


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def split_program(H, NSPLIT):
        """(pid, pid_e, pid_bh, pid_s, b, h) of a program over (b, h, split) x value blocks."""
        pid = tl.program_id(0).to(tl.int64)
        pid_e = tl.program_id(1)
        pid_bh = pid // NSPLIT
        pid_s = (pid % NSPLIT).to(tl.int32)
        return pid, pid_e, pid_bh, pid_s, pid_bh // H, pid_bh % H

    @triton.jit
    def state_program(H):
        """(pid_bh, pid_s, b, h) of a program over (b, h) x sequence splits."""
        pid_bh = tl.program_id(0).to(tl.int64)
        return pid_bh, tl.program_id(1), pid_bh // H, pid_bh % H

    @triton.jit
    def head_ranges(D, E, FH, e0, DP: tl.constexpr, BE: tl.constexpr, F1: tl.constexpr):
        """(rd, re, rf, d_ok, e_ok, f_ok): head, value (from column e0) and feature columns."""
        rd = tl.arange(0, DP)
        re = e0 + tl.arange(0, BE)
        rf = tl.arange(0, F1)
        return rd, re, rf, rd < D, re < E, rf < FH

    @triton.jit
    def run_of(pid, n_runs, rows_per_run, N):
        """(b*h, first row, stop) of run `pid` (runs of one head consecutive)."""
        pid_bh = pid // n_runs
        start = (pid % n_runs).to(tl.int32) * rows_per_run
        return pid_bh, start, tl.minimum(start + rows_per_run, N)

    @triton.jit
    def split_rows(pid_s, rows_per_split, N):
        """(start, stop): the rows of sequence split pid_s."""
        start = pid_s * rows_per_split
        return start, tl.minimum(start + rows_per_split, N)

    @triton.jit
    def load_tile(base, rn, stride, cols, mask):
        """The (rows, cols) tile at base + rn * stride + cols; 0 outside mask."""
        return tl.load(base + rn[:, None] * stride + cols[None, :], mask=mask, other=0.0)

    @triton.jit
    def load_projection(
        w_ptr, b_ptr, h, D, FH, rd, rf, d_ok, f_ok, dt,
        TAYLOR: tl.constexpr, DP: tl.constexpr, F1: tl.constexpr,
    ):  # fmt: skip
        """Hedgehog's (w (DP, F1), bias (F1,) float32) of head h; zeros for Taylor."""
        w = tl.zeros((DP, F1), dtype=dt)
        bias = tl.zeros((F1,), dtype=tl.float32)
        if not TAYLOR:
            w = load_tile(w_ptr + h * D * FH, rd, FH, rf, d_ok[:, None] & f_ok[None, :])
            bias = tl.load(b_ptr + h * FH + rf, mask=f_ok, other=0.0).to(tl.float32)
        return w, bias

    @triton.jit
    def state_row(ws_ptr, row, EP: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr):
        """Pointer to row `row` of the state workspace (width `state_width(EP, F1, F2)`)."""
        return ws_ptr + row * (EP * (1 + F1 + F2) + 1 + F1 + F2)

    @triton.jit
    def store_taylor_state(
        st, sa, s2, za, count, c1, c2, scale, DP: tl.constexpr, EP: tl.constexpr
    ):
        """One Taylor state row at `st` (layout above, F1 = DP, F2 = DP * DP) from the
        tensor-core sums of the state passes (forward: keys and values; backward dS pass:
        queries and dnum): sa (AUX, EP) holds the linear rows (< DP) and the constant row (DP),
        s2 (F2, EP) the quadratic rows, za (AUX, DP) the z2 rows (< DP) and z1 (row DP); count
        is z0. phi's constants c1, c2 are applied here, and `scale` to the value parts."""
        ra = tl.arange(0, sa.shape[0])
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, DP * DP)
        is_one = ra[:, None] == DP
        oz = EP * (1 + DP + DP * DP)
        tl.store(st + re, tl.sum(tl.where(is_one, sa, 0.0), axis=0) * scale)
        tl.store(st + EP + ra[:, None] * EP + re[None, :], sa * (c1 * scale), mask=ra[:, None] < DP)
        tl.store(st + EP + DP * EP + rf[:, None] * EP + re[None, :], s2 * (c2 * scale))
        one = tl.arange(0, 16)  # z0 through a 16-wide vector, one element kept
        tl.store(st + oz + one, tl.zeros((16,), tl.float32) + count, mask=one < 1)
        tl.store(st + oz + 1 + rd, tl.sum(tl.where(is_one, za, 0.0), axis=0) * c1)
        tl.store(st + oz + 1 + DP + ra[:, None] * DP + rd[None, :], za * c2, mask=ra[:, None] < DP)

    @triton.jit
    def init_state(
        st, re, HAS_INIT: tl.constexpr, BLOCK_E: tl.constexpr, EP: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr,
    ):  # fmt: skip
        """(s0, S1, S2, z0, z1, z2) for value columns `re`: loaded from the workspace row st
        when HAS_INIT, else zeros (z0 a float32 scalar)."""
        s0 = tl.zeros((BLOCK_E,), dtype=tl.float32)
        s1 = tl.zeros((F1, BLOCK_E), dtype=tl.float32)
        s2 = tl.zeros((F2, BLOCK_E), dtype=tl.float32)
        z0 = tl.sum(tl.zeros((16,), dtype=tl.float32), axis=0)
        z1 = tl.zeros((F1,), dtype=tl.float32)
        z2 = tl.zeros((F2,), dtype=tl.float32)
        if HAS_INIT:
            s0, s1, s2, z0, z1, z2 = load_state(st, re, EP, F1, F2)
        return s0, s1, s2, z0, z1, z2

    @triton.jit
    def feature_parts(
        x,
        rows_ok,
        w,
        bias,
        f_ok,
        d_real,
        TAYLOR: tl.constexpr,
        BLOCK: tl.constexpr,
        DP: tl.constexpr,
    ):
        """Feature parts (P1, P2) of a (BLOCK, DP) tile; rows outside the sequence give 0.

        Taylor: P1 = x / d^(1/4), P2 = vec(x x^T) / (sqrt(2) sqrt(d));
        Hedgehog: P1 = softmax(xW + b), P2 = softmax(-(xW + b)).
        """
        xf = x.to(tl.float32)
        if TAYLOR:
            rrd = tl.sqrt(tl.sqrt(d_real))
            p1 = xf / rrd
            p2 = tl.reshape(xf[:, :, None] * xf[:, None, :], (BLOCK, DP * DP))
            p2 = p2 / (1.4142135623730951 * tl.sqrt(d_real))
        else:
            z = tl.dot(x, w).to(tl.float32) + bias[None, :]
            neg = float("-inf")
            zp = tl.where(f_ok[None, :], z, neg)
            zn = tl.where(f_ok[None, :], -z, neg)
            e1 = tl.exp(zp - tl.max(zp, axis=1)[:, None])
            e2 = tl.exp(zn - tl.max(zn, axis=1)[:, None])
            p1 = e1 / tl.sum(e1, axis=1)[:, None]
            p2 = e2 / tl.sum(e2, axis=1)[:, None]
        p1 = tl.where(rows_ok[:, None], p1, 0.0)
        p2 = tl.where(rows_ok[:, None], p2, 0.0)
        return p1, p2

    @triton.jit
    def taylor_input_grad(x, g1, g2, d_real, BLOCK: tl.constexpr, DP: tl.constexpr):
        """dL/dx (BLOCK, DP) from dL/dP1 (BLOCK, DP) and dL/dP2 (BLOCK, DP*DP), Taylor map.

        P2[a, b] = x_a x_b / c, so dL/dx_m = (sum_b G[m, b] x_b + sum_a G[a, m] x_a) / c.
        """
        xf = x.to(tl.float32)
        g = tl.reshape(g2, (BLOCK, DP, DP))
        t = tl.sum(g * xf[:, None, :], axis=2) + tl.sum(g * xf[:, :, None], axis=1)
        return g1 / tl.sqrt(tl.sqrt(d_real)) + t / (1.4142135623730951 * tl.sqrt(d_real))

    @triton.jit
    def pow2_scale(m, T: tl.constexpr):
        """(c, 1 / c): the power of two c with m c in [2^T, 2^(T+1)) for m >= 0 (T -1 or 14;
        m clamped to [2^-112, 2^126)), from the exponent bits, so x c and y / c are exact."""
        e = tl.minimum(tl.maximum((m.to(tl.int32, bitcast=True) >> 23) & 0xFF, 15), 252)
        c = ((254 + T - e) << 23).to(tl.float32, bitcast=True)
        return c, ((e - T) << 23).to(tl.float32, bitcast=True)

    @triton.jit
    def abs_max(x):
        """max |x| over a 2-D tile."""
        return tl.max(tl.max(tl.abs(x), axis=1), axis=0)

    @triton.jit
    def scaled_cast(x, dt):
        """(x c cast to dt, 1 / c) with max |x c| in [2^14, 2^15) (`pow2_scale`): a float32
        operand of a 16-bit tensor-core product, kept in float16's range and out of its
        subnormals; the product times 1 / c is exact in float32."""
        c, u = pow2_scale(abs_max(x), 14)
        return (x * c).to(dt), u

    @triton.jit
    def load_state(st, re, EP: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr):
        """(s0, S1, S2, z0, z1, z2) of one workspace row, value columns `re` (< EP)."""
        rf = tl.arange(0, F1)
        rf2 = tl.arange(0, F2)
        oz = EP * (1 + F1 + F2)
        s0 = tl.load(st + re)
        s1 = tl.load(st + EP + rf[:, None] * EP + re[None, :])
        s2 = tl.load(st + EP + F1 * EP + rf2[:, None] * EP + re[None, :])
        z0 = tl.load(st + oz)
        z1 = tl.load(st + oz + 1 + rf)
        z2 = tl.load(st + oz + 1 + F1 + rf2)
        return s0, s1, s2, z0, z1, z2

    @triton.jit
    def store_state(
        st, re, s0, s1, s2, z0, z1, z2, z_ok,
        EP: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr,
    ):  # fmt: skip
        """Write value columns `re` of one workspace row; the z parts only where z_ok (int 1/0)."""
        rf = tl.arange(0, F1)
        rf2 = tl.arange(0, F2)
        oz = EP * (1 + F1 + F2)
        tl.store(st + re, s0)
        tl.store(st + EP + rf[:, None] * EP + re[None, :], s1)
        tl.store(st + EP + F1 * EP + rf2[:, None] * EP + re[None, :], s2)
        one = tl.arange(0, 16)  # z0 written through a 16-wide vector (one element kept)
        tl.store(st + oz + one, tl.zeros((16,), tl.float32) + z0, mask=one < z_ok)
        tl.store(st + oz + 1 + rf, z1, mask=rf < F1 * z_ok)
        tl.store(st + oz + 1 + F1 + rf2, z2, mask=rf2 < F2 * z_ok)
