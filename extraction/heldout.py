"""Honest scores for candidate functions: held-out precision and recall on the sample.

Induced functions (`extraction.candidates.induce`) are written from the sample's values, so
their precision on that same sample is optimistic. Here the sample documents are split into
k folds; for each fold, functions are induced from the other folds only and scored on the
held-out fold. A function of the run is scored on the folds whose training part induced the
same code (so never on a document it was induced from); one no training part induced, or
that abstains on every held-out document, gets no held-out score (NaN). Functions not fitted to the sample's values (label, structure,
LLM-written) keep their sample scores as held-out ones: LLM-written functions saw at most
two sample documents in their prompt, so theirs is slightly optimistic, and label/structure
functions read the very signals the sample values were chosen from (docs/extraction.md).

`add_heldout` adds `heldout_precision` / `heldout_recall` beside the in-sample `precision` /
`recall`; `extraction.functions.apply_functions` uses held-out precision as the ensemble's
prior accuracy of each function.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from extraction.candidates import induce, normalize
from toolkit.metrics import precision_recall_f1

log = logging.getLogger(__name__)

#: folds over the sample documents (fewer when the sample is smaller)
FOLDS = 3


def fold_of(n: int, folds: int = FOLDS) -> list[int]:
    """The fold of each of `n` sample documents (round-robin; 0 folds below 2 documents)."""
    k = min(folds, n)
    return [i % k for i in range(n)] if k >= 2 else [0] * n


def heldout_induced(
    sandbox: Any,
    raws: list[str],
    values: list[str],
    codes: list[str],
    max_induced: int,
    folds: int = FOLDS,
) -> list[tuple[float, float] | None]:
    """(held-out precision, recall) of each induced function `codes[j]` for one attribute
    whose sample values are `values` (None where no training part induced it)."""
    fold = fold_of(len(raws), folds)
    k = max(fold) + 1
    if k < 2:
        return [None] * len(codes)
    held: dict[str, list[int]] = {}  # code -> the held-out folds it may be scored on
    for j in range(k):
        train = [(raws[i], v) for i, v in enumerate(values) if fold[i] != j and v]
        for _, code in induce(train, max_induced):
            held.setdefault(code, []).append(j)
    wanted = [c for c in dict.fromkeys(codes) if c in held]
    if not wanted:
        return [None] * len(codes)
    outs, failures = sandbox.run({str(n): c for n, c in enumerate(wanted)}, raws)
    scores: dict[str, tuple[float, float]] = {}
    for n, code in enumerate(wanted):
        if failures.get(str(n)) or outs.get(str(n)) is None:
            continue
        docs = [i for i in range(len(raws)) if fold[i] in held[code]]
        got = [normalize(outs[str(n)][i]) for i in docs]
        gold = [normalize(values[i]) for i in docs]
        if not any(got):  # abstains on every held-out document: nothing to score
            continue
        correct = sum(1 for g, t in zip(got, gold) if g and g == t)
        p, r, _ = precision_recall_f1(correct, sum(map(bool, got)), sum(map(bool, gold)))
        scores[code] = (p, r)
    return [scores.get(c) for c in codes]


def add_heldout(
    sandbox: Any,
    funcs: pd.DataFrame,
    raws: list[str],
    sample_vals: dict[str, list[str]],
    max_induced: int,
    folds: int = FOLDS,
) -> pd.DataFrame:
    """`funcs` (scored by `score_candidates`) with `heldout_precision` / `heldout_recall`."""
    f = funcs.copy()
    f["heldout_precision"] = f.get("precision", pd.Series(0.0, index=f.index)).astype(float)
    f["heldout_recall"] = f.get("recall", pd.Series(0.0, index=f.index)).astype(float)
    for a, values in sample_vals.items():
        rows = f.index[f["attribute"].eq(a) & f["source"].eq("induced") & f["code"].ne("")]
        if len(rows) == 0:
            continue
        got = heldout_induced(sandbox, raws, values, list(f.loc[rows, "code"]), max_induced, folds)
        for i, s in zip(rows, got):
            f.loc[i, ["heldout_precision", "heldout_recall"]] = s if s else (np.nan, np.nan)
    log.debug(
        "held-out precision of induced functions: %s",
        f.loc[f["source"].eq("induced"), "heldout_precision"].round(2).tolist(),
    )
    return f


def prior_accuracy(row: Any) -> float:
    """The ensemble's prior accuracy of a function (a row of the functions table): its
    held-out precision; 0.5 (no information) for an induced function no training part
    induced; its sample F1 in a checkpoint written before held-out scores existed."""
    if "heldout_precision" not in row:
        return float(row.get("sample_f1", 0.0))
    p = row["heldout_precision"]
    return 0.5 if p is None or pd.isna(p) else float(p)
