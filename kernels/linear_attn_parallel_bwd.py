"""Training (forward + backward) of causal Taylor (BASED) attention in its quadratic form.

The backward of `kernels.linear_attn_parallel`'s attention-like forward, built like
flash-attention 2's without the softmax. With a_ij = 1 + s + s^2/2, s = q_i . k_j / sqrt(d),
den_i = sum_{j<=i} a_ij, r_i = 1 / (den_i + eps), out_i = r_i sum_{j<=i} a_ij v_j and g_i the
upstream gradient: dnum_i = r_i g_i, delta_i = g_i . out_i, and for j <= i

    ds_ij = r_i (g_i . v_j - delta_i) (1 + s_ij),
    dq_i = sum_j ds_ij k_j / sqrt(d),  dk_j = sum_i ds_ij q_i / sqrt(d),  dv_j = sum_i a_ij r_i g_i.

Entry: `taylor_causal_parallel_train(q, k, v, eps)` (autograd; `linear_attention` routes causal
Taylor training at N <= PARALLEL_TRAIN_MAX_N here). Its forward is the inference kernel with
STORE_R on (it also writes r, float32) and saves q, k, v, out and r: O(N) memory, no N x N.
Two backward kernels, each over (b, h, row block), the causal mask only on diagonal blocks:

1. `_dq_kernel` (query block i, key blocks j <= i, longest rows first): dq, and delta_i for
   kernel 2, exact in float32 rather than g_i . out_i from the 16-bit output: with values of
   mean mu, out's rounding (~ ulp(mu)) shifts all ds_ij of a row alike and sum_j (1 + s_ij) k_j
   grows as N q_i, so dq would be off by ~ ulp(mu) sqrt(N) (float64 emulation, mu = 10, d = 16,
   e = 64, N = 4k: 8% in bf16, 1% in fp16; as done here 0.2% and 0.02%, for any mu). The
   kernel centres on dh_i = g_i . out_i (16-bit out, read once per program), accumulates
   A_i = sum_j (g_i . v_j - dh_i)(1 + s_ij) k_j, B_i = sum_j (1 + s_ij) k_j and
   t_i = sum_j a_ij (g_i . v_j - dh_i); then c_i = delta_i - dh_i = r_i (t_i - eps dh_i) and
   dq_i = r_i (A_i - c_i B_i) / sqrt(d) (one more (BM, BN) x (BN, d) product per tile).
2. `_dkdv_kernel` (key block j, query blocks i >= j, the heaviest key blocks first): dk and
   dv accumulated in float32 registers from r and delta.

Tensor-core operands: 16-bit tiles cast after the float32 math. float16 range (SCALE16, set
for float16 inputs only: bfloat16 has float32's exponent range): a_ij r_i is in (0, 1], so
its tile is multiplied by 2^15 before the cast (smallest normal 2^-14: values down to 2^-29
stay normal); the ds tiles, which can be large (|s| ~ 20, |g . v|) or tiny (r ~ 1 / (N a)),
are multiplied row by row by a power of two (`_pow2`) that puts each row's max |.| in
[2^14, 2^15), and the float32 product is multiplied back: exact scalings, float16-safe.
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, next_pow2
from kernels.linear_attn_parallel import taylor_causal_parallel_fwd

#: Longest sequence for which `linear_attention` trains causal Taylor attention through this
#: path (forward + backward); longer ones take the chunked kernels and their fused backward.
PARALLEL_TRAIN_MAX_N = 8192

#: Launch settings on CUDA. dq: BM query rows per program, BN key rows per step (BM a
#: multiple of BN); dkdv: BN key rows per program, BM query rows per step (BN a multiple of
#: BM). Flash-attention 2's Triton split (128 rows owned, 32 per step). Compiled offline for
#: sm_90 (Triton 3.9, bf16 / fp16 / fp32, d 16 or 32, e 16 to 128): no spills (dq 112-212
#: registers, dkdv 121-255; the H200 runs Triton 3.6, whose counts may differ); 64 x 64 with 4
#: warps spills in fp16 and fp32. Timed on the H200 as they are (benchmarks/la_causal_forms.py
#: train section); its sweep section was not run.
CONFIG: dict[str, dict[str, int]] = {
    "dq": {"BM": 128, "BN": 32, "num_warps": 8, "num_stages": 3},
    "dkdv": {"BM": 32, "BN": 128, "num_warps": 8, "num_stages": 3},
}
#: Block sizes in Triton's CPU interpreter (tests change them).
INTERPRET_CONFIG: dict[str, dict[str, int]] = {
    "dq": {"BM": 16, "BN": 16},
    "dkdv": {"BM": 16, "BN": 16},
}

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _pow2(m, T: tl.constexpr):
        """(c, 1 / c): powers of two with m c in [2^T, 2^(T + 1)) for float32 m >= 0 (T >= 1;
        m's exponent clamped so both stay normal), from m's exponent bits: scaling is exact."""
        e = (m.to(tl.int32, bitcast=True) >> 23) & 0xFF
        e = tl.minimum(tl.maximum(e, T + 1), 254)
        c = ((254 + T - e) << 23).to(tl.float32, bitcast=True)
        return c, ((e - T) << 23).to(tl.float32, bitcast=True)

    @triton.jit
    def _row_dot(x, y, acc, dt: tl.constexpr, SCALE16: tl.constexpr):
        """acc + x y for float32 x (rows scaled by powers of two into float16's range when
        SCALE16), x cast to dt, y already in dt."""
        if SCALE16:
            c, u = _pow2(tl.max(tl.abs(x), axis=1), 14)
            acc += tl.dot((x * c[:, None]).to(dt), y).to(tl.float32) * u[:, None]
        else:
            acc = tl.dot(x.to(dt), y, acc)
        return acc

    @triton.jit
    def _dq_tile(
        q, g, k, v, dh, acc, kacc, t, keep, scale,
        dt: tl.constexpr, SCALE16: tl.constexpr, DIAG: tl.constexpr,
    ):  # fmt: skip
        """One (query block, key block) tile of `_dq_kernel`: A, B and t (see the module)."""
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
        a = 1.0 + s + 0.5 * s * s
        da = 1.0 + s
        if DIAG:
            a = tl.where(keep, a, 0.0)
            da = tl.where(keep, da, 0.0)
        c = tl.dot(g, tl.trans(v)).to(tl.float32) - dh[:, None]  # g_i . v_j - dh_i
        t += tl.sum(a * c, axis=1)
        acc = _row_dot(c * da, k, acc, dt, SCALE16)
        kacc = tl.dot(da.to(dt), k, kacc)  # |1 + s| < 362 where the forward's a fits float16
        return acc, kacc, t

    @triton.jit
    def _dq_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr, g_ptr, r_ptr, dq_ptr, dl_ptr, N, H, D, E, scale, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sgb, sgh, sgn,
        BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        SCALE16: tl.constexpr,
    ):  # fmt: skip
        """dq and delta of query rows [m0, m0 + BM) of one (b, h): key blocks left of the
        diagonal unmasked, then those of the diagonal region with the causal mask."""
        m0 = (tl.num_programs(1) - 1 - tl.program_id(1)) * BM  # the longest rows first
        bh = tl.program_id(0).to(tl.int64)
        b, h = bh // H, bh % H
        rm = m0 + tl.arange(0, BM)
        rn0 = tl.arange(0, BN)
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        d_ok, e_ok, m_ok = rd < D, re < E, rm < N
        md = m_ok[:, None] & d_ok[None, :]
        me = m_ok[:, None] & e_ok[None, :]
        dt = q_ptr.dtype.element_ty
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        q = tl.load(q_ptr + b * sqb + h * sqh + rm[:, None] * sqn + rd[None, :], mask=md, other=0.0)
        g = tl.load(g_ptr + b * sgb + h * sgh + rm[:, None] * sgn + re[None, :], mask=me, other=0.0)
        o = tl.load(o_ptr + b * sob + h * soh + rm[:, None] * son + re[None, :], mask=me, other=0.0)
        r = tl.load(r_ptr + bh * N + rm, mask=m_ok, other=0.0)
        dh = tl.sum(g.to(tl.float32) * o.to(tl.float32), axis=1)  # g . out, out rounded
        acc = tl.zeros((BM, DP), dtype=tl.float32)
        kacc = tl.zeros((BM, DP), dtype=tl.float32)
        t = tl.zeros((BM,), dtype=tl.float32)
        for n0 in range(0, m0, BN):  # every key of these blocks precedes every query row
            rn = n0 + rn0
            k = tl.load(kb + rn[:, None] * skn + rd[None, :], mask=d_ok[None, :], other=0.0)
            v = tl.load(vb + rn[:, None] * svn + re[None, :], mask=e_ok[None, :], other=0.0)
            acc, kacc, t = _dq_tile(q, g, k, v, dh, acc, kacc, t, True, scale, dt, SCALE16, False)
        for n0 in range(m0, tl.minimum(m0 + BM, N), BN):  # the diagonal: key j <= query i
            rn = n0 + rn0
            n_ok = rn < N
            k = tl.load(
                kb + rn[:, None] * skn + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
            )
            v = tl.load(
                vb + rn[:, None] * svn + re[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0
            )
            keep = rm[:, None] >= rn[None, :]
            acc, kacc, t = _dq_tile(q, g, k, v, dh, acc, kacc, t, keep, scale, dt, SCALE16, True)
        c = r * (t - eps * dh)  # delta - dh, in float32
        dq = (acc - c[:, None] * kacc) * (r * scale)[:, None]
        dst = dq_ptr + (bh * N + rm[:, None]) * D + rd[None, :]
        tl.store(dst, dq.to(dq_ptr.dtype.element_ty), mask=md)
        tl.store(dl_ptr + bh * N + rm, dh + c, mask=m_ok)

    @triton.jit
    def _dkdv_tile(
        k, v, q_ptr, g_ptr, r_ptr, dl_ptr, rn, m0, dk, dv, N, D, E, scale, sqn, sgn,
        BM: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr, dt: tl.constexpr,
        SCALE16: tl.constexpr, DIAG: tl.constexpr,
    ):  # fmt: skip
        """Query rows [m0, m0 + BM) against the program's keys rn (tiles transposed: rows j,
        columns i); rows past N read r = 0, which zeroes their terms."""
        rm = m0 + tl.arange(0, BM)
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        m_ok = rm < N
        q = tl.load(
            q_ptr + rm[:, None] * sqn + rd[None, :],
            mask=m_ok[:, None] & (rd < D)[None, :],
            other=0.0,
        )
        g = tl.load(
            g_ptr + rm[:, None] * sgn + re[None, :],
            mask=m_ok[:, None] & (re < E)[None, :],
            other=0.0,
        )
        r = tl.load(r_ptr + rm, mask=m_ok, other=0.0)
        dl = tl.load(dl_ptr + rm, mask=m_ok, other=0.0)
        s = tl.dot(k, tl.trans(q)).to(tl.float32) * scale  # (BN, BM): s_ij at [j, i]
        ar = (1.0 + s + 0.5 * s * s) * r[None, :]  # a_ij r_i in (0, 1]
        ds = 1.0 + s
        if DIAG:
            keep = rm[None, :] >= rn[:, None]
            ar = tl.where(keep, ar, 0.0)
            ds = tl.where(keep, ds, 0.0)
        if SCALE16:  # values down to 2^-29 stay normal float16
            dv += tl.dot((ar * 32768.0).to(dt), g).to(tl.float32) * (1.0 / 32768.0)
        else:
            dv = tl.dot(ar.to(dt), g, dv)
        ds = ds * (tl.dot(v, tl.trans(g)).to(tl.float32) - dl[None, :]) * r[None, :]
        dk = _row_dot(ds, q, dk, dt, SCALE16)
        return dk, dv

    @triton.jit
    def _dkdv_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, r_ptr, dl_ptr, dk_ptr, dv_ptr, N, H, D, E, scale,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sgb, sgh, sgn,
        BM: tl.constexpr, BN: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        SCALE16: tl.constexpr,
    ):  # fmt: skip
        """dk, dv of key rows [n0, n0 + BN) of one (b, h): the query blocks of the diagonal
        region with the causal mask, then every later query block unmasked."""
        n0 = tl.program_id(1) * BN  # the first keys (the most query blocks) first
        bh = tl.program_id(0).to(tl.int64)
        b, h = bh // H, bh % H
        rn = n0 + tl.arange(0, BN)
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        d_ok, e_ok, n_ok = rd < D, re < E, rn < N
        nd = n_ok[:, None] & d_ok[None, :]
        ne = n_ok[:, None] & e_ok[None, :]
        dt = q_ptr.dtype.element_ty
        k = tl.load(k_ptr + b * skb + h * skh + rn[:, None] * skn + rd[None, :], mask=nd, other=0.0)
        v = tl.load(v_ptr + b * svb + h * svh + rn[:, None] * svn + re[None, :], mask=ne, other=0.0)
        qb = q_ptr + b * sqb + h * sqh
        gb = g_ptr + b * sgb + h * sgh
        rb = r_ptr + bh * N
        lb = dl_ptr + bh * N
        dk = tl.zeros((BN, DP), dtype=tl.float32)
        dv = tl.zeros((BN, EP), dtype=tl.float32)
        for m0 in range(n0, tl.minimum(n0 + BN, N), BM):  # the diagonal: query i >= key j
            dk, dv = _dkdv_tile(k, v, qb, gb, rb, lb, rn, m0, dk, dv, N, D, E, scale, sqn, sgn,
                                BM, DP, EP, dt, SCALE16, True)  # fmt: skip
        for m0 in range(n0 + BN, N, BM):  # every query row follows every key of the block
            dk, dv = _dkdv_tile(k, v, qb, gb, rb, lb, rn, m0, dk, dv, N, D, E, scale, sqn, sgn,
                                BM, DP, EP, dt, SCALE16, False)  # fmt: skip
        dst = (bh * N + rn[:, None]) * D + rd[None, :]
        tl.store(dk_ptr + dst, (dk * scale).to(dk_ptr.dtype.element_ty), mask=nd)
        dst = (bh * N + rn[:, None]) * E + re[None, :]
        tl.store(dv_ptr + dst, dv.to(dv_ptr.dtype.element_ty), mask=ne)


def taylor_causal_parallel_backward(
    q, k, v, out, r, grad_out, eps: float, need_kv: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(dq, dk, dv) from the training forward's out and r (`taylor_causal_parallel_fwd`);
    need_kv=False skips the dk, dv kernel (returns None for them)."""
    B, H, N, D = q.shape
    E = v.shape[-1]
    q, k, v, out, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, out, grad_out))
    dq = torch.empty(B, H, N, D, device=q.device, dtype=q.dtype)
    dk = torch.empty(B, H, N, D, device=q.device, dtype=k.dtype) if need_kv else None
    dv = torch.empty(B, H, N, E, device=q.device, dtype=v.dtype) if need_kv else None
    if N == 0 or B * H == 0:
        return dq, dk, dv
    cuda = q.is_cuda
    cq, ck = ((CONFIG if cuda else INTERPRET_CONFIG)[p] for p in ("dq", "dkdv"))
    if cq["BM"] % cq["BN"] or ck["BN"] % ck["BM"]:
        raise ValueError(f"dq needs BM a multiple of BN, dkdv BN a multiple of BM: {cq}, {ck}")
    launch = ("num_warps", "num_stages")
    DP, EP, scale = next_pow2(D), next_pow2(E), float(D) ** -0.5
    scale16 = q.dtype == torch.float16
    delta = torch.empty(B, H, N, device=q.device, dtype=torch.float32)
    _dq_kernel[(B * H, triton.cdiv(N, cq["BM"]))](
        q, k, v, out, g, r, dq, delta, N, H, D, E, scale, eps,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        g.stride(0), g.stride(1), g.stride(2),
        BM=cq["BM"], BN=cq["BN"], DP=DP, EP=EP, SCALE16=scale16,
        **{x: cq[x] for x in launch if cuda},
    )  # fmt: skip
    if need_kv:
        _dkdv_kernel[(B * H, triton.cdiv(N, ck["BN"]))](
            q, k, v, g, r, delta, dk, dv, N, H, D, E, scale,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), g.stride(0), g.stride(1), g.stride(2),
            BM=ck["BM"], BN=ck["BN"], DP=DP, EP=EP, SCALE16=scale16,
            **{x: ck[x] for x in launch if cuda},
        )  # fmt: skip
    return dq, dk, dv


class _TaylorCausalParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, eps):
        out, r = taylor_causal_parallel_fwd(q, k, v, eps)
        ctx.save_for_backward(q, k, v, out, r)
        ctx.eps = eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, r = ctx.saved_tensors
        need_kv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dq, dk, dv = taylor_causal_parallel_backward(q, k, v, out, r, grad_out, ctx.eps, need_kv)
        need = ctx.needs_input_grad
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None)


def taylor_causal_parallel_train(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Causal Taylor linear attention, quadratic form, with autograd; q, k (B, H, N, d),
    v (B, H, N, e) of one dtype on one device (float32, float16 or bfloat16; d <= 32).

    For N up to `PARALLEL_TRAIN_MAX_N` (work grows as N^2; `linear_attention` routes 16-bit
    inputs with padded d <= 16 and e <= 128 here, float32 keeps the chunked kernels: one TF32
    pass per product here). The forward saves q, k, v, out and r
    (float32, B H N); the backward runs two Triton kernels (no reference recompute).
    """
    return _TaylorCausalParallel.apply(q, k, v, float(eps))
