"""Torch building blocks of the label models: one-hot vote blocks and distinct vote patterns."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def row_chunks(n: int, width: int, device: str = "cpu") -> list[slice]:
    """Row slices of a matrix n x width small enough for one block on `device`."""
    budget = 1 << 27 if str(device).startswith("cuda") else 1 << 24  # elements per block
    step = max(1024, budget // max(1, width))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


@contextmanager
def cpu_threads(n: int, device: str = "cpu") -> Iterator[None]:
    """Run torch's CPU ops with at most n threads inside the block (restored after).

    Many tiny ops (the matrix completion's (m*k, k) products, EM's k x k updates) lose more
    to thread hand-offs than they gain, and on a loaded machine the waiting threads spin:
    on 2 shared cores the 200 completion epochs took 2.6 s of CPU with 2 threads, 0.05 s
    with one. A no-op off the CPU.
    """
    import torch

    if str(device) != "cpu" or torch.get_num_threads() <= n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def default_threads(threads: int | None) -> int:
    """CPU threads of a label model: `threads`, or None = half of torch's (at least 1).

    Its ops are memory-bound products and many small updates; on the 2 shared cores of the
    CI box one thread ran fit + predict_proba 2-3x faster than two (with other jobs running,
    the second thread is preempted and the first spins waiting for it).
    """
    import torch

    if threads is not None:
        return int(threads)
    return max(1, torch.get_num_threads() // 2)


def limit_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a label-model method under cpu_threads(default_threads(self.threads), device)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with cpu_threads(default_threads(self.threads), self._torch_device()):
            return method(self, *args, **kwargs)

    return wrapper


def t_matmul(A: Any, Q: Any) -> Any:
    """A.T @ Q for a dense block A (rows, d) and Q (rows, c), computed as (Q.T @ A).T.

    The same numbers; MKL runs A.T @ Q with a skinny Q about 10x slower on the CPU.
    Sparse blocks (SparseOneHot) keep their own transpose.
    """
    import torch

    if isinstance(A, torch.Tensor) and A.layout == torch.strided:
        return (Q.T @ A).T
    return A.T @ Q


def softmax_rows(X: Any) -> Any:
    """Row softmax of a float tensor (n, k), in place; torch.softmax is ~4x slower on the CPU
    for the few columns of a label model."""
    X.sub_(X.max(1, keepdim=True).values).exp_()
    return X.div_(X.sum(1, keepdim=True))


def onehot(Lc: Any, k: int, dtype: Any) -> Any:
    """(b, m) int tensor -> (b, m*k) indicator of the votes (abstain -> all zero)."""
    import torch

    b, m = Lc.shape
    offs = torch.arange(0, m * k, k, device=Lc.device)
    A = torch.zeros(b, m * k, dtype=dtype, device=Lc.device)
    A.scatter_(1, Lc.clamp_min(0) + offs, (Lc >= 0).to(dtype))
    return A


def unique_rows(L: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct vote patterns of L: (patterns, inverse, counts), L == patterns[inverse].

    Rows are hashed by a product with random float64 weights, grouped with torch.unique
    (on the GPU when asked), and the grouping is verified exactly; on a (never seen)
    collision, L is returned as is.
    """
    import torch

    n, m = L.shape
    coef = np.random.default_rng(12345).random(m) + 0.5
    Lt = torch.from_numpy(L).to(device)
    h = (Lt + 2).to(torch.float64) @ torch.from_numpy(coef).to(device)
    _, inverse, counts = torch.unique(h, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), n, dtype=torch.int64, device=device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=device), reduce="amin")
    U = Lt[first]
    if not bool((U[inverse] == Lt).all()):
        return L, np.arange(n), np.ones(n, dtype=np.int64)
    return U.cpu().numpy(), inverse.cpu().numpy(), counts.cpu().numpy()


class VoteBlocks:
    """The one-hot vote matrix A (n, m*k) with row weights, in blocks; cached if it fits."""

    def __init__(
        self,
        L: np.ndarray,
        k: int,
        device: str,
        cache_bytes: int,
        weights: np.ndarray | None = None,
    ) -> None:
        import torch

        self.n, self.m = L.shape
        self.k = k
        self.device = device
        self.L = torch.from_numpy(L)
        w = np.ones(self.n) if weights is None else weights
        self.w = torch.as_tensor(w, dtype=torch.float32)
        self.total = float(w.sum())
        self.weighted = weights is not None
        self.slices = row_chunks(self.n, self.m * k, device)
        self._blocks: list[Any] | None = None
        if self.n * self.m * k * 4 <= cache_bytes:
            self._blocks = [self._make(s) for s in self.slices]

    def _make(self, s: slice) -> tuple[Any, Any]:
        import torch

        Lc = self.L[s].to(self.device, non_blocking=True)
        return onehot(Lc, self.k, torch.float32), self.w[s].to(self.device).unsqueeze(1)

    def __iter__(self):
        if self._blocks is not None:
            yield from zip(self.slices, self._blocks)
        else:
            for s in self.slices:
                yield s, self._make(s)


def compress_rows(L: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct rows with counts when that at least halves the work, else L itself."""
    if len(L) < 2000:
        return L, None
    probe = L[: min(len(L), 20_000)]
    if len(unique_rows(probe, device)[0]) > 0.7 * len(probe):
        return L, None  # (nearly) all rows distinct: grouping would not pay
    U, _, counts = unique_rows(L, device)
    if len(U) * 2 <= len(L):
        return U, counts
    return L, None
