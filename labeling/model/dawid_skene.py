"""Dawid-Skene: EM over one confusion matrix per LF, abstaining counted as an outcome."""

from __future__ import annotations

import numpy as np

from labeling.model.base import register_model
from labeling.model.conditional import ConditionalModel
from labeling.model.votes import VoteBlocks, compress_rows


@register_model
class DawidSkene(ConditionalModel):
    """Dawid-Skene EM with one confusion matrix per LF (abstain as an outcome), from majority vote."""

    def _fit(
        self,
        L: np.ndarray,
        n_epochs: int = 200,
        seed: int = 0,
        progress: bool = False,
        tol: float = 1e-4,
        smoothing: float = 1.0,
        em_sample: int | None = None,
    ) -> None:
        """n_epochs: at most this many EM iterations (stops earlier at tol); em_sample: rows EM
        runs on (None: all)."""
        import torch

        dev = self._torch_device()
        with torch.no_grad():
            Lu, w = compress_rows(self._em_rows(L, em_sample, seed), dev)
            blocks = VoteBlocks(Lu, self.cardinality, dev, self.cache_bytes, w)
            cond, p = self._init_from_votes(blocks)
            if self._fixed_balance:
                p = torch.as_tensor(self.class_balance, dtype=torch.float32, device=dev)
            cond, p, iters = self._em(
                blocks,
                cond,
                p,
                n_epochs,
                tol,
                self._fixed_balance,
                smoothing,
                progress,
                "DawidSkene EM",
            )
        self.cond = self._silent_fix(cond.cpu().numpy().astype(np.float64), L)
        self.class_balance = p.cpu().numpy().astype(np.float64)
        self.fit_info["em_iterations"] = iters
