"""LabelModel: Snorkel's matrix-completion estimator on the LF overlap matrix, refined by EM."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import combinations
from typing import Any

import numpy as np

from labeling.model.base import register_model
from labeling.model.cliques import GroupTables
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
    excluded_pairs: Iterable[tuple[int, int]] = (),
) -> tuple[np.ndarray, float]:
    """Matrix completion: Adam on ||mask*(O - mu P mu^T)||^2 + ||mu p - diag(O)||^2 (numpy, float64).

    The mask hides each LF's own block and both blocks of every pair in `excluded_pairs`
    (LFs known to depend on each other, whose overlap the model cannot explain by the class;
    Ratner et al., "Training Complex Models with Multi-Task Weak Supervision", AAAI 2019).
    """
    from tqdm.auto import tqdm

    d = overlap.shape[0]
    mask = np.ones((d, d))
    for i in range(0, d, k):
        mask[i : i + k, i : i + k] = 0.0
    for i, j in excluded_pairs:
        mask[i * k : (i + 1) * k, j * k : (j + 1) * k] = 0.0
        mask[j * k : (j + 1) * k, i * k : (i + 1) * k] = 0.0
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
    Dependent LFs (`fit(dependencies="auto" | [(i, j), ...])`): their overlap blocks are
    left out of step 1, and each connected group of them gets one joint table
    P(votes of the group | Y) in step 2 and in predict_proba (labeling.model.cliques).
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
        self.dependencies_: list[tuple[int, int]] = []
        self.groups_: list[tuple[int, ...]] = []
        self.group_tables_: GroupTables | None = None

    def _config(self) -> dict[str, Any]:
        return {"device": self.device, "refine": self.refine}

    def _state(self) -> dict[str, np.ndarray]:
        state = {"cond": self.cond}
        if self.groups_:
            width = max(len(g) for g in self.groups_)
            groups = np.full((len(self.groups_), width), -1, dtype=np.int64)
            for r, g in enumerate(self.groups_):
                groups[r, : len(g)] = g
            state["groups"] = groups
            state["dependencies"] = np.asarray(self.dependencies_, dtype=np.int64).reshape(-1, 2)
            t = self.group_tables_
            for r in range(len(self.groups_)):
                state[f"group_configs_{r}"] = t.configs[r]
                state[f"group_table_{r}"] = t.tables[r]
                state[f"group_unseen_{r}"] = t.unseen[r]
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.cond = arrays["cond"]
        groups = arrays.get("groups", np.zeros((0, 0), dtype=np.int64))
        self.groups_ = [tuple(int(j) for j in row if j >= 0) for row in groups]
        self.group_tables_ = None
        if self.groups_:
            self.group_tables_ = GroupTables(
                self.groups_,
                *(
                    [arrays[f"group_{part}_{r}"] for r in range(len(self.groups_))]
                    for part in ("configs", "table", "unseen")
                ),
            )
        deps = arrays.get("dependencies", np.zeros((0, 2), dtype=np.int64))
        self.dependencies_ = [(int(i), int(j)) for i, j in deps]

    def _dependency_pairs(self, dependencies: Any, overlap: np.ndarray, n: int) -> list:
        """The dependent pairs to model: learned from the overlap matrix ("auto") or given."""
        from labeling.dependencies import check_pairs, dependencies_from_overlap

        m = overlap.shape[0] // self.cardinality
        if dependencies is None:
            return []
        if isinstance(dependencies, str):
            if dependencies != "auto":
                raise LoomError(
                    f"LabelModel.fit(dependencies={dependencies!r}): use 'auto' (learn them from "
                    "the votes) or a list of LF pairs [(i, j), ...]"
                )
            table = dependencies_from_overlap(overlap, self.cardinality, n)
            self.fit_info["dependency_strengths"] = [
                [int(i), int(j), round(float(s), 4)]
                for i, j, s in table[["i", "j", "strength"]].values
            ]
            pairs = [(int(i), int(j)) for i, j in zip(table["i"], table["j"])]
            logger.info("LabelModel: learned %d dependent LF pair(s): %s", len(pairs), pairs)
            return pairs
        return check_pairs(dependencies, m, self.lf_names)

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
        dependencies: Any = None,
    ) -> None:
        """Options: em_iters/tol/smoothing (EM), l2 (pull towards the majority-vote start),
        fit_sample (rows the fit runs on; `em_sample` is its older name), log_freq (log the
        matrix-completion loss every log_freq epochs at INFO, as Snorkel's), optimizer
        (Snorkel's; only "adam", which loom always uses), dependencies (None: LFs are
        independent given the class; "auto": learn the dependent pairs from the votes,
        labeling.dependencies; or a list of (i, j) LF pairs, indices or names)."""
        import torch

        from labeling.dependencies import dependency_groups
        from labeling.model.cliques import fit_groups_em, split_groups

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
        pairs = self._dependency_pairs(dependencies, overlap, n)
        groups, cut = split_groups(dependency_groups(pairs, m), k)
        if cut:
            logger.warning(
                "LabelModel: dependent groups %s have more than a joint table can hold with "
                "k=%d; each is modelled in pieces %s (their overlap is still left out of the "
                "matrix completion)",
                cut,
                k,
                groups,
            )
        excluded = sorted({pr for g in dependency_groups(pairs, m) for pr in combinations(g, 2)})
        self.dependencies_ = pairs
        self.fit_info["dependencies"] = [list(pr) for pr in pairs]
        p = self.class_balance if self._fixed_balance else p0.double().cpu().numpy()
        mu0 = cond0[:, 1:, :].reshape(m * k, k).double().cpu().numpy()
        mu, loss = _fit_mu(overlap, mu0, p, k, n_epochs, lr, l2, progress, log_freq, excluded)
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
        tables = None
        if self.refine == "em" or groups:
            ct = torch.as_tensor(cond, dtype=torch.float32, device=dev)
            pt = torch.as_tensor(p, dtype=torch.float32, device=dev)
            with torch.no_grad():
                if groups:
                    ct, tables, pt, iters = fit_groups_em(
                        blocks, groups, ct, pt, em_iters, tol, self._fixed_balance, smoothing
                    )
                else:
                    ct, pt, iters = self._em(
                        blocks,
                        ct,
                        pt,
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
        self.groups_ = groups
        self.group_tables_ = tables

    def log_joint(self, L: Any) -> np.ndarray:
        """log p(y) + log P(votes of each row | y) under the fitted model, shape (n, k).

        logsumexp over the classes is the log-likelihood of the row's votes (used to compare
        models on held-out rows); softmax is predict_proba.
        """
        from labeling.model.checks import check_L
        from labeling.model.cliques import group_log_joint

        self._check_fitted()
        L = check_L(L, self.cardinality, self.m)
        if not self.groups_:
            return group_log_joint(L, self.cond, self.class_balance, None, self._torch_device())
        return group_log_joint(
            L, self.cond, self.class_balance, self.group_tables_, self._torch_device()
        )

    def _proba(self, L: np.ndarray) -> np.ndarray:
        if not self.groups_:
            return super()._proba(L)
        from labeling.model.cliques import group_log_joint

        s = group_log_joint(
            L, self.cond, self.class_balance, self.group_tables_, self._torch_device()
        )
        s = np.exp(s - s.max(1, keepdims=True))
        return (s / s.sum(1, keepdims=True)).astype(np.float32)
