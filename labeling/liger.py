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

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import LoomError

ABSTAIN = -1


# ---- shared helpers (also used by labeling.embroid) -----------------------------------------
def check_embeddings(E: Any, n: int, what: str = "embeddings") -> np.ndarray:
    """Row-normalised float32 (n, d) embeddings, or a clear error (row count, NaN, zero rows)."""
    from toolkit.index import as_matrix

    if isinstance(E, pd.DataFrame):
        E = E.to_numpy()
    arr = np.asarray(E)
    if arr.ndim == 2 and arr.shape[0] != n:
        raise LoomError(
            f"{what} have {arr.shape[0]} rows but the label matrix has {n}: pass one embedding "
            "row per row of L, in the same order"
        )
    x = as_matrix(arr, what)
    norms = np.linalg.norm(x, axis=1)
    zero = np.nonzero(norms < 1e-12)[0]
    if len(zero):
        raise LoomError(
            f"{what} have {len(zero)} zero vectors (e.g. rows {zero[:5].tolist()}): cosine "
            "similarity is undefined for them; embed their text (empty texts embed to zero with "
            "some models) or drop those rows"
        )
    return x / norms[:, None]


def check_label_matrix(L: Any, cardinality: int | None, what: str = "L") -> np.ndarray:
    """An int64 (n, m) label matrix with votes -1 or 0..k-1 (the label models' own check)."""
    from labeling.label_model import check_L

    return check_L(L, cardinality, what=what)


def default_index_kind(n: int, device: str) -> str:
    """Exact search for small n or on a GPU; IVF on the CPU beyond 50k points."""
    return "flat" if n <= 50_000 or device.startswith("cuda") else "ivf"


def build_index(X: np.ndarray, device: str, kind: str | None = None) -> Any:
    """A cosine VectorIndex over unit rows X (ids 0..n-1)."""
    from toolkit.index import VectorIndex

    kind = kind or default_index_kind(len(X), device)
    return VectorIndex(X.shape[1], metric="cosine", kind=kind, device=device).add(X)


def neighbours(
    index: Any,
    Q: np.ndarray,
    k: int,
    exclude_self: bool,
    batch: int = 65536,
    progress: bool = False,
    desc: str = "kNN",
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of the k nearest indexed points per query row, in batches.

    With exclude_self, query row i is assumed to be indexed point i and is removed.
    """
    from tqdm.auto import tqdm

    n = len(Q)
    kk = k + 1 if exclude_self else k
    S = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    for s in tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False):
        sc, ix = index.search(Q[s : s + batch], kk)
        if exclude_self:
            rows = np.arange(s, s + len(ix))[:, None]
            is_self = ix == rows
            drop = np.where(is_self.any(1), is_self.argmax(1), kk - 1)
            keep = np.ones_like(ix, dtype=bool)
            keep[np.arange(len(ix)), drop] = False
            sc, ix = sc[keep].reshape(len(ix), k), ix[keep].reshape(len(ix), k)
        S[s : s + len(ix)], ids[s : s + len(ix)] = sc, ix
    return S, ids


def _agreement(a: np.ndarray, b: np.ndarray, cardinality: int) -> tuple[float, float]:
    """(observed, chance) agreement of two label vectors without abstains."""
    po = float((a == b).mean())
    pa = np.bincount(a, minlength=cardinality) / len(a)
    pb = np.bincount(b, minlength=cardinality) / len(b)
    return po, float((pa * pb).sum())


def agreement_kappa(a: np.ndarray, b: np.ndarray, cardinality: int) -> float:
    """Cohen's kappa of two vote vectors on the rows where both vote (nan if none)."""
    both = (a >= 0) & (b >= 0)
    if not both.any():
        return float("nan")
    po, pe = _agreement(a[both], b[both], cardinality)
    return 1.0 if pe >= 1.0 else (po - pe) / (1.0 - pe)


def label_smoothness(L: np.ndarray, ids: np.ndarray, cardinality: int) -> dict[str, float]:
    """Do neighbours share labels? Cohen's kappa between the majority vote of each voted row
    and that of its nearest voted neighbour (ids: (n, k) neighbour ids), with its standard
    error and the number of pairs. About 0 when the embedding carries no label information;
    nan when it cannot be judged (fewer than 2 pairs, or every voted row has one label)."""
    counts = np.stack([(L == c).sum(1) for c in range(cardinality)], 1)
    top = counts.max(1)
    unique = (counts == top[:, None]).sum(1) == 1
    mv = np.where((top > 0) & unique, counts.argmax(1), ABSTAIN)
    nb = np.where(ids >= 0, mv[np.maximum(ids, 0)], ABSTAIN)
    has = nb >= 0
    ok = (mv >= 0) & has.any(1)
    a, b = mv[ok], nb[ok, has[ok].argmax(1)]
    nan = {"kappa": float("nan"), "se": float("nan"), "pairs": int(len(a))}
    if len(a) < 2:
        return nan
    po, pe = _agreement(a, b, cardinality)
    if pe >= 1.0:
        return nan
    se = float(np.sqrt(po * (1.0 - po) / len(a)) / (1.0 - pe))
    return {"kappa": (po - pe) / (1.0 - pe), "se": se, "pairs": int(len(a))}


def make_label_model(base: Any, cardinality: int, device: str | None) -> Any:
    """A fresh label model: a name for `labeling.label_model.get_label_model` or a factory."""
    if callable(base) and not isinstance(base, str):
        return base(cardinality)
    from labeling.label_model import get_label_model

    kw = (
        {}
        if device is None or str(base).lower() in ("majorityvoter", "majority", "mv")
        else {"device": device}
    )
    return get_label_model(str(base), cardinality, **kw)


def _resolve_device(device: str | None) -> str:
    from toolkit.embed import resolve_device

    return resolve_device(device)


# ---- k-means ----------------------------------------------------------------------------------
def spherical_kmeans(
    X: np.ndarray, n_clusters: int, seed: int = 0, n_iter: int = 25, sample: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means on unit rows: (centroids (c, d), assignment (n,)); k-means++ start."""
    rng = np.random.default_rng(seed)
    n = len(X)
    if n_clusters < 1 or n_clusters > n:
        raise LoomError(f"n_partitions={n_clusters} must be between 1 and the number of rows {n}")
    T = X[rng.choice(n, sample, replace=False)] if n > sample else X
    C = np.empty((n_clusters, X.shape[1]), np.float32)
    C[0] = T[rng.integers(len(T))]
    best = T @ C[0]
    for c in range(1, n_clusters):
        d = np.clip(1.0 - best, 0, None) ** 2
        p = d / d.sum() if d.sum() > 0 else None
        C[c] = T[rng.choice(len(T), p=p)]
        best = np.maximum(best, T @ C[c])
    for _ in range(n_iter):
        a = (T @ C.T).argmax(1)
        new = np.zeros_like(C)
        for c in range(n_clusters):  # np.add.at is far slower for few clusters
            members = a == c
            if members.any():
                new[c] = T[members].sum(0)
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norms[:, 0] < 1e-12
        new = np.where(empty[:, None], C, new / np.maximum(norms, 1e-12))
        if np.allclose(new, C, atol=1e-6):
            C = new
            break
        C = new.astype(np.float32)
    return C, assign_partitions(X, C)


def assign_partitions(X: np.ndarray, C: np.ndarray, batch: int = 262_144) -> np.ndarray:
    """Nearest centroid (cosine) of every unit row."""
    out = np.empty(len(X), np.int64)
    for s in range(0, len(X), batch):
        out[s : s + batch] = (X[s : s + batch] @ C.T).argmax(1)
    return out


# ---- Liger ------------------------------------------------------------------------------------
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
        progress: bool = False,
    ) -> Liger:
        """Fit on L (n, m; -1 abstain) and embeddings (n, d).

        Y_dev: optional gold labels for rows of L (length n, -1 where unknown); used to tune
        the radii and the class balance.
        """
        if isinstance(L, pd.DataFrame) and lf_names is None:
            lf_names = [str(c) for c in L.columns]
        L = check_label_matrix(L, self.cardinality, "L")
        n, m = L.shape
        X = check_embeddings(embeddings, n)
        self.lf_names = list(lf_names) if lf_names is not None else [f"lf_{j}" for j in range(m)]
        if len(self.lf_names) != m:
            raise LoomError(f"lf_names has {len(self.lf_names)} names but L has {m} columns")
        y = None
        if Y_dev is not None:
            from labeling.label_model import check_Y

            y = check_Y(Y_dev, n, self.cardinality, "Y_dev")
            if not (y >= 0).any():
                raise LoomError("Y_dev has no gold labels (all -1): pass None or label some rows")
        k = self.k_neighbors or 20
        if k > n - 1:
            raise LoomError(
                f"k_neighbors={k} but only {n - 1} other points exist: use k_neighbors <= {n - 1}"
            )
        dev = _resolve_device(self.device)
        self.device_ = dev
        self.m_ = m
        self.k_ = k

        # 1. neighbours through the shared index, then per-LF radius and extension
        self.index_ = build_index(X, dev, self.index_kind)
        self.L_train_ = L
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
        model = make_label_model(self.base, self.cardinality, self.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*rows have no votes.*")
            model.fit(L, **fit_kw)
        return model

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
        L = check_label_matrix(L, self.cardinality, "L")
        if L.shape[1] != self.m_:
            raise LoomError(f"L has {L.shape[1]} LF columns but Liger was fitted on {self.m_}")
        X = check_embeddings(embeddings, len(L))
        if X.shape[1] != self.centroids_.shape[1]:
            raise LoomError(
                f"embeddings have dimension {X.shape[1]} but Liger was fitted on "
                f"{self.centroids_.shape[1]}: embed with the same model"
            )
        if len(L) == len(self.L_train_) and np.array_equal(L, self.L_train_):
            return self.extended_L.copy()
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
        """Most likely class per row; -1 where the extended votes are all abstains or tied."""
        Lx = self.extend(L, embeddings)
        probs = self.predict_proba(L, embeddings)
        pred = probs.argmax(1).astype(np.int64)
        top = np.sort(probs, axis=1)
        pred[(top[:, -1] - top[:, -2]) < 1e-6] = ABSTAIN
        pred[(Lx < 0).all(1)] = ABSTAIN
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


def save_smoothing(ws: Any, run: str, model: Any) -> None:
    """Write a fitted Liger or Embroid's `coverage` and `partition_accuracy` tables to a run."""
    cov = model.coverage_
    ws.save_table(run, "coverage", cov[["lf", "before", "after"]].reset_index(drop=True))
    pa = model.partition_accuracies_
    ws.save_table(
        run,
        "partition_accuracy",
        pa[["partition", "lf", "accuracy", "size"]].reset_index(drop=True),
    )


def smooth(
    method: str,
    L: Any,
    cardinality: int,
    embeddings: Any = None,
    texts: Sequence[str] | None = None,
    lf_names: Sequence[str] | None = None,
    Y_dev: Any = None,
    ws: Any = None,
    run: str | None = None,
    embedder: str | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Smooth a label matrix with "liger" or "embroid": (probs (n, k), preds (n,), fitted model).

    Embeddings come from `embeddings` or are computed from `texts` with the shared embedder
    (`embedder` name, default MiniLM); Embroid also gets a TF-IDF/SVD space when texts are
    given (50 or more). With `ws` and `run`, the `coverage` and
    `partition_accuracy` tables are written to that run (for `loom label --smooth`).
    """
    method = str(method).lower()
    if method not in ("liger", "embroid"):
        raise LoomError(f"--smooth {method!r}: use 'liger' or 'embroid'")
    if isinstance(L, pd.DataFrame) and lf_names is None:
        lf_names = [str(c) for c in L.columns]
    if embeddings is None:
        if texts is None:
            raise LoomError(f"{method} needs embeddings or texts to embed")
        from toolkit.embed import get_embedder

        embeddings = get_embedder(embedder, device=kwargs.get("device")).encode(
            list(texts), show_progress=progress, cache=ws
        )
    if method == "liger":
        model: Any = Liger(cardinality=cardinality, **kwargs).fit(
            L, embeddings, Y_dev=Y_dev, lf_names=lf_names, progress=progress
        )
        preds, probs = model.predict(L, embeddings, return_probs=True)
    else:
        from labeling.embroid import Embroid, tfidf_svd_embeddings

        spaces, names = [embeddings], [embedder or "minilm"]
        if texts is not None and len(texts) >= 50:
            spaces.append(tfidf_svd_embeddings(list(texts), 256))
            names.append("tfidf-svd")
        model = Embroid(cardinality=cardinality, **kwargs)
        probs, preds = model.fit_predict(
            L, spaces, Y_dev=Y_dev, lf_names=lf_names, space_names=names, progress=progress
        )
    if ws is not None and run is not None:
        save_smoothing(ws, run, model)
    return probs, preds, model
