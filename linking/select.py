"""From candidate pairs to matches: the threshold ("auto" or given) and the cardinality.

`candidates` of a two-table link are (left_row, right_row, score) with every left row's best
few right rows (for one_to_many: every right row's best few left rows). `choose_threshold`
turns threshold="auto" into a number with the score mixture and says how sure it is;
`select_pairs` keeps the pairs at or above it under the cardinality:

- None: the k best right rows of each left row (today's nearest-neighbour behaviour),
- "many_to_one": each left row its best right row (several left rows may share one),
- "one_to_many": each right row its best left row (a left row may get several),
- "one_to_one": greedy by score, every left and right row used at most once.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from linking.config import AUTO
from linking.decide import ScoreMixture, expected_quality
from linking.search import one_to_one

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["left_row", "right_row", "score", "rank"]
#: a mixture of fewer candidate scores than this gets a warning: with few rows (or every
#: duplicate an exact copy, whose scores are left out of the fit) its "match" mode may be the
#: more alike non-matches (e.g. names sharing a suffix such as "Corp")
FEW_MIXTURE_SCORES = 200


def best_per(pairs: pd.DataFrame, col: str, k: int) -> pd.DataFrame:
    """The k highest-scoring pairs of each value of `col` (ties: by the other row)."""
    other = "right_row" if col == "left_row" else "left_row"
    order = pairs.sort_values([col, "score", other], ascending=[True, False, True], kind="stable")
    return order.groupby(col, sort=False).head(k)


def with_rank(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs in left-row order, best first, with `rank` 1.. within each left row."""
    out = pairs.sort_values(
        ["left_row", "score", "right_row"], ascending=[True, False, True], kind="stable"
    ).reset_index(drop=True)
    out["rank"] = out.groupby("left_row").cumcount().to_numpy(np.int64) + 1
    return out[PAIR_COLUMNS]


def select_pairs(
    candidates: pd.DataFrame, threshold: float | None, k: int, cardinality: str | None
) -> pd.DataFrame:
    """The matches among `candidates` (see the module docstring): left_row, right_row, score,
    rank, ordered by left row then rank."""
    pairs = candidates[["left_row", "right_row", "score"]]
    if threshold is not None:
        pairs = pairs[pairs["score"] >= threshold]
    if cardinality == "one_to_one":
        pairs = one_to_one(pairs.reset_index(drop=True).assign(rank=1))
    elif cardinality == "one_to_many":
        pairs = best_per(pairs, "right_row", 1)
    else:
        pairs = best_per(pairs, "left_row", 1 if cardinality == "many_to_one" else k)
    out = with_rank(pairs)
    out["left_row"] = out["left_row"].astype(np.int64)
    out["right_row"] = out["right_row"].astype(np.int64)
    out["score"] = out["score"].astype(np.float32)
    return out


def first_scores(candidates: pd.DataFrame, col: str, n: int) -> np.ndarray:
    """Scores of the n best candidates of each `col` value (the mixture's sample)."""
    return best_per(candidates, col, n)["score"].to_numpy(np.float64)


def choose_threshold(
    threshold: Any, mixture: ScoreMixture | None, fallback: float | None
) -> tuple[float | None, str]:
    """(threshold in force, where it came from): the given one, the mixture's, or `fallback`
    when threshold="auto" but there is no mixture (too few scores, or one mode only)."""
    if threshold != AUTO:
        return threshold, "given"
    if mixture is None:
        return fallback, "fallback: too few or one-mode candidate scores for a mixture"
    chosen = round(mixture.threshold(), 4)
    if mixture.n < FEW_MIXTURE_SCORES:
        logger.warning(
            "threshold='auto' chose %s from only %d candidate scores (exact matches are left "
            "out of the fit; the 'match' mode, mean %.3g, may be alike non-matches): look at "
            "the pairs near it, or give threshold= (tune it on labelled pairs with "
            "linking.tune_threshold)",
            chosen, mixture.n, mixture.means[1],
        )  # fmt: skip
    return chosen, "mixture"


def quality_report(
    mixture: ScoreMixture | None, accepted: np.ndarray, best: np.ndarray
) -> dict[str, Any]:
    """Expected precision / recall of the accepted pairs under the mixture, and its shape."""
    if mixture is None:
        return {}
    p, r = expected_quality(mixture, accepted, best)
    return {"expected_precision": round(p, 4), "expected_recall": round(r, 4)} | {
        f"mixture_{k}": v for k, v in mixture.summary().items()
    }
