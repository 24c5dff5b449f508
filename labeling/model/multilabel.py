"""MultiLabelModel: label models for rows that may carry several labels at once.

Input format (one for all of loom): a multi-label vote tensor L of shape (n, m, K), ints,
L[r, i, c] = 1 when LF i says label c applies to row r, 0 when it says label c does not
apply, -1 when it abstains on label c. A list of K (n, m) matrices in that -1/0/1 form (one
per label) is stacked into it. Gold labels Y are (n, K) with 1/0 (and -1 = unknown).

Each label is a binary task. With `share_lfs=True` (default) the LFs' reliability is shared
across labels: one binary LabelModel is fitted on every (row, label) pair stacked, so an LF
that votes on many labels is judged on all of its votes; each label then keeps its own
prevalence (estimated by EM with the shared LF tables held fixed). With share_lfs=False,
every label gets its own independent binary LabelModel.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labeling.metrics import metric_score
from labeling.model.checks import LabelDtypeError, LabelMatrixError
from labeling.model.label_model import LabelModel
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)


def check_multilabel_L(L: Any, m: int | None = None, n_labels: int | None = None) -> np.ndarray:
    """Validate multi-label votes and return them as an (n, m, K) int64 array of -1/0/1."""
    if isinstance(L, (list, tuple)):
        if not L:
            raise LabelMatrixError("L is an empty list: pass one (n, m) vote matrix per label")
        L = np.stack([np.asarray(x) for x in L], axis=2)
    arr = np.asarray(L)
    if arr.ndim != 3:
        raise LabelMatrixError(
            f"multi-label votes must be an (n, m, K) array (rows x LFs x labels) or a list of "
            f"K (n, m) matrices, got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iu":
        raise LabelDtypeError(
            f"multi-label votes have dtype {arr.dtype}: use ints -1 (abstain), 0 (label does "
            "not apply), 1 (label applies)"
        )
    if arr.size == 0:
        raise LabelMatrixError(f"multi-label votes are empty (shape {arr.shape})")
    if arr.min() < -1 or arr.max() > 1:
        raise LabelMatrixError(
            f"multi-label votes hold values {int(arr.min())}..{int(arr.max())}: each entry is "
            "-1 (abstain), 0 (label does not apply) or 1 (label applies)"
        )
    if m is not None and arr.shape[1] != m:
        raise LabelMatrixError(f"L has {arr.shape[1]} LFs but the model was fitted on {m}")
    if n_labels is not None and arr.shape[2] != n_labels:
        raise LabelMatrixError(
            f"L has {arr.shape[2]} labels but the model was fitted on {n_labels}"
        )
    return arr.astype(np.int64, copy=False)


def _stack(L: np.ndarray) -> np.ndarray:
    """(n, m, K) -> (n*K, m): the (row, label) pairs as rows of one binary label matrix."""
    n, m, K = L.shape
    return L.transpose(0, 2, 1).reshape(n * K, m)


class MultiLabelModel:
    """Multi-label label model: one binary task per label, LF reliability shared or not.

    fit(L) / predict_proba(L) -> (n, K) P(label applies) / predict(L) -> (n, K) 0/1 (-1 where
    no LF voted on that label for that row) / score(L, Y) (metrics averaged over labels).
    L is an (n, m, K) -1/0/1 tensor (module docstring). `fit_options` go to LabelModel.fit.
    """

    def __init__(self, share_lfs: bool = True, device: str | None = None) -> None:
        self.share_lfs = bool(share_lfs)
        self.device = device
        self.models_: list[LabelModel] = []
        self.priors_: np.ndarray | None = None
        self.m: int | None = None
        self.n_labels: int | None = None

    def fit(self, L: Any, seed: int = 0, **fit_options: Any) -> MultiLabelModel:
        """Fit on (n, m, K) votes; fit_options are LabelModel.fit's (n_epochs=, lr=, ...)."""
        L = check_multilabel_L(L)
        n, m, K = L.shape
        self.m, self.n_labels = m, K
        if self.share_lfs:
            shared = LabelModel(2, device=self.device)
            shared.fit(_stack(L), seed=seed, **fit_options)
            self.models_ = [shared]
            self.priors_ = np.stack([self._label_prior(shared, L[:, :, c]) for c in range(K)])
        else:
            self.models_ = []
            for c in range(K):
                if not (L[:, :, c] >= 0).any():
                    raise LabelMatrixError(
                        f"no LF votes on label {c}: with share_lfs=False every label needs votes"
                    )
                self.models_.append(
                    LabelModel(2, device=self.device).fit(L[:, :, c], seed=seed, **fit_options)
                )
            self.priors_ = np.stack([mdl.class_balance for mdl in self.models_])
        return self

    @staticmethod
    def _label_prior(model: LabelModel, Lc: np.ndarray, iters: int = 50) -> np.ndarray:
        """EM on one label's prevalence with the shared LF tables fixed: (2,) class balance."""
        logl = model.log_joint(Lc) - np.log(model.class_balance)  # log P(votes | y)
        prior = model.class_balance.copy()
        for _ in range(iters):
            s = logl + np.log(prior)
            q = np.exp(s - s.max(1, keepdims=True))
            q /= q.sum(1, keepdims=True)
            new = (q.sum(0) + 1.0) / (len(q) + 2.0)
            if np.abs(new - prior).max() < 1e-6:
                prior = new
                break
            prior = new
        return prior

    def _check_fitted(self) -> None:
        if self.m is None:
            raise LoomError("MultiLabelModel is not fitted yet: call fit(L_train) first")

    def predict_proba(self, L: Any) -> np.ndarray:
        """(n, K) probability that each label applies to each row."""
        self._check_fitted()
        L = check_multilabel_L(L, self.m, self.n_labels)
        out = np.empty((L.shape[0], self.n_labels), dtype=np.float32)
        for c in range(self.n_labels):
            model = self.models_[0] if self.share_lfs else self.models_[c]
            logl = model.log_joint(L[:, :, c]) - np.log(model.class_balance)
            s = logl + np.log(self.priors_[c])
            q = np.exp(s - s.max(1, keepdims=True))
            out[:, c] = q[:, 1] / q.sum(1)
        return out

    def predict(self, L: Any, threshold: float = 0.5) -> np.ndarray:
        """(n, K) 1/0 (label applies or not); -1 where no LF voted on the label for the row."""
        L = check_multilabel_L(L, self.m, self.n_labels)
        pred = (self.predict_proba(L) > threshold).astype(np.int64)
        pred[(L < 0).all(1)] = -1
        return pred

    def score(
        self, L: Any, Y: Any, metrics: list[str] | tuple[str, ...] = ("accuracy",)
    ) -> dict[str, float]:
        """Each metric per label on the rows predicted and labelled, averaged over labels."""
        L = check_multilabel_L(L, self.m, self.n_labels)
        y = np.asarray(Y)
        if y.shape != (L.shape[0], self.n_labels):
            raise LabelMatrixError(
                f"Y must have shape (n, K) = {(L.shape[0], self.n_labels)}, got {y.shape}"
            )
        if not np.isin(y, (-1, 0, 1)).all():
            bad = y[~np.isin(y, (-1, 0, 1))].ravel()[:3].tolist()
            raise LabelMatrixError(
                f"Y holds {bad}: multi-label gold labels are 1 (label applies), 0 (does not "
                "apply) or -1 (unknown, left out of the scores)"
            )
        pred, probs = self.predict(L), self.predict_proba(L)
        out = {}
        for mt in metrics:
            vals = []
            for c in range(self.n_labels):
                keep = (pred[:, c] >= 0) & (y[:, c] >= 0)
                if keep.any():
                    pc = np.stack([1 - probs[keep, c], probs[keep, c]], 1)
                    vals.append(metric_score(y[keep, c], pred[keep, c], probs=pc, metric=mt))
            out[mt] = float(np.mean(vals)) if vals else float("nan")
        return out

    def get_weights(self) -> np.ndarray:
        """(m,) shared LF accuracies, or (K, m) one row per label with share_lfs=False."""
        self._check_fitted()
        if self.share_lfs:
            return self.models_[0].get_weights()
        return np.stack([mdl.get_weights() for mdl in self.models_])

    def __repr__(self) -> str:
        state = f"fitted on {self.m} LFs, {self.n_labels} labels" if self.m else "not fitted"
        return f"MultiLabelModel(share_lfs={self.share_lfs}, {state})"


__all__ = ["MultiLabelModel", "check_multilabel_L"]
