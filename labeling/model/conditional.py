"""Label models parameterised by p(y) and P(lf_i = a | y): shared posterior and EM.

`LabelModel`, `DawidSkene` and `TripletModel` only differ in how they estimate these tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labeling.arguments import whole_number_at_least
from labeling.model.base import BaseLabelModel
from labeling.model.sparse import is_sparse, sparse_proba, voting_lfs
from labeling.model.votes import VoteBlocks, row_chunks, softmax_rows, t_matmul
from toolkit.device import resolve_device
from toolkit.errors import LoomError


def one_coin(counts: Any, Ny: Any) -> Any:
    """(m, k, k) one-coin form of confusion counts [i, vote, y]: P(vote | y) per LF with one
    coverage, one accuracy and wrong votes spread evenly (the pooled prior of EM)."""
    import torch

    k = counts.shape[1]
    fires = counts.sum((1, 2))
    correct = counts.diagonal(dim1=1, dim2=2).sum(1)
    acc = (correct + 1.0) / (fires + 2.0)
    cov = (fires / Ny.sum().clamp_min(1e-12)).clamp(0.0, 1.0)
    eye = torch.eye(k, dtype=counts.dtype, device=counts.device)
    wrong = ((1.0 - acc) / (k - 1))[:, None, None]
    return cov[:, None, None] * (eye * acc[:, None, None] + (1.0 - eye) * wrong)


#: Pseudo-votes per cell of an LF's confusion table that the default pooled prior adds.
POOLED_PER_CELL = 4.0


def default_pooled(k: int, coverage: float) -> float:
    """Default strength of EM's pooled prior, in pseudo-rows per class: 0 for k = 2, else
    max(k - 2, POOLED_PER_CELL * k / coverage) (coverage: the mean share of rows an LF votes on).

    A pseudo-row adds `coverage` votes to an LF's row of the confusion table, so the second
    term gives each (LF, class) about POOLED_PER_CELL * k pseudo-votes, POOLED_PER_CELL per
    cell, whatever n is: strong where the k*k cells see few votes (k = 25, LFs voting on 5%
    of rows: 1,800 pseudo-rows, which took the model from below majority vote to above it),
    negligible next to the data of dense votes with few classes.
    """
    if k <= 2:
        return 0.0
    return float(max(k - 2, POOLED_PER_CELL * k / max(coverage, 1e-6)))


class ConditionalModel(BaseLabelModel):
    """Label models parameterised by p(y) and P(lf_i = a | y): shared posterior and EM."""

    cache_bytes = 1 << 30

    def __init__(
        self, cardinality: int = 2, device: str | None = None, progress: bool | None = None
    ) -> None:
        super().__init__(cardinality, device, progress)
        self.cond: np.ndarray | None = None  # (m, k+1, k): P(lf_i = a-1 | Y = y)

    def _torch_device(self) -> str:
        return resolve_device(self.device)

    def _config(self) -> dict[str, Any]:
        return {"device": self.device}

    def _state(self) -> dict[str, np.ndarray]:
        return {"cond": self.cond}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.cond = arrays["cond"]

    def get_weights(self) -> np.ndarray:
        """P(lf_i votes the true class | lf_i votes), from the fitted tables."""
        self._check_fitted()
        p = self.class_balance
        votes = self.cond[:, 1:, :]  # (m, k, k)
        correct = np.einsum("iyy,y->i", votes, p)
        fires = (votes.sum(1) * p).sum(1)
        acc = np.where(fires > 0, correct / np.maximum(fires, 1e-12), 1.0 / self.cardinality)
        return np.clip(acc, 0.0, 1.0)

    def get_conditional_probs(self) -> np.ndarray:
        """(m, k+1, k) table: [i, a+1, y] = P(lf_i = a | Y = y), a = -1 (abstain) .. k-1."""
        self._check_fitted()
        return self.cond.copy()

    def _weights_torch(self, cond: Any, p: Any) -> tuple[Any, Any]:
        import torch

        m, k = cond.shape[0], self.cardinality
        logc = torch.log(cond.clamp_min(1e-12))
        W = (logc[:, 1:, :] - logc[:, :1, :]).reshape(m * k, k)
        base = torch.log(p.clamp_min(1e-12)) + logc[:, 0, :].sum(0)
        return W, base

    def _proba(self, L: np.ndarray) -> np.ndarray:
        import torch

        dev = self._torch_device()
        if is_sparse(L):
            return sparse_proba(L, self.cond, self.class_balance, dev)
        k = self.cardinality
        cond = torch.as_tensor(self.cond, dtype=torch.float32, device=dev)
        p = torch.as_tensor(self.class_balance, dtype=torch.float32, device=dev)
        logc = torch.log(cond.clamp_min(1e-12))
        T = logc - logc[:, :1, :]  # (m, k+1, k): log-odds of each vote vs abstaining
        base = torch.log(p.clamp_min(1e-12)) + logc[:, 0, :].sum(0)
        m = L.shape[1]
        table = (T - T[:, :, :1]).reshape(m * (k + 1), k)  # relative to class 0
        base = base - base[0]
        offs = torch.arange(0, m * (k + 1), k + 1, device=dev)
        out = np.empty((len(L), k), dtype=np.float32)
        Lt = torch.from_numpy(L)
        with torch.no_grad():  # one bag of m table rows per row: sum_i T[i, vote_i + 1]
            for s in row_chunks(len(L), m * k, dev):
                idx = Lt[s].to(dev, non_blocking=True) + (1 + offs)
                logit = torch.nn.functional.embedding_bag(idx, table, mode="sum")
                out[s] = softmax_rows(logit.add_(base)).cpu().numpy()
        return out

    def _em(
        self,
        blocks: VoteBlocks,
        cond: Any,
        p: Any,
        n_iter: int,
        tol: float,
        fixed_balance: bool,
        smoothing: float,
        progress: bool,
        desc: str,
        pooled: float = 0.0,
    ) -> tuple[Any, Any, int]:
        """EM on the full Dawid-Skene model (abstain as an outcome); returns (cond, p, iters).

        pooled: pseudo-rows per class of a prior that shrinks each LF's confusion table
        towards its one-coin form (one accuracy, wrong votes spread evenly over the other
        classes), estimated from the current counts. With many classes most wrong-vote cells
        are never observed; without it they get ~0 probability and one unexpected wrong vote
        vetoes the true class.
        """
        import torch
        from tqdm.auto import tqdm

        m, k = blocks.m, self.cardinality
        dev = cond.device
        eye = torch.eye(k, dtype=torch.float64, device=dev) * (smoothing / k)
        done = 0
        bar = tqdm(total=n_iter, desc=desc, disable=not progress, leave=False)
        for step in range(1, n_iter + 1):
            done = step
            W, base = self._weights_torch(cond, p)
            counts = torch.zeros(m * k, k, dtype=torch.float64, device=dev)
            Ny = torch.zeros(k, dtype=torch.float64, device=dev)
            for _, (A, w) in blocks:
                Q = softmax_rows(A @ W + base) * w
                counts += t_matmul(A, Q).double()
                Ny += Q.sum(0).double()
            C3 = counts.reshape(m, k, k)
            if pooled > 0:
                C3 = C3 + pooled * one_coin(C3, Ny)
            vote_p = (C3 + eye) / (Ny + smoothing + pooled)
            abst = (1.0 - vote_p.sum(1, keepdim=True)).clamp_min(1e-9)
            new = torch.cat([abst, vote_p], 1)
            new = (new / new.sum(1, keepdim=True)).float()
            new_p = p if fixed_balance else ((Ny + 1.0) / (Ny.sum() + k)).float()
            delta = max(float((new - cond).abs().max()), float((new_p - p).abs().max()))
            cond, p = new, new_p
            bar.update(1)
            if delta < tol:
                break
        bar.close()
        return cond, p, done

    def _init_from_votes(self, blocks: VoteBlocks, overlap: Any = None) -> tuple[Any, Any]:
        """cond and p from soft majority vote (the start point for EM and matrix completion).

        With `overlap` (an (m*k, m*k) tensor), also accumulates sum_rows w * A^T A into it.
        """
        import torch

        m, k = blocks.m, self.cardinality
        dev = blocks.device
        counts = torch.zeros(m * k, k, dtype=torch.float64, device=dev)
        Ny = torch.zeros(k, dtype=torch.float64, device=dev)
        sparse = getattr(blocks, "sparse", False)
        per_class = torch.eye(k, dtype=torch.float32, device=dev).repeat(m, 1)  # (m*k, k)
        for _, (A, w) in blocks:
            if overlap is not None:
                overlap += A.T @ (A * w) if blocks.weighted else A.T @ A
            v = A @ per_class if sparse else A.reshape(len(A), m, k).sum(1)
            has = v.sum(1, keepdim=True) > 0
            Q = torch.where(has, (v == v.max(1, keepdim=True).values).float(), torch.zeros_like(v))
            Q = Q / Q.sum(1, keepdim=True).clamp_min(1.0) * w
            counts += t_matmul(A, Q).double()
            Ny += Q.sum(0).double()
        Ny = Ny + 1.0
        eye = 0.1 * torch.eye(k, dtype=torch.float64, device=dev)
        vote_p = (counts.reshape(m, k, k) + eye) / (Ny + 0.1)
        abst = (1.0 - vote_p.sum(1, keepdim=True)).clamp_min(1e-6)
        cond = torch.cat([abst, vote_p], 1)
        cond = cond / cond.sum(1, keepdim=True)
        p = Ny / Ny.sum()
        return cond.float(), p.float()

    def _em_rows(self, L: np.ndarray, em_sample: int | None, seed: int) -> np.ndarray:
        """The rows EM runs on: all of L, or a uniform sample of em_sample rows."""
        n = L.shape[0]
        if em_sample is not None and not whole_number_at_least(em_sample, 1):
            raise LoomError(
                f"{type(self).__name__}.fit(fit_sample/em_sample={em_sample!r}): use a positive "
                "number of rows, or None to fit on all rows"
            )
        if em_sample and n > em_sample:
            idx = np.sort(np.random.default_rng(seed).choice(n, em_sample, replace=False))
            self.fit_info["em_rows"] = int(em_sample)
            return L[idx]
        self.fit_info["em_rows"] = n
        return L

    def _silent_fix(self, cond: np.ndarray, L: np.ndarray) -> np.ndarray:
        """LFs that never vote: abstain with probability 1 under every class."""
        voting = getattr(self, "_voting", None)  # set by fit on this L
        silent = ~(voting if voting is not None and len(voting) == L.shape[1] else voting_lfs(L))
        if silent.any():
            cond[silent] = 0.0
            cond[silent, 0, :] = 1.0
        return cond
