"""Plain PyTorch references for every kernel (also the CPU path).

They define the semantics the Triton kernels must match; they compute in float32
(or float64 when given float64) and return the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

FeatureMap = str | Callable[[torch.Tensor], torch.Tensor]


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- feature maps
def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    """BASED's 2nd-order Taylor map: [1, x/d^(1/4), vec(x x^T)/(sqrt(2) sqrt(d))].

    phi(q).phi(k) = 1 + s + s^2/2 with s = q.k/sqrt(d): the Taylor series of exp(s).
    Feature dim 1 + d + d^2 (273 for d=16).
    """
    d = x.shape[-1]
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2.0) * math.sqrt(d))
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, x2], dim=-1)


def hedgehog_feature_map(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Hedgehog map: [softmax(xW + b), softmax(-(xW + b))] per head; x (B,H,N,d), W (H,d,F)."""
    z = torch.einsum("bhnd,hdf->bhnf", x, weight.to(x.dtype))
    if bias is not None:
        z = z + bias.to(x.dtype)[None, :, None, :]
    return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)


def apply_feature_map(
    x: torch.Tensor,
    feature_map: FeatureMap,
    hedgehog_weight: torch.Tensor | None = None,
    hedgehog_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    if callable(feature_map):
        return feature_map(x)
    if feature_map == "taylor":
        return taylor_feature_map(x)
    if feature_map == "hedgehog":
        if hedgehog_weight is None:
            raise ValueError(
                "feature_map='hedgehog' needs hedgehog_weight of shape (H, d, F) "
                "(the learned per-head projection)"
            )
        return hedgehog_feature_map(x, hedgehog_weight, hedgehog_bias)
    raise ValueError(f"feature_map={feature_map!r}: use 'taylor', 'hedgehog' or a callable")


# ---------------------------------------------------------------- linear attention
def linear_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: FeatureMap = "taylor",
    causal: bool = False,
    eps: float = 1e-6,
    hedgehog_weight: torch.Tensor | None = None,
    hedgehog_bias: torch.Tensor | None = None,
    chunk_size: int = 64,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """out_i = phi(q_i) S / (phi(q_i).z + eps), S = sum_j phi(k_j) v_j^T, z = sum_j phi(k_j).

    q, k: (B, H, N, d); v: (B, H, N, e). Causal sums run over j <= i (chunked: O(N) memory
    in the feature dim, O(N * chunk) for the intra-chunk part). key_mask (B, N): keys where it
    is 0 (padding) are left out of every sum.
    """
    acc = _acc_dtype(q)
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    w = hedgehog_weight.to(acc) if hedgehog_weight is not None else None
    b = hedgehog_bias.to(acc) if hedgehog_bias is not None else None
    pq = apply_feature_map(qf, feature_map, w, b)
    pk = apply_feature_map(kf, feature_map, w, b)
    if key_mask is not None:
        pk = pk * (key_mask != 0).to(acc)[:, None, :, None]
    if not causal:
        kv = torch.einsum("bhnf,bhne->bhfe", pk, vf)
        z = pk.sum(dim=2)
        num = torch.einsum("bhnf,bhfe->bhne", pq, kv)
        den = torch.einsum("bhnf,bhf->bhn", pq, z)
    else:
        B, H, N, Fd = pq.shape
        C = chunk_size
        nc = -(-N // C)
        pad = nc * C - N
        if pad:
            pq = F.pad(pq, (0, 0, 0, pad))
            pk = F.pad(pk, (0, 0, 0, pad))  # zero features: padded keys contribute nothing
            vf = F.pad(vf, (0, 0, 0, pad))
        pq = pq.view(B, H, nc, C, Fd)
        pk = pk.view(B, H, nc, C, Fd)
        vc = vf.view(B, H, nc, C, vf.shape[-1])
        a = torch.einsum("bhcif,bhcjf->bhcij", pq, pk)
        a = a * torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        num = torch.einsum("bhcij,bhcje->bhcie", a, vc)
        den = a.sum(-1)
        kv = torch.einsum("bhcjf,bhcje->bhcfe", pk, vc)
        kv_prev = kv.cumsum(2) - kv
        z = pk.sum(3)
        z_prev = z.cumsum(2) - z
        num = num + torch.einsum("bhcif,bhcfe->bhcie", pq, kv_prev)
        den = den + torch.einsum("bhcif,bhcf->bhci", pq, z_prev)
        num = num.reshape(B, H, nc * C, vf.shape[-1])[:, :, :N]
        den = den.reshape(B, H, nc * C)[:, :, :N]
    return (num / (den.unsqueeze(-1) + eps)).to(q.dtype)


# ---------------------------------------------------------------- sliding window
def sliding_window_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = True,
    scale: float | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact softmax attention where query i sees keys j with i-window < j <= i (causal)
    or |i-j| < window (non-causal). Blocked: memory O(N * window), never N x N.
    key_mask (B, N): keys where it is 0 get no weight (a query left with none gets 0).
    """
    B, H, N, D = q.shape
    if N == 0:  # no queries (unfold needs at least one window)
        return q.new_zeros(q.shape)
    W = int(window)
    scale = D**-0.5 if scale is None else scale
    acc = _acc_dtype(q)
    nb = -(-N // W)
    Np = nb * W
    right = 0 if causal else W
    span = 2 * W + right
    qf = F.pad(q.to(acc), (0, 0, 0, Np - N)).view(B, H, nb, W, D)
    kp = F.pad(k.to(acc), (0, 0, W, Np - N + right))
    vp = F.pad(v.to(acc), (0, 0, W, Np - N + right))
    kw = kp.unfold(2, span, W).transpose(-1, -2)  # (B, H, nb, span, D)
    vw = vp.unfold(2, span, W).transpose(-1, -2)
    s = torch.einsum("bhcid,bhcjd->bhcij", qf, kw) * scale
    i = (torch.arange(nb, device=q.device)[:, None] * W + torch.arange(W, device=q.device))[
        :, :, None
    ]
    j = (torch.arange(nb, device=q.device)[:, None] * W - W + torch.arange(span, device=q.device))[
        :, None, :
    ]
    ok = (j >= 0) & (j < N) & (i - j < W)
    ok = ok & ((j <= i) if causal else (j - i < W))
    if key_mask is not None:
        mp = F.pad((key_mask != 0).to(acc), (W, Np - N + right))
        mw = mp.unfold(1, span, W)  # (B, nb, span)
        ok = ok[None, None] & (mw[:, None, :, None, :] > 0)
    s = s.masked_fill(~ok, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows of padded queries are all -inf
    out = torch.einsum("bhcij,bhcjd->bhcid", p, vw).reshape(B, H, Np, D)[:, :, :N]
    return out.to(q.dtype)


# ---------------------------------------------------------------- Monarch
def monarch_matmul_reference(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """M2's blockdiag_butterfly_multiply (version 2 einsum): y = P^T blockdiag(w2) P blockdiag(w1) x.

    x: (..., n); w1: (k, q, p) with k*p = n; w2: (l, s, r) with l*r = k*q. Output (..., l*s).
    """
    *batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape  # noqa: E741
    x2 = x.reshape(-1, k, p)
    out1 = torch.einsum("kqp,bkp->bkq", w1.to(x.dtype), x2)
    out1 = out1.reshape(-1, k * q).reshape(-1, r, l).transpose(1, 2)  # b (r l) -> b l r
    out2 = torch.einsum("lsr,blr->bsl", w2.to(x.dtype), out1)
    return out2.reshape(*batch, s * l)


def monarch_matmul_bmm(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The same product as two torch.bmm with explicit permutes (M2's fast PyTorch path)."""
    *batch, n = x.shape
    k, q, p = w1.shape
    l, s, r = w2.shape  # noqa: E741
    m = x.numel() // n
    xr = x.reshape(m, k, p).transpose(0, 1)
    out1 = torch.bmm(xr, w1.to(x.dtype).transpose(-1, -2))  # (k, m, q)
    out1 = out1.transpose(0, 1).reshape(m, r, l).permute(2, 0, 1)  # (l, m, r)
    out2 = torch.bmm(out1, w2.to(x.dtype).transpose(-1, -2))  # (l, m, s)
    return out2.permute(1, 2, 0).reshape(*batch, s * l)


def blockdiag_matmul_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """M2's blockdiag_multiply (BlockdiagLinear): x (..., n), w (nblocks, q, n/nblocks)."""
    *batch, n = x.shape
    nb, q, p = w.shape
    out = torch.einsum("...kp,kqp->...kq", x.reshape(*batch, nb, p), w.to(x.dtype))
    return out.reshape(*batch, nb * q)


# ---------------------------------------------------------------- FFT convolution
def fft_conv_reference(
    u: torch.Tensor,
    k: torch.Tensor,
    d_bias: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """M2's fftconv_ref (gelu=False, no dropout) with optional gates, FFT size 2L, float32.

    v = u * pre_gate; y = conv(v, k)[:L] + v * D; out = y * gate. u: (B, H, L); k: (H, Lk) or
    (B, H, Lk) with Lk <= 2L (Lk <= L: causal; Lk = 2L: M2's bidirectional circular layout);
    d_bias: (H,) or broadcastable to u; gates: like u.
    """
    L = u.shape[-1]
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    v = u.to(acc)
    if pre_gate is not None:
        v = v * pre_gate.to(acc)
    n = 2 * L
    k_f = torch.fft.rfft(k.to(acc), n=n) / n
    u_f = torch.fft.rfft(v, n=n)
    y = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L]
    if d_bias is not None:
        d = d_bias.to(acc)
        if d.dim() == 1:
            d = d[:, None]
        y = y + v * d
    if gate is not None:
        y = y * gate.to(acc)
    return y.to(u.dtype)
