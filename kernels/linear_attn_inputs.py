"""Input checks of `kernels.linear_attention`: shapes, dtypes, the feature map's arguments."""

from __future__ import annotations

import math

import torch

from kernels.common import check_float, check_same_kind


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: object,
    hedgehog_weight: torch.Tensor | None,
    hedgehog_bias: torch.Tensor | None,
    key_mask: torch.Tensor | None,
    eps: float = 0.0,
) -> None:
    """Raise ValueError (TypeError for dtypes) naming the input and what it needs."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_float(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, d), got shape {tuple(t.shape)}")
    check_same_kind(("q", q), ("k", k), ("v", v))
    if not (math.isfinite(float(eps)) and float(eps) >= 0.0):
        raise ValueError(f"eps must be a finite number >= 0 (default 1e-6), got {eps}")
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
