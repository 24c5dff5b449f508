"""What the smoothers (Liger, Embroid) share beyond neighbours: the label model they fit,
predictions from probabilities, and the workspace tables they write."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from labeling.constants import ABSTAIN
from labeling.model import get_label_model


def make_label_model(base: Any, cardinality: int, device: str | None) -> Any:
    """A fresh label model: a name for `labeling.model.get_label_model` or a factory."""
    if callable(base) and not isinstance(base, str):
        return base(cardinality)
    kw = (
        {}
        if device is None or str(base).lower() in ("majorityvoter", "majority", "mv")
        else {"device": device}
    )
    return get_label_model(str(base), cardinality, **kw)


def fit_label_model(
    base: Any, cardinality: int, device: str | None, L: np.ndarray, **fit_kw: Any
) -> Any:
    """`make_label_model(...)` fitted on L, without the warning about rows without votes
    (smoothers expect those: extension and neighbourhood votes leave gaps by design)."""
    model = make_label_model(base, cardinality, device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rows have no votes.*")
        model.fit(L, **fit_kw)
    return model


def predictions(probs: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Most likely class per row; -1 where the top two classes tie or every vote in L abstains."""
    pred = probs.argmax(1).astype(np.int64)
    top = np.sort(probs, axis=1)
    pred[(top[:, -1] - top[:, -2]) < 1e-6] = ABSTAIN
    pred[(L < 0).all(1)] = ABSTAIN
    return pred


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
