"""Dispatch between Triton kernels and the PyTorch references."""

from __future__ import annotations

import os

import torch

try:  # Triton is optional: without it every call takes the reference path.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    HAS_TRITON = False

BACKENDS = ("auto", "triton", "reference")


def interpret_mode() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1 set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Pick the Triton path: CUDA tensors, or any tensors under TRITON_INTERPRET=1."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "reference":
        return False
    ok = HAS_TRITON and (interpret_mode() or all(t.is_cuda for t in tensors if t is not None))
    if backend == "triton" and not ok:
        raise RuntimeError(
            "backend='triton' needs triton and CUDA tensors (or TRITON_INTERPRET=1 set before "
            "importing triton); use backend='auto' to fall back to the PyTorch reference"
        )
    return ok


def next_pow2(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= max(n, minimum) (Triton block sizes must be powers of two)."""
    p = 1
    while p < max(n, minimum):
        p *= 2
    return p


def check_float(name: str, t: torch.Tensor) -> None:
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"{name} has dtype {t.dtype}; use float32, float16 or bfloat16")


def check_same_kind(*named: tuple[str, torch.Tensor]) -> None:
    """Raise when tensors that enter one kernel differ in dtype or device (the kernels compute
    in one dtype; PyTorch's reference would promote silently, Triton would fail to compile)."""
    names = ", ".join(n for n, _ in named)
    first, t0 = named[0]
    for attr, verb, err in (
        ("dtype", "share one dtype", TypeError),
        ("device", "be on one device", ValueError),
    ):
        odd = [n for n, t in named if getattr(t, attr) != getattr(t0, attr)]
        if odd:
            got = ", ".join(f"{n} {str(getattr(t, attr)).replace('torch.', '')}" for n, t in named)
            raise err(
                f"{names} must {verb}, got {got}; convert first, e.g. "
                f"{odd[0]} = {odd[0]}.to({first}.{attr})"
            )
