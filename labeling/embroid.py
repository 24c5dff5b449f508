"""Embroid: smooth the predictions of several sources with their neighbours' predictions.

Guha et al. 2023 ("Embroid: Unsupervised Prediction Smoothing Can Improve Few-Shot
Classification"). For every embedding space and every source (a prompted LM or an LF), a
sample gets a neighbourhood vote: the class that at least `threshold` of its k nearest
neighbours (itself excluded) were given by that source, else abstain. Original predictions
and neighbourhood votes go into one label model. Neighbours come from the shared
`toolkit.index.VectorIndex`, embeddings from `toolkit.embed` (or any user matrix).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.model import check_L, check_Y
from labeling.neighbors import agreement_kappa, build_index, check_embeddings, neighbours
from labeling.smoother import fit_label_model, predictions, save_smoothing
from toolkit.device import resolve_device
from toolkit.errors import LoomError

TFIDF_SVD = "tfidf-svd"


def tfidf_svd_embeddings(texts: Sequence[str], dim: int = 256, seed: int = 0) -> np.ndarray:
    """A cheap second embedding space: TF-IDF (words + bigrams) projected by truncated SVD (LSA).

    Returns unit rows float32 (n, dim'), dim' = min(dim, vocabulary - 1, n - 1).
    """
    from toolkit.lsa import lsa_vectors

    if isinstance(texts, str):
        raise LoomError("tfidf_svd_embeddings takes a list of texts, not one string")
    return lsa_vectors(texts, dim, analyzer="word", seed=seed)


def embed_texts(
    texts: Sequence[str], embedder: Any, device: str | None = None, cache: Any = None
) -> np.ndarray:
    """Embeddings of texts from one embedding function: None/name/URL for `toolkit.embed`,
    "tfidf-svd" or "tfidf-svd:DIM", or a callable texts -> (n, d) matrix."""
    if callable(embedder):
        return np.asarray(embedder(list(texts)))
    if isinstance(embedder, str) and embedder.startswith(TFIDF_SVD):
        _, _, dim = embedder.partition(":")
        return tfidf_svd_embeddings(texts, int(dim) if dim else 256)
    from toolkit.embed import get_embedder

    return get_embedder(embedder, device=device).encode(list(texts), cache=cache)


def neighbourhood_votes(
    P: np.ndarray, ids: np.ndarray, cardinality: int, threshold: float
) -> np.ndarray:
    """Per source: the class given to at least `threshold` of a row's neighbours, else -1.

    The fraction counts all k neighbours (abstains included), as in the reference.
    """
    n, m = P.shape
    k = ids.shape[1]
    out = np.full((n, m), ABSTAIN, np.int64)
    for j in range(m):
        nb = P[ids, j]  # (n, k)
        counts = np.stack([(nb == c).sum(1) for c in range(cardinality)], 1) / k
        best = counts.argmax(1)
        top = counts[np.arange(n), best]
        second = np.sort(counts, 1)[:, -2]
        ok = (top >= threshold - 1e-9) & (top > second) & (top > 0)
        out[ok, j] = best[ok]
    return out


class Embroid:
    """Prediction smoothing over one or more embedding spaces, combined by a label model.

    k_neighbors: neighbours per sample. embedders: embedding functions for
    `fit_predict(P, texts=...)` (names for `toolkit.embed.get_embedder`, "tfidf-svd", or
    callables); default [None (MiniLM), "tfidf-svd"]. base: label model name or factory.
    threshold: fraction of neighbours that must share a class (None: 0.5; a float or one
    per embedding space). min_kappa: a source's neighbourhood votes in a space are used only
    where they agree with the source's own predictions beyond chance (Cohen's kappa >=
    min_kappa): the smoothness that Embroid assumes, checked without gold (see `smoothness_`).
    cardinality: number of classes k (None: the largest class in P or Y_dev, + 1).
    """

    def __init__(
        self,
        k_neighbors: int = 10,
        embedders: Sequence[Any] | None = None,
        base: Any = "LabelModel",
        threshold: float | Sequence[float] | None = None,
        cardinality: int | None = None,
        device: str | None = None,
        seed: int = 0,
        index_kind: str | None = None,
        fit_kwargs: dict[str, Any] | None = None,
        min_kappa: float = 0.1,
    ) -> None:
        if not isinstance(k_neighbors, int | np.integer) or k_neighbors < 1:
            raise LoomError(f"k_neighbors must be a positive integer, got {k_neighbors!r}")
        if cardinality is not None and (
            not isinstance(cardinality, int | np.integer) or cardinality < 2
        ):
            raise LoomError(f"cardinality must be an integer >= 2 or None, got {cardinality!r}")
        self.k_neighbors = int(k_neighbors)
        self.embedders = list(embedders) if embedders is not None else None
        self.base = base
        self.threshold = threshold
        self.cardinality = cardinality
        self.device = device
        self.seed = seed
        self.index_kind = index_kind
        self.fit_kwargs = dict(fit_kwargs or {})
        self.min_kappa = float(min_kappa)

    def _thresholds(self, n_spaces: int) -> list[float]:
        t = 0.5 if self.threshold is None else self.threshold
        ts = [float(t)] * n_spaces if np.ndim(t) == 0 else [float(x) for x in t]  # type: ignore[union-attr]
        if len(ts) != n_spaces or not all(0.0 < x <= 1.0 for x in ts):
            raise LoomError(
                f"threshold must be in (0, 1], one value or one per embedding space ({n_spaces}), got {t!r}"
            )
        return ts

    def fit_predict(
        self,
        P: Any,
        embeddings_list: Sequence[Any] | Any = None,
        texts: Sequence[str] | None = None,
        Y_dev: Any = None,
        lf_names: Sequence[str] | None = None,
        space_names: Sequence[str] | None = None,
        progress: bool | None = None,
        cache: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed (probabilities (n, k), predictions (n,), -1 on ties/no votes).

        Probabilities first, as predict_proba; `predict(return_probs=True)` elsewhere returns
        (predictions, probabilities), as Snorkel does.

        P: (n, m) predictions of m sources, -1 = abstain. embeddings_list: one (n, d) matrix per
        embedding space (a single matrix is accepted too); and/or texts to embed with
        `embedders`. Y_dev (length n, -1 unknown) only sets the class balance.
        """
        if isinstance(P, pd.DataFrame) and lf_names is None:
            lf_names = [str(c) for c in P.columns]
        P0 = P.to_numpy() if isinstance(P, pd.DataFrame) else P
        if np.ndim(P0) == 1:
            P0 = np.asarray(P0).reshape(-1, 1)
        P = check_L(P0, self.cardinality, what="P")
        n, m = P.shape
        y = None if Y_dev is None else check_Y(Y_dev, n, self.cardinality, "Y_dev")
        # inferred: the largest class any source or gold label names, + 1
        top = max(int(P.max()), -1 if y is None else int(y.max()))
        k_cls = self.cardinality or max(2, top + 1)
        self.cardinality_ = k_cls
        self.lf_names = (
            list(lf_names) if lf_names is not None else [f"source_{j}" for j in range(m)]
        )
        if len(self.lf_names) != m:
            raise LoomError(f"lf_names has {len(self.lf_names)} names but P has {m} columns")

        spaces: list[np.ndarray] = []
        names: list[str] = []
        if embeddings_list is not None:
            if _one_matrix(embeddings_list):
                embeddings_list = [embeddings_list]
            for i, E in enumerate(embeddings_list):
                spaces.append(check_embeddings(E, n, f"embeddings_list[{i}]"))
                names.append(space_names[i] if space_names and i < len(space_names) else f"emb{i}")
        if texts is not None:
            if len(texts) != n:
                raise LoomError(f"texts has {len(texts)} entries but P has {n} rows")
            embedders = self.embedders if self.embedders is not None else [None, TFIDF_SVD]
            for e in embedders:
                label = _embedder_label(e)
                spaces.append(
                    check_embeddings(
                        embed_texts(texts, e, self.device, cache), n, f"embeddings of {label}"
                    )
                )
                names.append(label)
        elif self.embedders and embeddings_list is None:
            raise LoomError(
                "Embroid has embedders but fit_predict got no texts: pass texts=... or embeddings_list"
            )
        if not spaces:
            raise LoomError(
                "Embroid needs at least one embedding space: pass embeddings_list or texts"
            )
        if self.k_neighbors > n - 1:
            raise LoomError(
                f"k_neighbors={self.k_neighbors} but only {n - 1} other samples exist: "
                f"use k_neighbors <= {n - 1}"
            )
        ts = self._thresholds(len(spaces))
        dev = resolve_device(self.device)

        blocks = [P]
        source_names = list(self.lf_names)
        smooth_rows: list[dict[str, Any]] = []
        self.neighbor_votes_: list[np.ndarray] = []
        for X, t, name in zip(spaces, ts, names, strict=True):
            index = build_index(X, dev, self.index_kind)
            _, ids = neighbours(
                index,
                X,
                self.k_neighbors,
                exclude_self=True,
                progress=progress,
                desc=f"Embroid kNN ({name})",
            )
            V = neighbourhood_votes(P, ids, k_cls, t)
            for j in range(m):
                kappa = agreement_kappa(P[:, j], V[:, j], k_cls)
                used = bool(kappa >= self.min_kappa)
                smooth_rows.append(
                    {"space": name, "lf": self.lf_names[j], "kappa": kappa, "used": used}
                )
                if used:
                    blocks.append(V[:, j : j + 1])
                    source_names.append(f"{self.lf_names[j]}@{name}")
                else:
                    V[:, j] = ABSTAIN
            self.neighbor_votes_.append(V)
        self.space_names_ = names
        self.smoothness_ = pd.DataFrame(smooth_rows)
        dropped = self.smoothness_[~self.smoothness_["used"]]
        if len(dropped):
            warnings.warn(
                f"Embroid: {len(dropped)} of {len(self.smoothness_)} neighbourhood sources are not "
                f"smooth (kappa < min_kappa={self.min_kappa}) and were left out, e.g. "
                f"{(dropped['lf'] + '@' + dropped['space']).tolist()[:4]}; see smoothness_",
                stacklevel=2,
            )
        self.L_aug_ = np.concatenate(blocks, axis=1)
        self.source_names_ = source_names

        fit_kw = {"seed": self.seed, "progress": progress, **self.fit_kwargs}
        if y is not None:
            fit_kw.setdefault("Y_dev", y[y >= 0])
        self.model_ = fit_label_model(
            self.base, k_cls, self.device, self.L_aug_, lf_names=self.source_names_, **fit_kw
        )
        probs = np.asarray(self.model_.predict_proba(self.L_aug_), dtype=np.float64)
        pred = predictions(probs, self.L_aug_)
        self.probs_, self.preds_ = probs, pred
        return probs, pred

    # -- reports ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "L_aug_"):
            raise LoomError("Embroid is not fitted yet: call fit_predict(P, embeddings_list) first")

    @property
    def coverage_(self) -> pd.DataFrame:
        """Per source: coverage of its own votes and of its votes or any neighbourhood vote."""
        self._check_fitted()
        m = len(self.lf_names)
        P = self.L_aug_[:, :m]
        anyv = P >= 0
        for V in self.neighbor_votes_:
            anyv |= V >= 0
        return pd.DataFrame(
            {"lf": self.lf_names, "before": (P >= 0).mean(0), "after": anyv.mean(0)}
        )

    @property
    def partition_accuracies_(self) -> pd.DataFrame:
        """Label-model accuracy of each original and neighbourhood source (one partition, 0)."""
        self._check_fitted()
        acc = np.asarray(self.model_.get_weights(), float)
        return pd.DataFrame(
            {
                "partition": 0,
                "lf": self.source_names_,
                "accuracy": acc,
                "size": len(self.L_aug_),
                "coverage": (self.L_aug_ >= 0).mean(0),
            }
        )

    def to_workspace(self, ws: Any, run: str) -> None:
        """Write the `coverage` and `partition_accuracy` tables of a `label` run."""
        save_smoothing(ws, run, self)


def _one_matrix(E: Any) -> bool:
    """Whether embeddings_list is one (n, d) matrix (array, DataFrame, tensor, or a list of
    rows) rather than a list of matrices, one per embedding space."""
    if isinstance(E, list | tuple):
        return len(E) > 0 and np.ndim(E[0]) == 1
    return np.ndim(E) == 2


def _embedder_label(e: Any) -> str:
    if e is None:
        return "minilm"
    if isinstance(e, str):
        return e
    return getattr(e, "__name__", type(e).__name__)


__all__ = [
    "Embroid",
    "agreement_kappa",
    "embed_texts",
    "neighbourhood_votes",
    "tfidf_svd_embeddings",
]
