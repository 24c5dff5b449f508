"""Sparse label matrices: scipy.sparse CSR votes, checked and turned into torch one-hot blocks.

Convention (one for all of loom): a sparse label matrix S (n rows x m LFs) stores
**vote + 1**, so a stored 1..k is the vote 0..k-1 and abstain is simply not stored (an
explicitly stored 0 is an abstain too, exactly as scipy reads it). S is then the sparse
form of L + 1 for the dense L with -1 = abstain: `to_sparse_votes(L)` builds it without a
loop, `from_sparse_votes(S)` goes back (dense; small data only).

Models that take sparse input (LabelModel without dependencies, MajorityVoter) never make
the n x m matrix dense: the one-hot vote matrix A (n, m*k) is a CSR with the same row
pointers as S, and every product the models need (A @ W for the posterior, A.T @ Q for the
EM counts and the overlap statistics) is a sparse product.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from labeling.model.checks import LabelDtypeError, LabelMatrixError, check_L, check_shape

#: Rows of a block of sparse votes processed at once, per class (so blocks hold ~2^24 floats).
BLOCK_ELEMENTS = 1 << 24


def is_sparse(L: Any) -> bool:
    """True for a scipy.sparse matrix or array (the sparse label-matrix convention applies)."""
    import scipy.sparse as sp

    return sp.issparse(L)


def to_sparse_votes(L: Any) -> Any:
    """Dense label matrix (-1 = abstain, 0..k-1) -> CSR storing vote + 1 (abstain not stored)."""
    import scipy.sparse as sp

    if sp.issparse(L):  # already sparse votes: checked, as they are
        return check_sparse_L(L, what="L")
    L = check_L(L, what="L")
    n, m = L.shape
    fires = L >= 0
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(fires.sum(1), out=indptr[1:])
    rows, cols = np.nonzero(fires)
    data = L[rows, cols] + 1
    dtype = np.int16 if len(data) == 0 or int(data.max()) < np.iinfo(np.int16).max else np.int32
    return sp.csr_matrix((data.astype(dtype), cols.astype(np.int32), indptr), shape=(n, m))


def from_sparse_votes(S: Any, cardinality: int | None = None) -> np.ndarray:
    """CSR votes (vote + 1 stored) -> the dense (n, m) int64 label matrix; densifies n x m."""
    S = check_sparse_L(S, cardinality, what="S")
    return S.toarray().astype(np.int64) - 1


def check_sparse_L(
    S: Any, cardinality: int | None = None, m: int | None = None, what: str = "L"
) -> Any:
    """Validate a sparse label matrix (vote + 1 stored) and return it as a canonical CSR.

    Errors name the problem and the fix: a non-integer dtype, negative stored values (a dense
    -1 stored as is), values above the cardinality, a vote stored twice for one (row, LF).
    """
    if not is_sparse(S):
        raise LabelMatrixError(f"{what} is not a scipy.sparse matrix (got {type(S).__name__})")
    if S.ndim != 2:
        raise LabelMatrixError(f"{what} must be 2-D (n rows x m LFs), got shape {S.shape}")
    check_shape(S.shape, m, what)
    S = S.tocsr()
    if S.dtype.kind not in "iu":
        data = S.data
        if data.dtype.kind == "f" and np.isfinite(data).all() and (data == np.round(data)).all():
            hint = f"convert it with {what}.astype(int)"
        else:
            hint = "sparse label matrices store integer votes + 1 (1..k)"
        raise LabelDtypeError(f"{what} has dtype {S.dtype}, expected integers; {hint}")
    fresh = False
    if not S.has_sorted_indices:
        S, fresh = S.sorted_indices(), True
    if len(S.indices) > 1:
        same_row = np.diff(np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))) == 0
        dup = same_row & (np.diff(S.indices) == 0)
        if dup.any():
            at = int(np.nonzero(dup)[0][0])
            row = int(np.searchsorted(S.indptr, at, side="right") - 1)
            raise LabelMatrixError(
                f"{what} stores LF {int(S.indices[at])} twice for row {row}: a sparse label "
                "matrix holds at most one vote per (row, LF); scipy would add the two. Build "
                "it with labeling.model.to_sparse_votes(L) from the dense matrix"
            )
    if len(S.data):
        lo, hi = int(S.data.min()), int(S.data.max())
        if lo < 0:
            raise LabelMatrixError(
                f"{what} stores the value {lo}: sparse label matrices store vote + 1 (1..k) and "
                "leave abstains out; convert a dense matrix with to_sparse_votes(L)"
            )
        if cardinality is not None and hi > cardinality:
            raise LabelMatrixError(
                f"{what} stores the value {hi} but cardinality is {cardinality}: sparse label "
                f"matrices store vote + 1, so values are 1..{cardinality} (0 or not stored = "
                "abstain); pass the right cardinality, or build it with to_sparse_votes(L)"
            )
        if lo == 0:  # explicit zeros are abstains: drop them (a copy, never the user's matrix)
            S = S if fresh else S.copy()
            S.eliminate_zeros()
    return S


def check_votes(L: Any, cardinality: int | None = None, m: int | None = None, what: str = "L"):
    """check_L for a dense matrix, check_sparse_L for a scipy.sparse one."""
    if is_sparse(L):
        return check_sparse_L(L, cardinality, m, what)
    return check_L(L, cardinality, m, what)


def voting_lfs(L: Any) -> np.ndarray:
    """(m,) bool: which LFs vote at least once (dense or sparse L)."""
    if is_sparse(L):
        return np.bincount(L.indices, minlength=L.shape[1]) > 0
    return (L >= 0).any(0)


def rows_without_votes(L: Any) -> np.ndarray:
    """(n,) bool: rows where every LF abstained (dense or sparse L)."""
    if is_sparse(L):
        return np.diff(L.indptr) == 0
    return (L < 0).all(1)


def sparse_onehot(S: Any, k: int, dtype: Any = np.float32) -> Any:
    """CSR votes (n, m) -> CSR one-hot A (n, m*k): A[r, j*k + v] = 1 for the vote v of LF j."""
    import scipy.sparse as sp

    cols = S.indices.astype(np.int64) * k + (S.data.astype(np.int64) - 1)
    n, m = S.shape
    return sp.csr_matrix((np.ones(len(cols), dtype=dtype), cols, S.indptr), shape=(n, m * k))


def class_counts(S: Any, k: int) -> np.ndarray:
    """(n, k) float32: how many LFs voted each class on each row (sparse S)."""
    import scipy.sparse as sp

    n = S.shape[0]
    rows = np.repeat(np.arange(n), np.diff(S.indptr))
    C = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, S.data.astype(np.int64) - 1)), shape=(n, k)
    )
    return C.toarray()


def torch_csr(A: Any, device: str, dtype: Any = None) -> Any:
    """scipy CSR -> torch sparse CSR tensor on `device`."""
    import torch

    values = torch.from_numpy(np.ascontiguousarray(A.data))
    if dtype is not None:
        values = values.to(dtype)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return torch.sparse_csr_tensor(
            torch.from_numpy(A.indptr.astype(np.int64)),
            torch.from_numpy(A.indices.astype(np.int64)),
            values,
            size=A.shape,
            device=device,
            check_invariants=False,
        )


class SparseOneHot:
    """A block of one-hot votes as torch CSR, with its transpose: `A @ X` and `A.T @ Q`."""

    def __init__(self, A: Any, device: str, dtype: Any = None, transposed: Any = None) -> None:
        self.shape = A.shape
        self.A = torch_csr(A, device, dtype) if transposed is None else A
        self._t = transposed
        if transposed is None:
            self._t = SparseOneHot(torch_csr(A.T.tocsr(), device, dtype), device, None, self)
            self._t.shape = (A.shape[1], A.shape[0])

    def __len__(self) -> int:
        return self.shape[0]

    def __matmul__(self, X: Any) -> Any:
        return self.A @ X.to(self.A.dtype)

    @property
    def T(self) -> SparseOneHot:
        return self._t


class SparseVoteBlocks:
    """The one-hot vote matrix of a sparse L in row blocks (torch CSR), with row weights.

    Same iteration protocol as votes.VoteBlocks: yields (slice, (A, w)) with A supporting
    `A @ W` and `A.T @ Q`, and w a (rows, 1) float32 weight column.
    """

    sparse = True

    def __init__(self, S: Any, k: int, device: str, weights: np.ndarray | None = None) -> None:
        import torch

        self.n, self.m = S.shape
        self.k = k
        self.device = device
        w = np.ones(self.n) if weights is None else np.asarray(weights, dtype=np.float64)
        self.total = float(w.sum())
        self.weighted = weights is not None
        step = max(1024, BLOCK_ELEMENTS // max(1, k))
        self.slices = [slice(s, min(self.n, s + step)) for s in range(0, self.n, step)]
        A = sparse_onehot(S, k)
        wt = torch.as_tensor(w, dtype=torch.float32)
        self._blocks = [
            (SparseOneHot(A[s], device), wt[s].to(device).unsqueeze(1)) for s in self.slices
        ]

    def __iter__(self):
        yield from zip(self.slices, self._blocks)


def log_tables(cond: np.ndarray, p: np.ndarray, dtype: Any, floor: float, device: str) -> tuple:
    """(W, base) with one-hot votes A: A @ W + base = log p(y) + log P(votes | y). W (m*k, k)
    is each vote's log-probability relative to abstaining; base adds every LF's abstain term.
    Probabilities are floored at `floor` before the log."""
    import torch

    m, k = cond.shape[0], cond.shape[2]
    logc = torch.log(torch.as_tensor(cond, dtype=dtype, device=device).clamp_min(floor))
    W = (logc[:, 1:, :] - logc[:, :1, :]).reshape(m * k, k)
    base = torch.log(torch.as_tensor(p, dtype=dtype, device=device).clamp_min(floor))
    return W, base + logc[:, 0, :].sum(0)


def sparse_log_joint(S: Any, cond: np.ndarray, p: np.ndarray, device: str = "cpu") -> np.ndarray:
    """log p(y) + log P(votes of the row | y) for independent LFs, (n, k) float64, sparse S."""
    import torch

    k = cond.shape[2]
    W, base = log_tables(cond, p, torch.float64, 1e-300, device)
    out = np.empty((S.shape[0], k), dtype=np.float64)
    step = max(1024, BLOCK_ELEMENTS // k)
    for s in range(0, S.shape[0], step):
        A = torch_csr(sparse_onehot(S[s : s + step], k, np.float64), device)
        out[s : s + step] = (A @ W + base).cpu().numpy()
    return out


def sparse_proba(S: Any, cond: np.ndarray, p: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Posterior P(Y | votes) for independent LFs, (n, k) float32, sparse S, in row blocks."""
    import torch

    k = cond.shape[2]
    W, base = log_tables(cond, p, torch.float32, 1e-12, device)
    out = np.empty((S.shape[0], k), dtype=np.float32)
    step = max(1024, BLOCK_ELEMENTS // k)
    with torch.no_grad():
        for s in range(0, S.shape[0], step):
            A = torch_csr(sparse_onehot(S[s : s + step], k), device)
            out[s : s + step] = torch.softmax(A @ W + base, 1).cpu().numpy()
    return out


def unique_sparse_rows(S: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """Distinct vote patterns of a CSR S: (patterns, inverse, counts), S == patterns[inverse].

    Rows are hashed by S @ random weights (a row's hash only depends on its stored votes),
    grouped with np.unique, and the grouping is checked exactly; on a (never seen)
    collision, S is returned as is.
    """
    n, m = S.shape
    coef = np.random.default_rng(12345).random(m) + 0.5
    h = S @ coef + 1e-3 * np.diff(S.indptr)
    _, first, inverse, counts = np.unique(
        h, return_index=True, return_inverse=True, return_counts=True
    )
    U = S[first]
    if (U[inverse] != S).nnz:
        return S, np.arange(n), np.ones(n, dtype=np.int64)
    return U, inverse.reshape(-1), counts


def compress_sparse_rows(S: Any) -> tuple[Any, np.ndarray | None]:
    """Distinct rows of a CSR with counts when that at least halves the work, else S itself."""
    n = S.shape[0]
    if n < 2000:
        return S, None
    probe = S[: min(n, 20_000)]
    if unique_sparse_rows(probe)[0].shape[0] > 0.7 * probe.shape[0]:
        return S, None  # (nearly) all rows distinct: grouping would not pay
    U, _, counts = unique_sparse_rows(S)
    if U.shape[0] * 2 <= n:
        return U, counts
    return S, None


__all__ = [
    "compress_sparse_rows",
    "SparseOneHot",
    "SparseVoteBlocks",
    "check_sparse_L",
    "check_votes",
    "class_counts",
    "from_sparse_votes",
    "is_sparse",
    "rows_without_votes",
    "sparse_log_joint",
    "sparse_onehot",
    "sparse_proba",
    "to_sparse_votes",
    "unique_sparse_rows",
    "voting_lfs",
]
