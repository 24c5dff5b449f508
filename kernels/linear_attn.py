"""Linear attention with the Taylor (BASED) or Hedgehog feature map, computed on chip.

The Triton kernels build phi(q), phi(k) in registers and keep only the state
S = sum_j phi(k_j) v_j^T and z = sum_j phi(k_j) in HBM (B*H*(1+F)*e floats); phi is
never written out. The feature vector is split as phi = [c, P1, P2]:
Taylor: c = 1, P1 = x / d^(1/4), P2 = vec(x x^T) / (sqrt(2) sqrt(d));
Hedgehog: c = 0, P1 = softmax(xW + b), P2 = softmax(-(xW + b)).
"""

from __future__ import annotations

import torch

from kernels.common import HAS_TRITON, check_float, next_pow2, use_triton
from kernels.reference import FeatureMap, linear_attention_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _phi(
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
        """Feature parts (P1, P2) of a (BLOCK, DP) tile; rows outside the sequence give 0."""
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
    def _la_state_kernel(
        k_ptr, v_ptr, w_ptr, b_ptr, m_ptr,
        s0_ptr, s1_ptr, s2_ptr, z0_ptr, z1_ptr, z2_ptr,
        N, H, D, E, FH, rows_per_split, d_real,
        skb, skh, skn, svb, svh, svn,
        TAYLOR: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr, EP: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr, NSPLIT: tl.constexpr, HAS_MASK: tl.constexpr,
    ):  # fmt: skip
        pid_bh = tl.program_id(0).to(tl.int64)
        pid_s = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F1)
        d_ok = rd < D
        e_ok = re < E
        f_ok = rf < FH
        w = tl.zeros((DP, F1), dtype=k_ptr.dtype.element_ty)
        bias = tl.zeros((F1,), dtype=tl.float32)
        if not TAYLOR:
            w = tl.load(
                w_ptr + h * D * FH + rd[:, None] * FH + rf[None, :],
                mask=d_ok[:, None] & f_ok[None, :],
                other=0.0,
            )
            bias = tl.load(b_ptr + h * FH + rf, mask=f_ok, other=0.0).to(tl.float32)
        s0 = tl.zeros((EP,), dtype=tl.float32)
        s1 = tl.zeros((F1, EP), dtype=tl.float32)
        s2 = tl.zeros((F2, EP), dtype=tl.float32)
        z1 = tl.zeros((F1,), dtype=tl.float32)
        z2 = tl.zeros((F2,), dtype=tl.float32)
        cnt = tl.zeros((BLOCK,), dtype=tl.float32)
        start = pid_s * rows_per_split
        stop = tl.minimum(start + rows_per_split, N)
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        for n0 in range(start, stop, BLOCK):
            rn = n0 + tl.arange(0, BLOCK)
            n_ok = rn < stop
            kt = tl.load(
                kb + rn[:, None] * skn + rd[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0
            )
            if HAS_MASK:  # padded keys (key_mask == 0) drop out of S and z
                km = tl.load(m_ptr + b * N + rn, mask=n_ok, other=0.0)
                n_ok = n_ok & (km != 0.0)
                cnt += n_ok.to(tl.float32)
            vt = tl.load(
                vb + rn[:, None] * svn + re[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0
            )
            p1, p2 = _phi(kt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
            s0 += tl.sum(vt.to(tl.float32), axis=0)
            s1 += tl.dot(tl.trans(p1.to(vt.dtype)), vt)
            s2 += tl.dot(tl.trans(p2.to(vt.dtype)), vt)
            z1 += tl.sum(p1, axis=0)
            z2 += tl.sum(p2, axis=0)
        base = pid_bh * NSPLIT + pid_s
        rf2 = tl.arange(0, F2)
        tl.store(s0_ptr + base * EP + re, s0)
        tl.store(s1_ptr + base * F1 * EP + rf[:, None] * EP + re[None, :], s1)
        tl.store(s2_ptr + base * F2 * EP + rf2[:, None] * EP + re[None, :], s2)
        if HAS_MASK:
            tl.store(z0_ptr + base, tl.sum(cnt, axis=0))
        else:
            tl.store(z0_ptr + base, (stop - start).to(tl.float32))
        tl.store(z1_ptr + base * F1 + rf, z1)
        tl.store(z2_ptr + base * F2 + rf2, z2)

    @triton.jit
    def _la_out_kernel(
        q_ptr, w_ptr, b_ptr, o_ptr,
        s0_ptr, s1_ptr, s2_ptr, z0_ptr, z1_ptr, z2_ptr,
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
        rd = tl.arange(0, DP)
        re = tl.arange(0, EP)
        rf = tl.arange(0, F1)
        rf2 = tl.arange(0, F2)
        d_ok = rd < D
        e_ok = re < E
        f_ok = rf < FH
        w = tl.zeros((DP, F1), dtype=q_ptr.dtype.element_ty)
        bias = tl.zeros((F1,), dtype=tl.float32)
        if not TAYLOR:
            w = tl.load(
                w_ptr + h * D * FH + rd[:, None] * FH + rf[None, :],
                mask=d_ok[:, None] & f_ok[None, :],
                other=0.0,
            )
            bias = tl.load(b_ptr + h * FH + rf, mask=f_ok, other=0.0).to(tl.float32)
        rn = pid_n * BLOCK + tl.arange(0, BLOCK)
        n_ok = rn < N
        qt = tl.load(
            q_ptr + b * sqb + h * sqh + rn[:, None] * sqn + rd[None, :],
            mask=n_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        p1, p2 = _phi(qt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
        s1 = tl.load(s1_ptr + pid_bh * F1 * EP + rf[:, None] * EP + re[None, :])
        s2 = tl.load(s2_ptr + pid_bh * F2 * EP + rf2[:, None] * EP + re[None, :])
        z1 = tl.load(z1_ptr + pid_bh * F1 + rf)
        z2 = tl.load(z2_ptr + pid_bh * F2 + rf2)
        num = tl.dot(p1.to(s1.dtype), s1) + tl.dot(p2.to(s2.dtype), s2)
        den = tl.sum(p1 * z1[None, :], axis=1) + tl.sum(p2 * z2[None, :], axis=1)
        if TAYLOR:
            s0 = tl.load(s0_ptr + pid_bh * EP + re)
            z0 = tl.load(z0_ptr + pid_bh)
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
        q_ptr, k_ptr, v_ptr, w_ptr, b_ptr, o_ptr,
        N, H, D, E, FH, d_real, eps,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        TAYLOR: tl.constexpr, BLOCK: tl.constexpr, DP: tl.constexpr, BLOCK_E: tl.constexpr,
        F1: tl.constexpr, F2: tl.constexpr,
    ):  # fmt: skip
        pid_bh = tl.program_id(0).to(tl.int64)
        pid_e = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        rd = tl.arange(0, DP)
        re = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        rf = tl.arange(0, F1)
        d_ok = rd < D
        e_ok = re < E
        f_ok = rf < FH
        dt = q_ptr.dtype.element_ty
        w = tl.zeros((DP, F1), dtype=dt)
        bias = tl.zeros((F1,), dtype=tl.float32)
        if not TAYLOR:
            w = tl.load(
                w_ptr + h * D * FH + rd[:, None] * FH + rf[None, :],
                mask=d_ok[:, None] & f_ok[None, :],
                other=0.0,
            )
            bias = tl.load(b_ptr + h * FH + rf, mask=f_ok, other=0.0).to(tl.float32)
        s0 = tl.zeros((BLOCK_E,), dtype=tl.float32)
        s1 = tl.zeros((F1, BLOCK_E), dtype=tl.float32)
        s2 = tl.zeros((F2, BLOCK_E), dtype=tl.float32)
        z0 = tl.sum(tl.zeros((BLOCK,), dtype=tl.float32), axis=0)
        z1 = tl.zeros((F1,), dtype=tl.float32)
        z2 = tl.zeros((F2,), dtype=tl.float32)
        qb = q_ptr + b * sqb + h * sqh
        kb = k_ptr + b * skb + h * skh
        vb = v_ptr + b * svb + h * svh
        ob = o_ptr + b * sob + h * soh
        ri = tl.arange(0, BLOCK)
        tril = ri[:, None] >= ri[None, :]
        for n0 in range(0, N, BLOCK):
            rn = n0 + ri
            n_ok = rn < N
            m2 = n_ok[:, None] & d_ok[None, :]
            qt = tl.load(qb + rn[:, None] * sqn + rd[None, :], mask=m2, other=0.0)
            kt = tl.load(kb + rn[:, None] * skn + rd[None, :], mask=m2, other=0.0)
            vt = tl.load(
                vb + rn[:, None] * svn + re[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0
            )
            q1, q2 = _phi(qt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
            k1, k2 = _phi(kt, n_ok, w, bias, f_ok, d_real, TAYLOR, BLOCK, DP)
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
# (bf16, B=8, H=12, N=16k, d=16, e=64; benchmarks/results/kernels-NVIDIA-H100-80GB-HBM3.json).
CONFIG: dict[str, dict[str, int]] = {
    "state": {"BLOCK": 64, "num_warps": 8},
    "out": {"BLOCK": 128, "num_warps": 8},
    "causal": {"BLOCK": 32, "num_warps": 4, "BLOCK_E": 32},
}


def _sizes(feature_map: str, d: int, fh: int) -> tuple[bool, int, int, int]:
    taylor = feature_map == "taylor"
    dp = next_pow2(d)
    if taylor:
        return True, dp, dp, dp * dp
    fp = next_pow2(fh)
    return False, dp, fp, fp


def _la_forward_triton(q, k, v, feature_map, causal, eps, w, bias, key_mask=None):
    B, H, N, D = q.shape
    E = v.shape[-1]
    taylor = feature_map == "taylor"
    fh = 0 if taylor else w.shape[-1]
    taylor, DP, F1, F2 = _sizes(feature_map, D, fh)
    if taylor:
        w = torch.zeros(1, device=q.device, dtype=q.dtype)
        bias = torch.zeros(1, device=q.device, dtype=torch.float32)
    else:
        w = w.to(q.dtype).contiguous()
        bias = (
            torch.zeros(H, fh, device=q.device, dtype=torch.float32)
            if bias is None
            else bias.float().contiguous()
        )
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    out = torch.empty(B, H, N, E, device=q.device, dtype=q.dtype)
    cuda = q.is_cuda
    if causal:
        cfg = CONFIG["causal"]
        BLOCK = cfg["BLOCK"] if cuda else 16
        BLOCK_E = min(next_pow2(E), cfg["BLOCK_E"] if F2 >= 256 else 64)
        grid = (B * H, triton.cdiv(E, BLOCK_E))
        _la_causal_kernel[grid](
            q, k, v, w, bias, out, N, H, D, E, fh, float(D), eps,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            TAYLOR=taylor, BLOCK=BLOCK, DP=DP, BLOCK_E=BLOCK_E, F1=F1, F2=F2,
            num_warps=cfg["num_warps"],
        )  # fmt: skip
        return out
    EP = next_pow2(E)
    BLOCK = CONFIG["state"]["BLOCK"] if cuda else 16
    # split the sequence so the state pass has enough programs to fill the GPU
    nsplit = 1
    if cuda:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        while B * H * nsplit < 2 * sms and N // (nsplit * 2) >= 4 * BLOCK:
            nsplit *= 2
    elif N >= 4 * BLOCK:
        nsplit = 2  # exercises the split path in the interpreter
    rows = triton.cdiv(triton.cdiv(N, nsplit), BLOCK) * BLOCK
    nsplit = triton.cdiv(N, rows)
    f32 = dict(device=q.device, dtype=torch.float32)
    s0 = torch.empty(B * H, nsplit, EP, **f32)
    s1 = torch.empty(B * H, nsplit, F1, EP, **f32)
    s2 = torch.empty(B * H, nsplit, F2, EP, **f32)
    z0 = torch.empty(B * H, nsplit, **f32)
    z1 = torch.empty(B * H, nsplit, F1, **f32)
    z2 = torch.empty(B * H, nsplit, F2, **f32)
    mask = key_mask.to(torch.float32).contiguous() if key_mask is not None else z0
    _la_state_kernel[(B * H, nsplit)](
        k, v, w, bias, mask, s0, s1, s2, z0, z1, z2, N, H, D, E, fh, rows, float(D),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        TAYLOR=taylor, BLOCK=BLOCK, DP=DP, EP=EP, F1=F1, F2=F2, NSPLIT=nsplit,
        HAS_MASK=key_mask is not None,
        num_warps=CONFIG["state"]["num_warps"],
    )  # fmt: skip
    sdt = torch.float32 if q.dtype == torch.float32 else q.dtype
    s0, z0 = s0.sum(1).contiguous(), z0.sum(1).contiguous()
    s1, s2 = s1.sum(1).to(sdt).contiguous(), s2.sum(1).to(sdt).contiguous()
    z1, z2 = z1.sum(1).contiguous(), z2.sum(1).contiguous()
    BLOCK = CONFIG["out"]["BLOCK"] if cuda else 16
    grid = (triton.cdiv(N, BLOCK) * B * H,)
    _la_out_kernel[grid](
        q, w, bias, out, s0, s1, s2, z0, z1, z2, N, H, D, E, fh, float(D), eps,
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        TAYLOR=taylor, BLOCK=BLOCK, DP=DP, EP=EP, F1=F1, F2=F2,
        num_warps=CONFIG["out"]["num_warps"],
    )  # fmt: skip
    return out


class _LinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, w, bias, feature_map, causal, eps, key_mask):
        ctx.save_for_backward(q, k, v, w, bias, key_mask)
        ctx.cfg = (feature_map, causal, eps)
        return _la_forward_triton(q, k, v, feature_map, causal, eps, w, bias, key_mask)

    @staticmethod
    def backward(ctx, grad_out):
        # Gradients by recomputing the float32 reference under autograd (correct, not fused).
        q, k, v, w, bias, key_mask = ctx.saved_tensors
        feature_map, causal, eps = ctx.cfg
        with torch.enable_grad():
            ins = [t.detach().requires_grad_(t.requires_grad) if t is not None else None
                   for t in (q, k, v, w, bias)]  # fmt: skip
            out = linear_attention_reference(
                ins[0], ins[1], ins[2], feature_map, causal, eps, ins[3], ins[4],
                key_mask=key_mask,
            )  # fmt: skip
            wanted = [t for t in ins if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out) if wanted else [])
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
    the Triton path; causal with a mask runs the reference).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, d), got shape {tuple(t.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must have the same shape")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v {tuple(v.shape)} must share (B, H, N) with q {tuple(q.shape)}")
    if feature_map == "hedgehog":
        if hedgehog_weight is None:
            raise ValueError("feature_map='hedgehog' needs hedgehog_weight of shape (H, d, F)")
        H, D = q.shape[1], q.shape[3]
        if hedgehog_weight.dim() != 3 or tuple(hedgehog_weight.shape[:2]) != (H, D):
            raise ValueError(
                f"hedgehog_weight must be (H={H}, d={D}, F), got {tuple(hedgehog_weight.shape)}"
            )
        if hedgehog_bias is not None and tuple(hedgehog_bias.shape) != (
            H,
            hedgehog_weight.shape[2],
        ):
            raise ValueError(f"hedgehog_bias must be (H, F), got {tuple(hedgehog_bias.shape)}")
    elif feature_map == "taylor" and q.shape[-1] > 64:
        raise ValueError(
            f"Taylor feature map on d={q.shape[-1]} would need {1 + q.shape[-1] ** 2 + q.shape[-1]}"
            " features; project q, k to a small dim (BASED uses 16) first"
        )
    if key_mask is not None and tuple(key_mask.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"key_mask must be (B, N) = {(q.shape[0], q.shape[2])}, got {tuple(key_mask.shape)}"
        )
    builtin = isinstance(feature_map, str) and feature_map in ("taylor", "hedgehog")
    if (
        builtin
        and not (causal and key_mask is not None)
        and q.dtype != torch.float64
        and (feature_map != "taylor" or q.shape[-1] <= 32)
        and use_triton(backend, q, k, v)
    ):
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
