"""Checks of `loom label`'s inputs before any work (the LF file's cardinality, the text and
gold columns) and of a fitted label model's outcome (a model that could estimate nothing)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.errors import LoomError


def lf_file_cardinality(flag: int | None, declared: int | None, lfs_path: str) -> int | None:
    """The number of classes from --cardinality and the LF file's `cardinality`: they must
    agree when both are given."""
    if flag is not None and flag < 2:
        raise LoomError(f"--cardinality {flag}: give the number of classes, at least 2")
    if flag is not None and declared is not None and flag != declared:
        raise LoomError(
            f"--cardinality {flag} disagrees with `cardinality = {declared}` in --lfs "
            f"{lfs_path}: change one of them (or leave --cardinality out to use the file's)"
        )
    return flag if flag is not None else declared


def lf_frame(df: pd.DataFrame, text_column: str, source: str = "the data") -> pd.DataFrame:
    """`df` as the LFs see it: `text_column` also under the name `text` (what `x.text` reads)."""
    if text_column not in df.columns:
        raise LoomError(
            f"--text-column {text_column}: {source} has no column {text_column!r}; "
            f"its columns are {list(map(str, df.columns))}"
        )
    if text_column == "text":
        return df
    if "text" in df.columns:
        raise LoomError(
            f"--text-column {text_column}: the LFs read it as x.text, but {source} also has a "
            "column 'text' that this would hide from them; rename that column, or leave "
            "--text-column out to label the 'text' column"
        )
    return df.assign(text=df[text_column])


def gold_labels(
    df: pd.DataFrame, gold_column: str | None, cardinality: int | None, source: str = "the data"
) -> np.ndarray | None:
    """The gold column as int labels (-1 unknown), checked against the number of classes."""
    if gold_column is None:
        return None
    if gold_column not in df.columns:
        raise LoomError(
            f"--gold-column {gold_column}: {source} has no column {gold_column!r}; "
            f"its columns are {list(map(str, df.columns))}"
        )
    g = pd.to_numeric(df[gold_column], errors="coerce")
    if g.isna().any() or (g != np.round(g)).any() or (g < -1).any():
        raise LoomError(
            f"--gold-column {gold_column}: {source} must hold integer labels 0..k-1 there "
            "(-1 = unknown)"
        )
    gold = g.to_numpy().astype(np.int64)
    if cardinality is not None and gold.max() >= cardinality:
        row = int(np.argmax(gold >= cardinality))
        raise LoomError(
            f"--gold-column {gold_column}: {source} has label {gold[row]} (row {row}) but there "
            f"are {cardinality} classes (0..{cardinality - 1}, from --cardinality or the LF "
            "file's `cardinality`): fix the labels or the number of classes"
        )
    return gold


def degenerate_fit(
    label_model: str, weights: np.ndarray, L: np.ndarray, pred: np.ndarray
) -> list[str]:
    """What a fitted model's outcome shows it could not do: no votes, one accuracy for every
    LF (nothing estimated), or no row labeled although rows have votes."""
    voted = (L >= 0).any(axis=1)
    if not voted.any():
        return [
            "no LF voted on any row: check that the LFs read the right column (--text-column) "
            "and fire on this data"
        ]
    out = []
    w = np.asarray(weights, dtype=float)
    if label_model != "MajorityVoter" and len(w) > 1 and float(np.ptp(w)) < 1e-6:
        out.append(
            f"{label_model} could not estimate the LF accuracies: every LF got {w[0]:.3f} "
            "(the LFs overlap on too few rows to tell them apart); its labels are no better "
            "than a vote. Try --label-model MajorityVoter, more data or LFs that overlap"
        )
    if not (pred[voted] >= 0).any():
        out.append(
            f"{label_model} labeled none of the {int(voted.sum())} rows that have votes "
            "(every prediction is a tie); try --label-model MajorityVoter"
        )
    return out
