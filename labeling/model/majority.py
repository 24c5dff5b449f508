"""Majority vote as a label model (the baseline every other model should beat)."""

from __future__ import annotations

from typing import Any

import numpy as np

from labeling.model.base import BaseLabelModel, register_model
from labeling.model.sparse import class_counts, is_sparse


@register_model
class MajorityVoter(BaseLabelModel):
    """Majority vote; ties split evenly in predict_proba; needs no fit (fit only records LFs).

    Takes sparse CSR votes too (vote + 1 stored, abstain not stored; labeling.model.sparse).
    """

    accepts_sparse = True

    def _fit(self, L: np.ndarray) -> None:
        if not self._fixed_balance:  # never the prior of an earlier fit
            self.class_balance = np.full(self.cardinality, 1.0 / self.cardinality)
        self.m = L.shape[1]
        pred = self.predict(L)
        if is_sparse(L):
            rows = np.repeat(np.arange(L.shape[0]), np.diff(L.indptr))
            keep = pred[rows] >= 0
            hit = keep & (L.data.astype(np.int64) - 1 == pred[rows])
            hits = np.bincount(L.indices, weights=hit, minlength=self.m)
            tot = np.bincount(L.indices, weights=keep, minlength=self.m)
        else:
            votes = L >= 0
            keep = votes & (pred >= 0)[:, None]
            hits = ((L == pred[:, None]) & keep).sum(0)
            tot = keep.sum(0)
        self._acc = np.where(tot > 0, hits / np.maximum(tot, 1), 1.0 / self.cardinality)

    def _state(self) -> dict[str, np.ndarray]:
        return {"acc": getattr(self, "_acc", np.zeros(0))}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._acc = arrays.get("acc")

    def get_weights(self) -> np.ndarray:
        """Agreement of each LF with the majority vote on the fit data (no true accuracies)."""
        self._check_fitted()
        return self._acc

    def predict_proba(self, L: Any) -> np.ndarray:
        """Vote shares of the top classes (ties split); rows without votes get the class prior."""
        L = self._check_votes(L, self.m)
        k = self.cardinality
        n = L.shape[0]
        if is_sparse(L):
            counts = class_counts(L, k)
        else:
            counts = np.zeros((n, k), dtype=np.float32)
            for y in range(k):
                counts[:, y] = (L == y).sum(1)
        top = counts.max(1, keepdims=True)
        probs = ((counts == top) & (top > 0)).astype(np.float32)
        s = probs.sum(1, keepdims=True)
        prior = self.class_balance if self.class_balance is not None else np.full(k, 1.0 / k)
        return np.where(s > 0, probs / np.maximum(s, 1), prior.astype(np.float32))

    def _proba(self, L: np.ndarray) -> np.ndarray:
        return self.predict_proba(L)


MajorityLabelVoter = MajorityVoter
