"""LabelModel's matrix completion in torch: fit mu from the LF overlap matrix O = A^T A / n.

Loss (Snorkel's estimator, Ratner et al. AAAI 2019):
    ||mask * (O - mu P mu^T)||^2 + ||mu p - diag(O)||^2 + l2 ||mu - mu0||^2
with mu (m*k, k), mu[i*k+a, y] = P(lf_i = a | Y = y), P = diag(p), and the mask hiding each
LF's own k x k block and both blocks of every excluded (dependent) pair.

The loss and its gradient only need O through the product (mask * O) @ X with X (m*k, k);
the mu P mu^T side is evaluated through k x k matrices (C = mu^T mu P and one C_i per LF), so
no (m*k)^2 matrix of the model is ever formed and an epoch costs O(m k^3) besides the O
product. O itself is held either dense (`DenseOverlap`, cheap for small m*k) or as the
sparse one-hot vote matrix of the fit rows (`SparseOverlap`: 2 nnz k per product, used for
many classes and sparse votes). Everything runs on the model's device, float64 on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class DenseOverlap:
    """O as a dense (m*k, m*k) tensor, masked once (own blocks and excluded pairs zeroed)."""

    def __init__(self, overlap: Any, k: int, excluded: Iterable[tuple[int, int]] = ()) -> None:
        ov = overlap.clone()
        self.diag = ov.diagonal().clone()
        d = ov.shape[0]
        for i in range(0, d, k):
            ov[i : i + k, i : i + k] = 0.0
        for i, j in excluded:
            ov[i * k : (i + 1) * k, j * k : (j + 1) * k] = 0.0
            ov[j * k : (j + 1) * k, i * k : (i + 1) * k] = 0.0
        self.O = ov
        self.const = float((ov**2).sum())

    def matmul(self, X: Any) -> Any:
        """(mask * O) @ X."""
        return self.O @ X


class SparseOverlap:
    """O = A^T diag(w) A / n from the sparse one-hot votes A (rows, m*k) of the fit rows.

    `A` is a scipy CSR; the products run as torch CSR on `device` in float32 (accumulated
    into float64 results); the excluded pairs' k x k blocks are kept dense.
    """

    def __init__(
        self,
        A: Any,
        weights: np.ndarray | None,
        n: float,
        k: int,
        device: str,
        excluded: Sequence[tuple[int, int]] = (),
    ) -> None:
        import scipy.sparse as sp
        import torch

        from labeling.model.sparse import SparseOneHot

        w = np.ones(A.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        Aw = sp.diags(w / n) @ A
        self.A = SparseOneHot(A.tocsr().astype(np.float32), device)
        self.w = torch.as_tensor(w / n, dtype=torch.float32, device=device).unsqueeze(1)
        self.k = k
        dt = torch.float64
        self.diag = torch.as_tensor(np.asarray(Aw.sum(0)).ravel(), dtype=dt, device=device)
        full = (A.T @ Aw).tocsr()  # sparse (m*k)^2: at most sum over rows of votes^2 entries
        const = float((full.data**2).sum()) - float((self.diag**2).sum())
        self.excluded = []
        for i, j in excluded:
            b = full[i * k : (i + 1) * k, j * k : (j + 1) * k].toarray()
            const -= 2.0 * float((b**2).sum())
            self.excluded.append((i, j, torch.as_tensor(b, dtype=dt, device=device)))
        self.const = const

    def matmul(self, X: Any) -> Any:
        """(mask * O) @ X without forming O: A^T (w * (A X)) minus the masked blocks."""
        k = self.k
        out = (self.A.T @ (self.w * (self.A @ X.float()))).double()
        out = out - self.diag[:, None] * X
        for i, j, b in self.excluded:
            out[i * k : (i + 1) * k] -= b @ X[j * k : (j + 1) * k]
            out[j * k : (j + 1) * k] -= b.T @ X[i * k : (i + 1) * k]
        return out


def _model_terms(mu: Any, muP: Any, k: int, excluded: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
    """(mask * M) @ muP and ||mask * M||^2 for M = mu P mu^T, through k x k matrices only."""
    d = mu.shape[0]
    m = d // k
    C = mu.T @ muP  # (k, k)
    mu3, muP3 = mu.reshape(m, k, k), muP.reshape(m, k, k)
    Ci = mu3.transpose(1, 2) @ muP3  # (m, k, k): mu_i^T mu_i P
    prod = muP @ C - (muP3 @ Ci).reshape(d, k)
    sq = (C * C.T).sum() - (Ci * Ci.transpose(1, 2)).sum()
    for i, j in excluded:
        prod[i * k : (i + 1) * k] -= muP3[i] @ Ci[j]
        prod[j * k : (j + 1) * k] -= muP3[j] @ Ci[i]
        sq = sq - 2.0 * (Ci[i] * Ci[j].T).sum()
    return prod, sq


def fit_mu(
    overlap: DenseOverlap | SparseOverlap,
    mu0: Any,
    p: Any,
    k: int,
    n_epochs: int,
    lr: float,
    l2: float,
    progress: bool,
    log_freq: int | None = None,
    excluded: Iterable[tuple[int, int]] = (),
    log: logging.Logger | None = None,
) -> tuple[Any, float]:
    """Adam on the masked overlap loss; mu0 (m*k, k) and p (k,) are float64 tensors.

    log_freq: log the loss every log_freq epochs at INFO on `log` (default: this module's
    logger; LabelModel passes its own, where Snorkel users look for it).

    Returns (mu, loss of the last epoch before its step), mu clipped to [1e-6, 1]. The
    updates run in place (a few (m*k, k) buffers, no (m*k)^2 one besides a dense O).
    """
    import torch
    from tqdm.auto import tqdm

    excluded = [(int(i), int(j)) for i, j in excluded]
    mu = mu0.clone()
    m1 = torch.zeros_like(mu)
    m2 = torch.zeros_like(mu)
    b1, b2, eps = 0.9, 0.999, 1e-8
    loss = 0.0
    with torch.no_grad():
        for t in tqdm(
            range(1, n_epochs + 1), desc="LabelModel fit", disable=not progress, leave=False
        ):
            muP = mu * p
            OX = overlap.matmul(muP)
            MX, msq = _model_terms(mu, muP, k, excluded)
            r2 = muP.sum(1) - overlap.diag
            logged = bool(log_freq and t % log_freq == 0)
            if t == n_epochs or logged:  # the loss is only reported: skip it elsewhere
                masked = overlap.const - 2.0 * float((OX * mu).sum()) + float(msq)
                loss = masked + float((r2**2).sum()) + l2 * float(((mu - mu0) ** 2).sum())
            if logged:
                (log or logger).info(
                    "LabelModel matrix completion: epoch %d/%d, loss %.6g", t, n_epochs, loss
                )
            grad = OX.sub_(MX).mul_(-4.0)  # -4 (mask * (O - M)) @ muP
            grad.addr_(r2, p, alpha=2.0)
            if l2:
                grad.add_(mu - mu0, alpha=2.0 * l2)
            m1.mul_(b1).add_(grad, alpha=1 - b1)
            m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (m2 / (1 - b2**t)).sqrt_().add_(eps)
            mu.addcdiv_(m1, denom, value=-lr / (1 - b1**t)).clamp_(1e-6, 1.0)
    return mu, loss


__all__ = ["DenseOverlap", "SparseOverlap", "fit_mu"]
