"""Checks of a fitted label model: is it able to tell the classes apart at all?

A model that cannot estimate anything from the votes (every LF accuracy at chance, uniform
probabilities, no prediction) must say so instead of finishing with 0.5 everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labeling.constants import ABSTAIN

#: Estimated LF accuracies within this distance of 1/k count as "at chance".
CHANCE_TOLERANCE = 0.02
#: Probabilities whose max - min is below this count as uniform.
UNIFORM_TOLERANCE = 1e-3
#: The checks of predict_proba/predict run on at most this many rows (a uniform sample).
CHECK_ROWS = 50_000

#: The command-line names of the label models to suggest instead.
_CLI_NAMES = {"LabelModel": "label_model", "MajorityVoter": "majority"}


def degenerate_symptoms(
    model: Any, L: np.ndarray, seed: int = 0, voting: np.ndarray | None = None
) -> list[str]:
    """What is degenerate about a fitted `model` on its training matrix `L` (empty if nothing).

    Checked: every voting LF's estimated accuracy within CHANCE_TOLERANCE of 1/k; uniform
    probabilities on every row with a vote; predict() giving -1 for every row.
    voting: voting_lfs(L) when the caller has it already (saves a pass over L).
    """
    from labeling.model.sparse import rows_without_votes, voting_lfs

    k = model.cardinality
    voting = voting_lfs(L) if voting is None else voting
    if not voting.any():
        return ["no LF votes on any row"]
    rows = L
    sampled = L.shape[0] > CHECK_ROWS
    if sampled:
        pick = np.random.default_rng(seed).choice(L.shape[0], CHECK_ROWS, replace=False)
        rows = L[np.sort(pick)]
    where = f" (checked on a sample of {CHECK_ROWS:,} rows)" if sampled else ""
    out = []
    acc = np.asarray(model.get_weights(), dtype=np.float64)[voting]
    if np.all(np.abs(acc - 1.0 / k) <= CHANCE_TOLERANCE):
        out.append(f"every estimated LF accuracy is at chance (1/k = {1.0 / k:.2f})")
    covered = ~rows_without_votes(rows)
    pred, probs = model.predict(rows, return_probs=True)  # one posterior pass for both checks
    if covered.any():
        probs = np.asarray(probs, dtype=np.float64)[covered]
        if np.all(probs.max(1) - probs.min(1) < UNIFORM_TOLERANCE):
            out.append(f"the probabilities are uniform (1/k) on every row with a vote{where}")
    if np.all(pred == ABSTAIN):
        out.append(f"predict() gives -1 (no label) for every row{where}")
    return out


def degenerate_message(
    model: Any, L: np.ndarray, seed: int = 0, voting: np.ndarray | None = None
) -> str:
    """A warning naming the model, the symptoms and the alternatives; "" when the fit is fine."""
    symptoms = degenerate_symptoms(model, L, seed, voting)
    if not symptoms:
        return ""
    name = type(model).__name__
    reason = model.degenerate_reason()
    others = [m for m in ("LabelModel", "MajorityVoter") if m != name]
    cli = " or ".join(_CLI_NAMES[m] for m in others)
    return (
        f"{name} cannot estimate anything from this label matrix: {'; '.join(symptoms)}."
        f"{' ' + reason if reason else ''} Try another label model ({' or '.join(others)}; "
        f"on the command line --label-model {cli}) and check the LFs' coverage and overlaps "
        "with LFAnalysis."
    )


__all__ = ["CHANCE_TOLERANCE", "degenerate_message", "degenerate_symptoms"]
