"""AutoLabelModel: pick the label model for this label matrix (`get_label_model("auto", k)`).

No label model wins everywhere (WRENCH, Zhang et al. 2021): majority vote is within a point
of the learned models on many real sets, and a model whose assumptions fail (e.g.
correlated LFs) can fall well below it. So the default fits every candidate and keeps one:

- with gold labels (`fit(L, Y_dev=...)`, for the rows of `L_dev=` or, without it, for the
  rows of L_train, -1 = unknown): the best accuracy on those rows, computed exactly as
  `score(L_dev, Y_dev, tie_break_policy="random")` does (rows with a vote, ties broken at
  random with seed 0, as an end model sees them); anything not strictly better goes to
  majority vote, so on that score the choice never falls below majority vote;
- without: the best held-out log-likelihood of the votes (each candidate fitted on a
  random (1 - holdout) share of the rows, scored on the rest). Majority vote enters as the
  model it is the Bayes rule of: every LF equally accurate, errors uniform.

The choice and why are in `chosen_`, `selection_` (one row per candidate) and `reason_`,
and logged at INFO; the fitted model is `model_`, and predict_proba/get_weights are its.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from labeling.model.base import BaseLabelModel, register_model
from labeling.model.checks import LabelMatrixError, check_L, check_Y
from labeling.model.cliques import group_log_joint
from labeling.model.dawid_skene import DawidSkene
from labeling.model.label_model import LabelModel
from labeling.model.majority import MajorityVoter
from labeling.model.triplet import TripletModel
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)

#: Candidate name -> model class ("+dependencies": fitted with the learned LF dependencies).
CANDIDATES = {
    "MajorityVoter": MajorityVoter,
    "LabelModel": LabelModel,
    "LabelModel+dependencies": LabelModel,
    "DawidSkene": DawidSkene,
    "TripletModel": TripletModel,
}


def _logsumexp(s: np.ndarray) -> np.ndarray:
    top = s.max(1, keepdims=True)
    return (top + np.log(np.exp(s - top).sum(1, keepdims=True)))[:, 0]


def majority_log_likelihood(L_fit: np.ndarray, L_eval: np.ndarray, k: int) -> np.ndarray:
    """Log-likelihood per row of L_eval under majority vote's model, fitted on L_fit.

    The model whose Bayes rule is majority vote: uniform classes, LF i votes with its own
    coverage under every class, right with one accuracy a shared by all LFs, wrong votes
    uniform. a is fitted by EM (a few steps from the agreement with majority vote).
    """
    cov = np.clip((L_fit >= 0).mean(0), 1e-6, 1 - 1e-6)
    votes = L_fit >= 0
    total = max(int(votes.sum()), 1)
    counts = np.stack([(L_fit == y).sum(1) for y in range(k)], 1).astype(np.float64)
    top = counts.max(1, keepdims=True)
    q = ((counts == top) & (top > 0)).astype(np.float64)
    q = np.where(q.sum(1, keepdims=True) > 0, q / np.maximum(q.sum(1, keepdims=True), 1), 1 / k)
    a = float(np.clip((q * counts).sum() / total, 1.0 / k + 1e-3, 1 - 1e-6))
    for _ in range(50):
        s = counts * np.log(a) + (counts.sum(1, keepdims=True) - counts) * np.log((1 - a) / (k - 1))
        q = np.exp(s - s.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        new = float(np.clip((q * counts).sum() / total, 1.0 / k + 1e-3, 1 - 1e-6))
        if abs(new - a) < 1e-7:
            break
        a = new
    cond = np.zeros((L_fit.shape[1], k + 1, k))
    cond[:, 0, :] = (1 - cov)[:, None]
    cond[:, 1:, :] = (cov * (1 - a) / (k - 1))[:, None, None]
    for y in range(k):
        cond[:, y + 1, y] = cov * a
    return _logsumexp(group_log_joint(L_eval, cond, np.full(k, 1.0 / k), None))


def log_likelihood(model: BaseLabelModel, L: np.ndarray) -> np.ndarray:
    """Log-likelihood of each row's votes under a fitted probabilistic label model."""
    if isinstance(model, LabelModel):
        return _logsumexp(model.log_joint(L))
    cond = model.get_conditional_probs()
    return _logsumexp(group_log_joint(L, cond, model.class_balance, None))


@register_model
class AutoLabelModel(BaseLabelModel):
    """Fits majority vote, LabelModel (with and without learned LF dependencies), DawidSkene
    and TripletModel, and keeps the best on gold labels if given, else by held-out
    likelihood of the votes (module docstring). candidates: names of CANDIDATES to try
    (default all; the majority-vote guarantee needs "MajorityVoter" among them); holdout:
    share of rows scored for the likelihood."""

    def __init__(
        self,
        cardinality: int = 2,
        device: str | None = None,
        progress: bool | None = None,
        candidates: list[str] | tuple[str, ...] | None = None,
        holdout: float = 0.2,
    ) -> None:
        super().__init__(cardinality, device, progress)
        names = list(CANDIDATES) if candidates is None else list(candidates)
        unknown = [c for c in names if c not in CANDIDATES]
        if unknown or not names:
            raise LoomError(
                f"AutoLabelModel(candidates={candidates!r}): choose among {list(CANDIDATES)}"
            )
        if not 0.0 < holdout < 1.0:
            raise LoomError(f"AutoLabelModel(holdout={holdout!r}): use a share in (0, 1)")
        self.candidates = names
        self.holdout = float(holdout)
        self.model_: BaseLabelModel | None = None
        self.chosen_: str | None = None
        self.reason_ = ""
        self.selection_: pd.DataFrame | None = None

    def _config(self) -> dict[str, Any]:
        return {"device": self.device, "candidates": self.candidates, "holdout": self.holdout}

    def fit(self, L_train: Any, Y_dev: Any = None, *args: Any, **kwargs: Any) -> AutoLabelModel:
        """As BaseLabelModel.fit; Y_dev also chooses the model (see the class docstring)."""
        self._y_dev = Y_dev
        try:
            return super().fit(L_train, Y_dev, *args, **kwargs)
        finally:
            self._y_dev = None

    def _new(self, name: str) -> BaseLabelModel:
        return CANDIDATES[name](self.cardinality, device=self.device, progress=False)

    def _fit_one(self, name: str, L: np.ndarray, seed: int, pairs: list) -> BaseLabelModel:
        model = self._new(name)
        kw: dict[str, Any] = {"seed": seed, "progress": False}
        if name == "LabelModel+dependencies":
            kw["dependencies"] = pairs
        if name == "MajorityVoter":
            kw = {}  # majority vote as anyone runs it (a prior would change only empty rows)
        elif self._fixed_balance:
            kw["class_balance"] = self.class_balance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the auto model's own fit warns once for all
            return model.fit(L, lf_names=self.lf_names, **kw)

    def _fit(self, L: np.ndarray, seed: int = 0, progress: bool = False, L_dev: Any = None) -> None:
        """L_dev: the label matrix of the rows Y_dev labels (default: Y_dev labels L_train)."""
        from labeling.dependencies import MAX_DIM, dependencies_from_overlap, overlap_matrix

        k = self.cardinality
        names = list(self.candidates)
        pairs: list = []
        if "LabelModel+dependencies" in names and L.shape[1] * k > MAX_DIM and len(names) > 1:
            names.remove("LabelModel+dependencies")
            self.fit_info["skipped"] = "LabelModel+dependencies: m*k is above what it can learn"
            logger.info(
                "AutoLabelModel: %d LFs x %d classes is too many to learn "
                "dependencies; LabelModel+dependencies is not tried",
                L.shape[1],
                k,
            )
        if "LabelModel+dependencies" in names:
            table = dependencies_from_overlap(overlap_matrix(L, k), k, len(L))
            pairs = [(int(i), int(j)) for i, j in zip(table["i"], table["j"])]
            if not pairs and "LabelModel" in names:  # the same model: nothing to compare
                names.remove("LabelModel+dependencies")
        self.fit_info["dependencies"] = [list(pr) for pr in pairs]
        rows = []
        if self._y_dev is not None:
            Ld, yd, keep = self._dev_rows(L, L_dev)
            mv_acc = None
            for name in names:
                model = self._fit_one(name, L, seed, pairs)
                # exactly what score(L_dev, Y_dev, tie_break_policy="random") computes
                pred = model.predict(Ld, tie_break_policy="random")
                acc = float((pred == yd)[keep].mean())
                rows.append({"model": name, "dev_accuracy": acc, "fitted": model})
                mv_acc = acc if name == "MajorityVoter" else mv_acc
            best = max(rows, key=lambda r: r["dev_accuracy"])  # first of equals: MV leads
            if mv_acc is not None and best["dev_accuracy"] <= mv_acc:
                best = next(r for r in rows if r["model"] == "MajorityVoter")
            self.reason_ = (
                f"{best['model']}: best accuracy on the {int(keep.sum())} gold-labelled rows "
                "with votes (ties broken at random, seed 0) "
                f"({best['dev_accuracy']:.4f}"
                + (f"; majority vote {mv_acc:.4f})" if mv_acc is not None else ")")
            )
            chosen = best["fitted"]
        else:
            if len(L) < 20:
                raise LabelMatrixError(
                    f"AutoLabelModel needs at least 20 rows to compare models without gold "
                    f"labels (got {len(L)}); pass Y_dev or choose a model by name"
                )
            rng = np.random.default_rng(seed)
            held = np.zeros(len(L), dtype=bool)
            held[rng.choice(len(L), max(1, int(round(self.holdout * len(L)))), replace=False)] = (
                True
            )
            Lf, Le = L[~held], L[held]
            for name in names:
                if name == "MajorityVoter":
                    ll = majority_log_likelihood(Lf, Le, k)
                else:
                    ll = log_likelihood(self._fit_one(name, Lf, seed, pairs), Le)
                rows.append({"model": name, "heldout_loglik": float(ll.mean())})
            best = max(rows, key=lambda r: r["heldout_loglik"])
            self.reason_ = (
                f"{best['model']}: highest log-likelihood of the votes on {int(held.sum())} "
                f"held-out rows ({best['heldout_loglik']:.4f} per row); no gold labels given"
            )
            chosen = self._fit_one(best["model"], L, seed, pairs)
        for r in rows:
            r["chosen"] = r["model"] == best["model"]
            r.pop("fitted", None)
        self.selection_ = pd.DataFrame(rows)
        self.chosen_ = best["model"]
        self.model_ = chosen
        self.class_balance = chosen.class_balance
        self.fit_info.update({"chosen": self.chosen_, "reason": self.reason_})
        logger.info("AutoLabelModel chose %s", self.reason_)

    def _dev_rows(self, L: np.ndarray, L_dev: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dev label matrix, gold labels, mask of the gold-labelled rows with a vote)."""
        k = self.cardinality
        if L_dev is None:
            Ld = L
            y = np.asarray(self._y_dev)
            if y.reshape(-1).shape[0] != len(L):
                raise LabelMatrixError(
                    f"Y_dev has {y.reshape(-1).shape[0]} labels but L_train has {len(L)} rows: "
                    "to choose a model by gold labels, pass the label matrix of the labelled "
                    "rows as L_dev= (or Y_dev with one label per L_train row, -1 = unknown)"
                )
        else:
            Ld = check_L(L_dev, k, L.shape[1], what="L_dev")
        yd = check_Y(self._y_dev, len(Ld), k, "Y_dev")
        keep = (yd >= 0) & (Ld >= 0).any(1)
        if not keep.any():
            raise LabelMatrixError(
                "Y_dev labels no row that has a vote: nothing to compare the models on"
            )
        return Ld, yd, keep

    def _proba(self, L: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(L)

    def get_weights(self) -> np.ndarray:
        """The chosen model's estimated LF accuracies."""
        self._check_fitted()
        return self.model_.get_weights()

    def degenerate_reason(self) -> str:
        return self.model_.degenerate_reason() if self.model_ is not None else ""

    def _state(self) -> dict[str, np.ndarray]:
        state = {f"model__{key}": v for key, v in self.model_._state().items()}
        state["chosen"] = np.array(self.chosen_)
        state["model_class_balance"] = np.asarray(self.model_.class_balance)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.chosen_ = str(arrays["chosen"])
        self.reason_ = str(self.fit_info.get("reason", ""))
        model = self._new(self.chosen_)
        model.m = self.m
        model.lf_names = self.lf_names
        model.class_balance = arrays["model_class_balance"]
        model._set_state({key[7:]: v for key, v in arrays.items() if key.startswith("model__")})
        self.model_ = model


__all__ = ["CANDIDATES", "AutoLabelModel", "log_likelihood", "majority_log_likelihood"]
