"""Input checks of the label models: label matrices, gold labels and their errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labeling.arguments import whole_number_at_least
from labeling.constants import ABSTAIN
from toolkit.errors import LoomError


class LabelMatrixError(LoomError, ValueError):
    """A label matrix (or labels) with a bad shape or values."""


class LabelDtypeError(LoomError, TypeError):
    """A label matrix that does not hold integers."""


def check_shape(shape: tuple[int, int], m: int | None, what: str = "L") -> None:
    """A label matrix's (n, m) is not empty and has the fitted model's m columns."""
    n, mm = shape
    if n == 0 or mm == 0:
        raise LabelMatrixError(
            f"{what} is empty (shape {shape}): apply at least one LF to at least one row"
        )
    if m is not None and mm != m:
        raise LabelMatrixError(
            f"{what} has {mm} LF columns but the model was fitted on {m}: apply the same LFs in the same order"
        )


def check_L(
    L: Any, cardinality: int | None = None, m: int | None = None, what: str = "L"
) -> np.ndarray:
    """Validate a label matrix and return it as int64 (n, m), or raise a clear error."""
    if type(L).__module__.startswith("scipy.sparse"):
        raise LabelMatrixError(
            f"{what} is a scipy.sparse matrix, but this needs a dense label matrix (-1 = "
            f"abstain): densify it with labeling.from_sparse_votes({what}), or use LabelModel / "
            "MajorityVoter, which take sparse votes"
        )
    if isinstance(L, pd.DataFrame):
        L = L.to_numpy()
    if hasattr(L, "detach"):  # torch tensor
        L = L.detach().cpu().numpy()
    arr = np.asarray(L)
    if arr.ndim != 2:
        raise LabelMatrixError(
            f"{what} must be a 2-D array (n data points x m labeling functions), got shape "
            f"{arr.shape}; for a single LF use L.reshape(-1, 1)"
        )
    if arr.dtype.kind not in "iu":
        if (
            arr.dtype.kind == "f"
            and arr.size
            and np.isfinite(arr).all()
            and (arr == np.round(arr)).all()
        ):
            hint = f"convert it with {what}.astype(int)"
        else:
            hint = "label matrices hold integer votes: -1 (abstain) or 0..k-1"
        raise LabelDtypeError(f"{what} has dtype {arr.dtype}, expected integers; {hint}")
    check_shape(arr.shape, m, what)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < ABSTAIN:
        col = int(np.nonzero((arr < ABSTAIN).any(0))[0][0])
        raise LabelMatrixError(
            f"{what} has value {lo} (e.g. in column {col}); votes must be -1 (abstain) or 0..k-1"
        )
    if cardinality is not None and hi >= cardinality:
        col = int(np.nonzero((arr >= cardinality).any(0))[0][0])
        raise LabelMatrixError(
            f"{what} has value {hi} (e.g. in column {col}) but cardinality is {cardinality}: "
            f"votes must be -1 (abstain) or 0..{cardinality - 1}. Pass the right cardinality, or if "
            "your LFs use 0 for abstain and 1..k for classes (old Snorkel), subtract 1"
        )
    return arr.astype(np.int64, copy=False)


def check_training_args(name: str, n_epochs: Any, lr: Any) -> None:
    """n_epochs a whole number >= 0 and lr a finite number > 0 (None = the model's default).

    A NaN or negative learning rate would otherwise fit "successfully" into NaN or
    reversed probabilities.
    """
    if n_epochs is not None and not whole_number_at_least(n_epochs, 0):
        raise LoomError(
            f"{name}.fit(n_epochs={n_epochs!r}): use a whole number >= 0, or None for the default"
        )
    if lr is not None and (
        isinstance(lr, bool)
        or not isinstance(lr, (int, float, np.integer, np.floating))
        or not np.isfinite(lr)
        or lr <= 0
    ):
        raise LoomError(
            f"{name}.fit(lr={lr!r}): use a finite learning rate > 0, or None for the default"
        )


def check_column_order(L: Any, lf_names: list[str] | None, what: str = "L") -> None:
    """A DataFrame L whose columns are the fitted LFs' names in another order is an error:
    votes are read by position, so it would silently score each LF with another's table."""
    if not isinstance(L, pd.DataFrame) or not lf_names:
        return
    cols = [str(c) for c in L.columns]
    if cols != list(lf_names) and sorted(cols) == sorted(lf_names):
        raise LabelMatrixError(
            f"{what} has the fitted LFs' columns in another order ({cols[:8]} vs "
            f"{list(lf_names)[:8]} in fit); votes are read by position: put the columns "
            "in the order of fit (model.lf_names)"
        )


def check_Y(Y: Any, n: int, cardinality: int | None, what: str = "Y") -> np.ndarray:
    """Validate gold labels (-1 = unknown allowed) of length n (cardinality None: any class >= 0)."""
    y = np.asarray(Y.to_numpy() if isinstance(Y, pd.Series) else Y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise LabelMatrixError(f"{what} must be a 1-D array of length {n}, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise LabelDtypeError(
                f"{what} has dtype {y.dtype}: gold labels must be integers 0..k-1, -1 where unknown"
            )
    if len(y) and (y.min() < -1 or (cardinality is not None and y.max() >= cardinality)):
        top = "k-1" if cardinality is None else cardinality - 1
        raise LabelMatrixError(
            f"{what} has labels outside 0..{top} (min {y.min()}, max {y.max()}): gold labels "
            "are 0..k-1, or -1 where unknown"
        )
    return y.astype(np.int64, copy=False)


__all__ = ["ABSTAIN", "LabelDtypeError", "LabelMatrixError", "check_L", "check_Y"]
