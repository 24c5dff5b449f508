"""LabelModel: Snorkel's matrix-completion estimator on the LF overlap matrix, refined by EM."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import combinations
from typing import Any

import numpy as np

from labeling.model.base import register_model
from labeling.model.cliques import GroupTables
from labeling.model.completion import DenseOverlap, SparseOverlap, fit_mu
from labeling.model.conditional import ConditionalModel, default_pooled
from labeling.model.sparse import (
    SparseVoteBlocks,
    compress_sparse_rows,
    is_sparse,
    sparse_log_joint,
    sparse_onehot,
    to_sparse_votes,
)
from labeling.model.votes import VoteBlocks, compress_rows, cpu_threads, limit_threads
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
    """The former numpy entry point of the matrix completion (numpy in and out, CPU float64);
    LabelModel itself calls labeling.model.completion.fit_mu on its device."""
    import torch

    pairs = [(int(i), int(j)) for i, j in excluded_pairs]
    over = DenseOverlap(torch.as_tensor(overlap, dtype=torch.float64), k, pairs)
    mu, loss = fit_mu(
        over,
        torch.as_tensor(mu0, dtype=torch.float64),
        torch.as_tensor(p, dtype=torch.float64),
        k,
        n_epochs,
        lr,
        l2,
        progress,
        log_freq,
        pairs,
        logger,
    )
    return mu.numpy(), loss


#: With more one-hot columns than this (m * k), dense votes take the sparse route too, and
#: the matrix completion works from the sparse votes instead of the (m*k)^2 overlap matrix.
SPARSE_WIDTH = 2048


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
    Sparse votes: L may be a scipy.sparse CSR storing vote + 1 (abstain not stored;
    labeling.model.to_sparse_votes); nothing n x m is then made dense, and the matrix
    completion uses the sparse one-hot votes instead of the (m*k)^2 overlap matrix (so does a
    dense L with m*k > SPARSE_WIDTH). Dependencies need a dense L.
    threads: CPU threads of fit and predict_proba (None: half of torch's, at least one;
    labeling.model.votes.default_threads says why); torch's setting is restored after.
    """

    accepts_sparse = True

    def __init__(
        self,
        cardinality: int = 2,
        device: str | None = None,
        refine: str = "em",
        verbose: bool | None = None,
        progress: bool | None = None,
        threads: int | None = None,
    ) -> None:
        progress = deprecated_progress(progress, "verbose", verbose, "LabelModel")
        super().__init__(cardinality, device, progress)
        if refine not in ("em", "none"):
            raise LoomError(f"refine must be 'em' or 'none', got {refine!r}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise LoomError(
                f"LabelModel(threads={threads!r}): use a positive integer, or None for the default"
            )
        self.refine = refine
        self.threads = threads
        self.dependencies_: list[tuple[int, int]] = []
        self.groups_: list[tuple[int, ...]] = []
        self.group_tables_: GroupTables | None = None

    def _config(self) -> dict[str, Any]:
        return {"device": self.device, "refine": self.refine, "threads": self.threads}

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

    @limit_threads
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
        pooled: float | None = None,
    ) -> None:
        """Options: em_iters/tol/smoothing (EM), l2 (pull towards the majority-vote start),
        fit_sample (rows the fit runs on; `em_sample` is its older name), log_freq (log the
        matrix-completion loss every log_freq epochs at INFO, as Snorkel's), optimizer
        (Snorkel's; only "adam", which loom always uses), dependencies (None: LFs are
        independent given the class; "auto": learn the dependent pairs from the votes,
        labeling.dependencies; or a list of (i, j) LF pairs, indices or names), pooled
        (pseudo-rows per class shrinking each LF's confusion table towards one accuracy with
        wrong votes spread evenly, ConditionalModel._em; None: conditional.default_pooled,
        0 for binary tasks and about POOLED_PER_CELL pseudo-votes per confusion cell
        otherwise; fit_info["pooled"] says what ran)."""
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
        if pooled is not None and not pooled >= 0:
            raise LoomError(f"LabelModel.fit(pooled={pooled!r}): use a number >= 0 or None")
        if em_sample is not None:  # older name of fit_sample
            fit_sample = em_sample
        if is_sparse(L) and dependencies is not None:
            raise LoomError(
                "LabelModel.fit(dependencies=...) needs a dense label matrix for now: fit on "
                "labeling.model.from_sparse_votes(L), or drop dependencies= for sparse votes"
            )
        S = self._em_rows(L, fit_sample, seed)
        self.fit_info["fit_rows"] = self.fit_info.pop("em_rows")
        n = S.shape[0]
        sparse_route = is_sparse(S) or (dependencies is None and m * k > SPARSE_WIDTH)
        self.fit_info["vote_format"] = "sparse" if sparse_route else "dense"
        with torch.no_grad():
            if sparse_route:
                Su, w = compress_sparse_rows(S if is_sparse(S) else to_sparse_votes(S))
                blocks = SparseVoteBlocks(Su, k, dev, w)
                cond0, p0 = self._init_from_votes(blocks)
                A = sparse_onehot(Su, k, np.float64)
                if m * k <= SPARSE_WIDTH:  # a small (m*k)^2 matrix: dense products are faster
                    Aw = A if w is None else A.multiply(w[:, None]).tocsr()
                    dense = torch.as_tensor((A.T @ Aw).toarray() / n, device=dev)
                else:
                    overlap = SparseOverlap(A, w, n, k, dev)
                del A
                pairs = []
            else:
                Lu, w = compress_rows(S, dev)
                blocks = VoteBlocks(Lu, k, dev, self.cache_bytes, w)
                dense = torch.zeros(m * k, m * k, dtype=torch.float32, device=dev)
                cond0, p0 = self._init_from_votes(blocks, dense)
                dense = dense.double() / n
                pairs = self._dependency_pairs(dependencies, dense.cpu().numpy(), n)
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
        if pooled is None:
            coverage = float((cond0[:, 1:, :].sum(1).double() @ p0.double()).mean())
            pooled = default_pooled(k, coverage)
        self.fit_info["pooled"] = float(pooled)
        p = self.class_balance if self._fixed_balance else p0.double().cpu().numpy()
        mu0 = cond0[:, 1:, :].reshape(m * k, k).double()
        if not sparse_route or m * k <= SPARSE_WIDTH:
            overlap = DenseOverlap(dense, k, excluded)
            del dense
        pt64 = torch.as_tensor(p, dtype=torch.float64, device=dev)
        with cpu_threads(1, dev):  # 200 epochs of small products: one thread is faster
            mu, loss = fit_mu(
                overlap, mu0, pt64, k, n_epochs, lr, l2, progress, log_freq, excluded, logger
            )
        del overlap
        mu = mu.cpu().numpy()
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
                        pooled=float(pooled),
                    )
            cond, p = ct.double().cpu().numpy(), pt.double().cpu().numpy()
        self.fit_info["em_iterations"] = iters
        self.cond = self._silent_fix(cond, L)
        self.class_balance = np.asarray(p, dtype=np.float64)
        self.groups_ = groups
        self.group_tables_ = tables

    @limit_threads
    def log_joint(self, L: Any) -> np.ndarray:
        """log p(y) + log P(votes of each row | y) under the fitted model, shape (n, k).

        logsumexp over the classes is the log-likelihood of the row's votes (used to compare
        models on held-out rows); softmax is predict_proba.
        """
        from labeling.model.cliques import group_log_joint

        self._check_fitted()
        L = self._check_votes(L, self.m)
        if is_sparse(L):
            return sparse_log_joint(L, self.cond, self.class_balance, self._torch_device())
        if not self.groups_:
            return group_log_joint(L, self.cond, self.class_balance, None, self._torch_device())
        return group_log_joint(
            L, self.cond, self.class_balance, self.group_tables_, self._torch_device()
        )

    @limit_threads
    def _proba(self, L: np.ndarray) -> np.ndarray:
        if not self.groups_:
            return super()._proba(L)
        from labeling.model.cliques import group_log_joint

        s = group_log_joint(
            L, self.cond, self.class_balance, self.group_tables_, self._torch_device()
        )
        s = np.exp(s - s.max(1, keepdims=True))
        return (s / s.sum(1, keepdims=True)).astype(np.float32)
