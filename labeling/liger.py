"""Liger: fuse embeddings with weak supervision (Chen et al. 2022, "Shoring Up the Foundations").

Two ideas on top of any label model:
1. partition the embedding space (spherical k-means) and fit one label model per part, so an
   LF can be accurate in one region and poor in another;
2. extend each LF's votes to abstained points whose nearest voted neighbour (cosine, through
   the shared `toolkit.index.VectorIndex`) lies within the LF's radius, raising coverage.

Radii are chosen without gold by default (a quantile of each LF's voted-to-voted
nearest-neighbour similarities) or tuned on the gold rows of `Y_dev` when given.
See docs/smoothing.md for measured numbers.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.model import check_L, check_Y
from labeling.neighbors import (
    build_index,
    check_embeddings,
    embeddings_digest,
    label_smoothness,
    neighbours,
)
from labeling.partitions import assign_partitions, spherical_kmeans
from labeling.smoother import fit_label_model, predictions, save_smoothing
from toolkit.device import resolve_device
from toolkit.errors import LoomError


class Liger:
    """Partitioned label model with embedding-based vote extension.

    cardinality: number of classes k. n_partitions: k-means parts (None: n // 4000, 1..8).
    radius: cosine distance (1 - similarity) within which an LF's vote is copied to an
    abstained point; None = chosen per LF (without gold: the `radius_quantile` quantile of the
    LF's voted-to-nearest-voted similarities; with Y_dev: tuned on the gold rows); a float or
    one value per LF fixes it; 0 turns extension off. k_neighbors: neighbours searched for a
    voted point (None: 20). base: label model name (`get_label_model`) or a factory
    `f(cardinality) -> model`. min_partition_size: parts smaller than this use the global
    model (None: max(100, 20 * m)). min_smoothness: without gold and with automatic radii,
    extension runs only if neighbours share labels beyond chance: Cohen's kappa between each
    voted row's majority vote and its nearest voted neighbour's (`smoothness_`) must reach
    max(min_smoothness, 3 standard errors), else extension is off and one model is fitted;
    None skips the check (so does a fixed radius, or votes of a single class).
    """

    def __init__(
        self,
        cardinality: int = 2,
        n_partitions: int | None = None,
        radius: float | Sequence[float] | None = None,
        k_neighbors: int | None = None,
        base: Any = "LabelModel",
        device: str | None = None,
        seed: int = 0,
        radius_quantile: float = 0.8,
        min_partition_size: int | None = None,
        index_kind: str | None = None,
        fit_kwargs: dict[str, Any] | None = None,
        min_smoothness: float | None = 0.05,
    ) -> None:
        if not isinstance(cardinality, int | np.integer) or cardinality < 2:
            raise LoomError(f"cardinality must be an integer >= 2, got {cardinality!r}")
        if n_partitions is not None and (
            not isinstance(n_partitions, int | np.integer) or n_partitions < 1
        ):
            raise LoomError(
                f"n_partitions must be a positive integer or None, got {n_partitions!r}"
            )
        if k_neighbors is not None and (
            not isinstance(k_neighbors, int | np.integer) or k_neighbors < 1
        ):
            raise LoomError(f"k_neighbors must be a positive integer or None, got {k_neighbors!r}")
        if not 0.0 <= radius_quantile <= 1.0:
            raise LoomError(f"radius_quantile must be in [0, 1], got {radius_quantile}")
        self.cardinality = int(cardinality)
        self.n_partitions = n_partitions
        self.radius = radius
        self.k_neighbors = k_neighbors
        self.base = base
        self.device = device
        self.seed = seed
        self.radius_quantile = radius_quantile
        self.min_partition_size = min_partition_size
        self.index_kind = index_kind
        self.fit_kwargs = dict(fit_kwargs or {})
        self.min_smoothness = min_smoothness
        self.lf_names: list[str] | None = None

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        L: Any,
        embeddings: Any,
        Y_dev: Any = None,
        lf_names: Sequence[str] | None = None,
        progress: bool | None = None,
    ) -> Liger:
        """Fit on L (n, m; -1 abstain) and embeddings (n, d).

        Y_dev: optional gold labels for rows of L (length n, -1 where unknown); used to tune
        the radii and the class balance. progress: bars (None: on in notebooks/terminals).
        """
        if isinstance(L, pd.DataFrame) and lf_names is None:
            lf_names = [str(c) for c in L.columns]
        L = check_L(L, self.cardinality, what="L")
        n, m = L.shape
        X = check_embeddings(embeddings, n)
        self.lf_names = list(lf_names) if lf_names is not None else [f"lf_{j}" for j in range(m)]
        if len(self.lf_names) != m:
            raise LoomError(f"lf_names has {len(self.lf_names)} names but L has {m} columns")
        y = None
        if Y_dev is not None:
            y = check_Y(Y_dev, n, self.cardinality, "Y_dev")
            if not (y >= 0).any():
                raise LoomError("Y_dev has no gold labels (all -1): pass None or label some rows")
        k = self.k_neighbors or 20
        if k > n - 1:
            raise LoomError(
                f"k_neighbors={k} but only {n - 1} other points exist: use k_neighbors <= {n - 1}"
            )
        dev = resolve_device(self.device)
        self.device_ = dev
        self.m_ = m
        self.k_ = k

        # 1. neighbours through the shared index, then per-LF radius and extension
        self.index_ = build_index(X, dev, self.index_kind)
        self.L_train_ = L
        self.embeddings_digest_ = embeddings_digest(X)
        S, ids = neighbours(
            self.index_, X, k, exclude_self=True, progress=progress, desc="Liger kNN"
        )
        self.smoothness_ = label_smoothness(L, ids, self.cardinality)
        self.radius_ = self._choose_radius(L, S, ids, y)
        self.extended_L = self._extend(L, S, ids)
        self.coverage_before_ = (L >= 0).mean(0)
        self.coverage_after_ = (self.extended_L >= 0).mean(0)

        # 2. partitions and one label model per part (global model as fallback)
        parts = self.n_partitions or int(np.clip(n // 4000, 1, 8))
        if self.n_partitions is None and not self._smooth_enough():
            parts = 1  # parts of an embedding that ignores the labels only split the data
        parts = min(parts, n)
        self.centroids_, self.partitions_ = spherical_kmeans(X, parts, seed=self.seed)
        fit_kw = {"seed": self.seed, "progress": progress, **self.fit_kwargs}
        if y is not None:
            fit_kw.setdefault("Y_dev", y[y >= 0])
        # The label models learn from the LFs' own votes; the extended votes are evidence at
        # prediction time. (Fitted on extended votes, models that read abstentions as class
        # evidence mistake "dense region, every LF extended" for a class: measured 0.52 vs
        # 0.78 accuracy on clustered data, see docs/smoothing.md.)
        self.global_model_ = self._fit_model(L, fit_kw)
        min_size = self.min_partition_size or max(100, 20 * m)
        self.models_: list[Any] = []
        self.model_columns_: list[np.ndarray | None] = []
        self.fallbacks_: dict[int, str] = {}
        rows = []
        glob_acc = np.asarray(self.global_model_.get_weights(), float)
        for p in range(parts):
            idx = np.nonzero(self.partitions_ == p)[0]
            Lp = L[idx]
            voting = np.nonzero((Lp >= 0).any(0))[0]
            reason = None
            if len(idx) < min_size:
                reason = f"only {len(idx)} rows (< min_partition_size={min_size})"
            elif len(voting) < min(3, m):
                reason = f"only {len(voting)} LF(s) vote there"
            if reason is not None:
                self.fallbacks_[p] = reason
                self.models_.append(None)
                self.model_columns_.append(None)
                acc = glob_acc
            else:
                silent = [self.lf_names[j] for j in range(m) if j not in set(voting.tolist())]
                if silent:
                    self.fallbacks_[p] = f"LF(s) {silent[:5]} never vote there: fitted without them"
                model = self._fit_model(Lp[:, voting], fit_kw)
                self.models_.append(model)
                self.model_columns_.append(voting)
                acc = np.full(m, np.nan)
                acc[voting] = model.get_weights()
            for j in range(m):
                rows.append(
                    {
                        "partition": p,
                        "lf": self.lf_names[j],
                        "accuracy": float(acc[j]),
                        "size": int(len(idx)),
                        "coverage": float((self.extended_L[idx, j] >= 0).mean())
                        if len(idx)
                        else 0.0,
                    }
                )
        self.partition_accuracies_ = pd.DataFrame(rows)
        if self.fallbacks_:
            detail = "; ".join(f"partition {p}: {r}" for p, r in self.fallbacks_.items())
            warnings.warn(
                f"Liger fallbacks ({detail}). Parts that are too small or where fewer than 3 LFs "
                "vote use the global label model; LFs silent in a part are left out of its model "
                "(accuracy NaN in partition_accuracies_). Use fewer n_partitions to avoid this.",
                stacklevel=2,
            )
        return self

    def _fit_model(self, L: np.ndarray, fit_kw: dict[str, Any]) -> Any:
        return fit_label_model(self.base, self.cardinality, self.device, L, **fit_kw)

    def _check_fitted(self) -> None:
        if not hasattr(self, "extended_L"):
            raise LoomError("Liger is not fitted yet: call fit(L, embeddings) first")

    def _nearest_voted(
        self, L_src: np.ndarray, S: np.ndarray, ids: np.ndarray, j: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per query row: similarity and vote of the nearest neighbour that voted with LF j."""
        votes = np.where(ids >= 0, L_src[np.maximum(ids, 0), j], ABSTAIN)
        voted = votes >= 0
        first = voted.argmax(1)
        has = voted.any(1)
        r = np.arange(len(ids))
        sim = np.where(has, S[r, first], -np.inf)
        vote = np.where(has, votes[r, first], ABSTAIN)
        return sim, vote

    def _smooth_enough(self) -> bool:
        """Whether neighbours share labels beyond chance (always True when not checked)."""
        sm = self.smoothness_
        if self.min_smoothness is None or self.radius is not None or not np.isfinite(sm["kappa"]):
            return True  # not asked, radius given, or not measurable (all votes one class)
        return bool(sm["kappa"] >= max(self.min_smoothness, 3.0 * sm["se"]))

    def _choose_radius(
        self, L: np.ndarray, S: np.ndarray, ids: np.ndarray, y: np.ndarray | None
    ) -> np.ndarray:
        m = L.shape[1]
        if self.radius is not None:
            r = (
                np.broadcast_to(np.asarray(self.radius, dtype=np.float64), (m,)).copy()
                if np.ndim(self.radius) == 0
                else np.asarray(self.radius, dtype=np.float64)
            )
            if r.shape != (m,) or not np.isfinite(r).all() or (r < 0).any() or (r > 2).any():
                raise LoomError(
                    f"radius must be a cosine distance in [0, 2] or one per LF ({m} values), got {self.radius!r}"
                )
            return r
        radius = np.zeros(m)
        self.radius_scores_: dict[str, Any] = {}
        sm = self.smoothness_
        if y is None and not self._smooth_enough():
            warnings.warn(
                f"Liger: neighbours in this embedding do not share labels beyond chance "
                f"(kappa {sm['kappa']:.3f} +- {sm['se']:.3f} over {sm['pairs']} voted rows, "
                f"needed >= {self.min_smoothness}): vote extension is off and one label "
                "model is fitted (no partitions). Use embeddings that group your classes, "
                "pass Y_dev to tune radii on gold, or set "
                "radius= / min_smoothness=None to extend anyway.",
                stacklevel=3,
            )
            return radius
        for j in range(m):
            sim, vote = self._nearest_voted(L, S, ids, j)
            own = L[:, j] >= 0
            ref = sim[own & np.isfinite(sim)]
            if len(ref) < 2:
                radius[j] = 0.0  # too few votes to learn a scale: no extension
                continue
            if y is None:
                radius[j] = max(0.0, 1.0 - float(np.quantile(ref, 1.0 - self.radius_quantile)))
                continue
            # tune on gold: pick the threshold whose newly covered gold rows gain most (right - wrong)
            cand = np.unique(np.quantile(ref, [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]))
            gold = (y >= 0) & ~own & (vote >= 0)
            best_t, best_score = np.inf, 0.0
            for t in sorted(cand, reverse=True):
                new = gold & (sim >= t)
                score = float((vote[new] == y[new]).sum() - (vote[new] != y[new]).sum())
                if score > best_score:
                    best_t, best_score = t, score
            self.radius_scores_[self.lf_names[j]] = best_score
            radius[j] = 0.0 if not np.isfinite(best_t) else max(0.0, 1.0 - float(best_t))
        return radius

    def _extend(self, L: np.ndarray, S: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = L.copy()
        for j in range(L.shape[1]):
            if self.radius_[j] <= 0:
                continue
            sim, vote = self._nearest_voted(self.L_train_, S, ids, j)
            take = (L[:, j] < 0) & (vote >= 0) & (1.0 - sim <= self.radius_[j] + 1e-7)
            out[take, j] = vote[take]
        return out

    # -- inference ---------------------------------------------------------------------------
    def extend(self, L: Any, embeddings: Any) -> np.ndarray:
        """L with each LF's votes extended from its nearest voted training point within radius."""
        self._check_fitted()
        L = check_L(L, self.cardinality, what="L")
        if L.shape[1] != self.m_:
            raise LoomError(f"L has {L.shape[1]} LF columns but Liger was fitted on {self.m_}")
        X = check_embeddings(embeddings, len(L))
        if X.shape[1] != self.centroids_.shape[1]:
            raise LoomError(
                f"embeddings have dimension {X.shape[1]} but Liger was fitted on "
                f"{self.centroids_.shape[1]}: embed with the same model"
            )
        if np.array_equal(L, self.L_train_) and embeddings_digest(X) == self.embeddings_digest_:
            return self.extended_L.copy()  # the training rows themselves: their own extension
        S, ids = neighbours(self.index_, X, self.k_, exclude_self=False)
        return self._extend(L, S, ids)

    def predict_proba(self, L: Any, embeddings: Any) -> np.ndarray:
        """P(Y | extended votes) per row from the row's partition model, shape (n, k)."""
        Lx = self.extend(L, embeddings)
        X = check_embeddings(embeddings, len(Lx))
        part = assign_partitions(X, self.centroids_)
        probs = self.global_model_.predict_proba(Lx).astype(np.float64)
        for p, model in enumerate(self.models_):
            idx = np.nonzero(part == p)[0]
            if model is None or not len(idx):
                continue
            probs[idx] = model.predict_proba(Lx[idx][:, self.model_columns_[p]])
        return probs

    def predict(
        self, L: Any, embeddings: Any, return_probs: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Most likely class per row; -1 where the extended votes are all abstains or tied.

        With return_probs: (predictions, probabilities), as Snorkel's predict.
        """
        Lx = self.extend(L, embeddings)
        probs = self.predict_proba(L, embeddings)
        pred = predictions(probs, Lx)
        return (pred, probs) if return_probs else pred

    # -- reports ---------------------------------------------------------------------------
    @property
    def coverage_(self) -> pd.DataFrame:
        """Per LF: coverage before and after vote extension, and the radius used."""
        self._check_fitted()
        return pd.DataFrame(
            {
                "lf": self.lf_names,
                "before": self.coverage_before_,
                "after": self.coverage_after_,
                "radius": self.radius_,
            }
        )

    def to_workspace(self, ws: Any, run: str) -> None:
        """Write the `coverage` and `partition_accuracy` tables of a `label` run."""
        save_smoothing(ws, run, self)


def check_label_matrix(L: Any, cardinality: int | None, what: str = "L") -> np.ndarray:
    """Deprecated: use `labeling.model.check_L` (the same check)."""
    warnings.warn(
        "labeling.liger.check_label_matrix is deprecated and will be removed in the next "
        "release; use labeling.model.check_L",
        DeprecationWarning,
        stacklevel=2,
    )
    return check_L(L, cardinality, what=what)


#: Names that lived here before the split, and their new modules (deprecated here).
_MOVED = {
    "smooth": "labeling.smoothing",
    "spherical_kmeans": "labeling.partitions",
    "assign_partitions": "labeling.partitions",
    "default_index_kind": "labeling.neighbors",
    "build_index": "labeling.neighbors",
    "neighbours": "labeling.neighbors",
    "check_embeddings": "labeling.neighbors",
    "agreement_kappa": "labeling.neighbors",
    "label_smoothness": "labeling.neighbors",
    "make_label_model": "labeling.smoother",
    "save_smoothing": "labeling.smoother",
}


def __getattr__(name: str) -> Any:
    """Old `labeling.liger.X` names moved to other modules: still found, with a warning."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _MOVED[name]
    warnings.warn(
        f"labeling.liger.{name} is deprecated and will be removed in the next release; "
        f"import it from {where}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(where), name)


__all__ = ["Liger"]
