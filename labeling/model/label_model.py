"""LabelModel: Snorkel's matrix-completion estimator on the LF overlap matrix, refined by EM."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labeling.model.base import register_model
from labeling.model.conditional import ConditionalModel
from labeling.model.votes import VoteBlocks, compress_rows
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress

logger = logging.getLogger(__name__)


def _fit_mu(
    overlap: np.ndarray,
    mu0: np.ndarray,
    p: np.ndarray,
    k: int,
    n_epochs: int,
    lr: float,
    l2: float,
    progress: bool,
    log_freq: int | None = None,
) -> tuple[np.ndarray, float]:
    """Matrix completion: Adam on ||mask*(O - mu P mu^T)||^2 + ||mu p - diag(O)||^2 (numpy, float64)."""
    from tqdm.auto import tqdm

    d = overlap.shape[0]
    mask = np.ones((d, d))
    for i in range(0, d, k):
        mask[i : i + k, i : i + k] = 0.0
    diag_o = np.diag(overlap)
    mu = mu0.copy()
    m1 = np.zeros_like(mu)
    m2 = np.zeros_like(mu)
    b1, b2, eps = 0.9, 0.999, 1e-8
    loss = 0.0
    for t in tqdm(range(1, n_epochs + 1), desc="LabelModel fit", disable=not progress, leave=False):
        muP = mu * p
        R = mask * (overlap - muP @ mu.T)
        r2 = muP.sum(1) - diag_o
        loss = float((R**2).sum() + (r2**2).sum() + l2 * ((mu - mu0) ** 2).sum())
        grad = -4.0 * (R @ muP) + 2.0 * r2[:, None] * p[None, :] + 2.0 * l2 * (mu - mu0)
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad**2
        step = lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
        mu = np.clip(mu - step, 1e-6, 1.0)
        if log_freq and t % log_freq == 0:
            logger.info("LabelModel matrix completion: epoch %d/%d, loss %.6g", t, n_epochs, loss)
    return mu, loss


@register_model
class LabelModel(ConditionalModel):
    """Data-programming label model: matrix completion on the LF overlap matrix, then EM.

    Step 1 (Snorkel's estimator): O = A^T A / n over one-hot votes A; find mu (m*k x k),
    mu[i*k+a, y] = P(lf_i = a | Y = y), minimising ||mask * (O - mu P mu^T)||^2 +
    ||mu P 1 - diag(O)||^2 (mask hides each LF's own block), started from majority vote.
    Step 2 (`refine="em"`, default): maximum-likelihood EM from that estimate, which also
    re-estimates the class balance unless it was given. Both steps run on a uniform sample
    of at most `fit_sample` rows (default 200,000; None = all rows): plenty for the
    m*k*k parameters, and predict_proba then labels every row in one pass.
    progress: default of fit's `progress` (`verbose=` is its deprecated name).
    """

    def __init__(
        self,
        cardinality: int = 2,
        device: str | None = None,
        refine: str = "em",
        verbose: bool | None = None,
        progress: bool | None = None,
    ) -> None:
        progress = deprecated_progress(progress, "verbose", verbose, "LabelModel")
        super().__init__(cardinality, device, progress)
        if refine not in ("em", "none"):
            raise LoomError(f"refine must be 'em' or 'none', got {refine!r}")
        self.refine = refine

    def _config(self) -> dict[str, Any]:
        return {"device": self.device, "refine": self.refine}

    def _fit(
        self,
        L: np.ndarray,
        n_epochs: int = 200,
        lr: float = 0.01,
        seed: int = 0,
        progress: bool = False,
        em_iters: int = 100,
        tol: float = 1e-4,
        l2: float = 0.0,
        smoothing: float = 1.0,
        fit_sample: int | None = 200_000,
        em_sample: int | None = None,
        log_freq: int | None = None,
        optimizer: str = "adam",
    ) -> None:
        """Options: em_iters/tol/smoothing (EM), l2 (pull towards the majority-vote start),
        fit_sample (rows the fit runs on; `em_sample` is its older name), log_freq (log the
        matrix-completion loss every log_freq epochs at INFO, as Snorkel's), optimizer
        (Snorkel's; only "adam", which loom always uses)."""
        import torch

        if str(optimizer).lower() != "adam":
            raise LoomError(
                f"LabelModel.fit(optimizer={optimizer!r}): loom's LabelModel fits with Adam only; "
                "drop optimizer= (or pass 'adam')"
            )
        if log_freq is not None and (not isinstance(log_freq, int) or log_freq < 1):
            raise LoomError(f"LabelModel.fit(log_freq={log_freq!r}): use a positive integer")

        dev = self._torch_device()
        m = L.shape[1]
        k = self.cardinality
        if em_sample is not None:  # older name of fit_sample
            fit_sample = em_sample
        S = self._em_rows(L, fit_sample, seed)
        self.fit_info["fit_rows"] = self.fit_info.pop("em_rows")
        n = len(S)
        with torch.no_grad():
            Lu, w = compress_rows(S, dev)
            blocks = VoteBlocks(Lu, k, dev, self.cache_bytes, w)
            overlap = torch.zeros(m * k, m * k, dtype=torch.float32, device=dev)
            cond0, p0 = self._init_from_votes(blocks, overlap)
            overlap = overlap.double().cpu().numpy() / n
        p = self.class_balance if self._fixed_balance else p0.double().cpu().numpy()
        mu0 = cond0[:, 1:, :].reshape(m * k, k).double().cpu().numpy()
        mu, loss = _fit_mu(overlap, mu0, p, k, n_epochs, lr, l2, progress, log_freq)
        votes = mu.reshape(m, k, k)
        votes = votes / np.maximum(votes.sum(1, keepdims=True), 1.0)
        abst = np.clip(1.0 - votes.sum(1, keepdims=True), 1e-6, None)
        cond = np.concatenate([abst, votes], 1)
        cond /= cond.sum(1, keepdims=True)
        # guard against the label-swap solution: LFs are assumed better than chance on average
        acc = (np.diagonal(votes, axis1=1, axis2=2) * p).sum(1) / np.maximum(
            (votes.sum(1) * p).sum(1), 1e-9
        )
        if float(acc.mean()) < 1.0 / k:
            cond = cond0.double().cpu().numpy()
        self.fit_info["mc_loss"] = loss
        iters = 0
        if self.refine == "em":
            with torch.no_grad():
                ct, pt, iters = self._em(
                    blocks,
                    torch.as_tensor(cond, dtype=torch.float32, device=dev),
                    torch.as_tensor(p, dtype=torch.float32, device=dev),
                    em_iters,
                    tol,
                    self._fixed_balance,
                    smoothing,
                    progress,
                    "LabelModel EM",
                )
            cond, p = ct.double().cpu().numpy(), pt.double().cpu().numpy()
        self.fit_info["em_iterations"] = iters
        self.cond = self._silent_fix(cond, L)
        self.class_balance = np.asarray(p, dtype=np.float64)
