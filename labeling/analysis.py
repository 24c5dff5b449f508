"""LF analysis: polarity, coverage, overlaps, conflicts, (with gold) empirical accuracy,
dependent LF pairs and the LFs to look at (never fire, below chance, near-duplicates)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.dependencies import MIN_STRENGTH, dependencies_from_overlap, overlap_matrix
from labeling.model import LabelModel, check_L, check_Y

#: LFs that agree on at least this share of the rows where either votes are near-duplicates.
DUPLICATE_AGREEMENT = 0.95


class LFAnalysis:
    """Statistics of a label matrix L (n x m, -1 = abstain), per LF and overall."""

    def __init__(self, L: Any, lfs: Sequence[Any] | None = None) -> None:
        names = None
        if isinstance(L, pd.DataFrame):
            names = [str(c) for c in L.columns]
        self.L = check_L(L)
        if lfs is not None:
            names = [lf if isinstance(lf, str) else lf.name for lf in lfs]
            if len(names) != self.L.shape[1]:
                raise ValueError(f"{len(names)} LFs given but L has {self.L.shape[1]} columns")
        self.names = names or [f"lf_{j}" for j in range(self.L.shape[1])]
        self._votes = self.L >= 0

    # ---- whole-matrix ------------------------------------------------------------------
    def label_coverage(self) -> float:
        """Share of rows with at least one vote."""
        return float(self._votes.any(1).mean())

    def label_overlap(self) -> float:
        """Share of rows with at least two votes."""
        return float((self._votes.sum(1) >= 2).mean())

    def label_conflict(self) -> float:
        """Share of rows with at least two different votes."""
        return float(self._row_conflict().mean())

    def _row_conflict(self) -> np.ndarray:
        L = np.where(self._votes, self.L, np.iinfo(np.int64).max)
        lo = L.min(1)
        hi = np.where(self._votes, self.L, -1).max(1)
        return (hi >= 0) & (lo != hi)

    # ---- per LF ------------------------------------------------------------------------
    def lf_polarities(self) -> list[list[int]]:
        """Sorted distinct votes of each LF."""
        return [sorted(int(v) for v in np.unique(col[col >= 0])) for col in self.L.T]

    def lf_coverages(self) -> np.ndarray:
        """Share of rows each LF votes on."""
        return self._votes.mean(0)

    def lf_overlaps(self, normalize_by_coverage: bool = False) -> np.ndarray:
        """Share of rows where an LF votes together with another LF."""
        others = self._votes.sum(1, keepdims=True) >= 2
        ov = (self._votes & others).mean(0)
        return self._norm(ov, normalize_by_coverage)

    def lf_conflicts(self, normalize_by_coverage: bool = False) -> np.ndarray:
        """Share of rows where an LF votes and some other LF votes differently."""
        conf = (self._votes & self._row_conflict()[:, None]).mean(0)
        return self._norm(conf, normalize_by_coverage)

    def _norm(self, x: np.ndarray, by_cov: bool) -> np.ndarray:
        if not by_cov:
            return x
        cov = self.lf_coverages()
        return np.where(cov > 0, x / np.maximum(cov, 1e-12), 0.0)

    def lf_empirical_accuracies(self, Y: Any) -> np.ndarray:
        """Accuracy of each LF on the rows where it votes (NaN for an LF that never votes)."""
        y = check_Y(Y, len(self.L), None)
        known = (y >= 0)[:, None] & self._votes
        hits = ((self.L == y[:, None]) & known).sum(0)
        tot = known.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, hits / tot, np.nan)

    def lf_summary(self, Y: Any = None, est_weights: Any = None) -> pd.DataFrame:
        """One row per LF: j, polarity, coverage, overlaps, conflicts [, correct, incorrect, emp_acc] [, est_acc]."""
        df = pd.DataFrame(
            {
                "j": np.arange(self.L.shape[1]),
                "polarity": self.lf_polarities(),
                "coverage": self.lf_coverages(),
                "overlaps": self.lf_overlaps(),
                "conflicts": self.lf_conflicts(),
            },
            index=pd.Index(self.names, name="lf"),
        )
        if Y is not None:
            y = check_Y(Y, len(self.L), None)
            known = (y >= 0)[:, None] & self._votes
            hits = ((self.L == y[:, None]) & known).sum(0)
            df["correct"] = hits
            df["incorrect"] = known.sum(0) - hits
            with np.errstate(invalid="ignore", divide="ignore"):
                df["emp_acc"] = np.where(
                    known.sum(0) > 0, hits / np.maximum(known.sum(0), 1), np.nan
                )
        if est_weights is not None:
            w = np.asarray(est_weights, dtype=float).reshape(-1)
            if len(w) != len(df):
                raise ValueError(f"est_weights has {len(w)} entries for {len(df)} LFs")
            df["est_acc"] = w
        return df

    def _cardinality(self, cardinality: int | None) -> int:
        if cardinality is not None:
            return int(cardinality)
        return max(int(self.L.max()) + 1, 2)

    def dependencies(
        self, cardinality: int | None = None, min_strength: float = MIN_STRENGTH
    ) -> pd.DataFrame:
        """LF pairs that depend on each other beyond the class, learned from the votes alone.

        One row per pair, strongest first: lf_i, lf_j, i, j, strength (partial canonical
        correlation not explained by the class, 0..1; see labeling.dependencies), threshold
        (what it had to exceed) and agreement (share of the rows both vote on where they vote
        the same). Pass the pairs to `LabelModel.fit(L, dependencies=...)`, or use
        dependencies="auto" there. cardinality: default the largest vote + 1.
        """
        k = self._cardinality(cardinality)
        check_L(self.L, k)
        if not 0.0 < min_strength < 1.0:
            raise ValueError(f"min_strength must be in (0, 1), got {min_strength}")
        table = dependencies_from_overlap(overlap_matrix(self.L, k), k, len(self.L), min_strength)
        both = (self._votes[:, table["i"]] & self._votes[:, table["j"]]).sum(0)
        same = ((self.L[:, table["i"]] == self.L[:, table["j"]]) & self._votes[:, table["i"]]).sum(
            0
        )
        out = pd.DataFrame(
            {
                "lf_i": [self.names[i] for i in table["i"]],
                "lf_j": [self.names[j] for j in table["j"]],
                "i": table["i"],
                "j": table["j"],
                "strength": table["strength"],
                "threshold": table["threshold"],
                "agreement": np.where(both > 0, same / np.maximum(both, 1), np.nan),
            }
        )
        return out

    def warnings(
        self,
        est_weights: Any = None,
        cardinality: int | None = None,
        duplicate_agreement: float = DUPLICATE_AGREEMENT,
    ) -> pd.DataFrame:
        """The LFs to look at, one row per finding: lf, j, issue, value, detail.

        issue is one of "never_fires" (coverage 0), "below_chance" (estimated accuracy
        under 1/k: the LF votes against the class more often than not; value = the
        accuracy), "near_duplicate" (agrees with an earlier LF on at least
        `duplicate_agreement` of the rows where either votes; value = that share; keep one
        of the two, or model them together with LabelModel.fit(dependencies=...)).
        est_weights: estimated LF accuracies (e.g. a fitted model's get_weights()); None
        fits a LabelModel with dependencies="auto" on L to get them. An empty frame means
        nothing to report.
        """
        k = self._cardinality(cardinality)
        m = self.L.shape[1]
        rows = []
        cov = self.lf_coverages()
        for j in np.nonzero(cov == 0)[0]:
            rows.append((j, "never_fires", 0.0, "never votes on any row"))
        if est_weights is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the findings below say what matters
                est_weights = LabelModel(k).fit(self.L, dependencies="auto").get_weights()
        w = np.asarray(est_weights, dtype=float).reshape(-1)
        if len(w) != m:
            raise ValueError(f"est_weights has {len(w)} entries for {m} LFs")
        for j in np.nonzero((w < 1.0 / k) & (cov > 0))[0]:
            rows.append(
                (
                    j,
                    "below_chance",
                    float(w[j]),
                    f"estimated accuracy {w[j]:.3f} < 1/k = {1 / k:.3f}",
                )
            )
        votes = self._votes.astype(np.float64)
        both = votes.T @ votes
        same = np.zeros((m, m))
        for y in range(k):
            hit = (self.L == y).astype(np.float64)
            same += hit.T @ hit
        either = votes.sum(0)[:, None] + votes.sum(0)[None, :] - both
        with np.errstate(invalid="ignore", divide="ignore"):
            agree = np.where(either > 0, same / either, 0.0)
        for j in range(m):
            earlier = np.nonzero(agree[j, :j] >= duplicate_agreement)[0]
            if len(earlier):
                i = int(earlier[np.argmax(agree[j, earlier])])
                rows.append(
                    (
                        j,
                        "near_duplicate",
                        float(agree[j, i]),
                        f"agrees with {self.names[i]} on {agree[j, i]:.1%} of the rows either votes",
                    )
                )
        out = pd.DataFrame(rows, columns=["j", "issue", "value", "detail"])
        out.insert(0, "lf", [self.names[j] for j in out["j"]])
        return out.sort_values(["j", "issue"], ignore_index=True)

    def __repr__(self) -> str:
        return (
            f"LFAnalysis({self.L.shape[0]} rows x {self.L.shape[1]} LFs, coverage "
            f"{self.label_coverage():.3f}, overlap {self.label_overlap():.3f}, conflict "
            f"{self.label_conflict():.3f})"
        )

    def _repr_html_(self) -> str:
        s = self.lf_summary()
        head = (
            f"<p>{self.L.shape[0]} rows x {self.L.shape[1]} LFs: coverage {self.label_coverage():.3f}, "
            f"overlap {self.label_overlap():.3f}, conflict {self.label_conflict():.3f}</p>"
        )
        return head + s.to_html(float_format=lambda v: f"{v:.3f}")


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """lf_summary as the workspace's `lf_summary` table (lf column, polarity as text)."""
    out = summary.reset_index().drop(columns=["j"])
    out["polarity"] = out["polarity"].map(lambda p: ",".join(str(v) for v in p))
    return out
