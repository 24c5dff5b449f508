"""Checks of what a user gives a `VectorIndex`: ids, k, and build and search-time parameters.

Each check raises a LoomError naming the bad input and what to give instead, so a typo in a
parameter name or an id that cannot be stored is never silently ignored or changed. A
parameter of another kind of index (one params dict shared between kinds) is logged as unused.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

log = logging.getLogger(__name__)

#: Parameters each kind of index takes when it is built (docs/embedding.md, docs/scale.md).
BUILD_PARAMS = {
    "flat": {"gpu_float16"},
    "ivf": {"nlist", "nprobe", "train_size", "gpu_float16"},
    "ivfpq": {
        "nlist",
        "nprobe",
        "pq_m",
        "pq_bits",
        "refine",
        "refine_k_factor",
        "train_size",
        "gpu_float16",
    },
    "hnsw": {"M", "ef_construction", "ef_search"},
}
#: Search-time settings `tune()` changes on a built index, per kind.
TUNE_PARAMS = {
    "flat": set(),
    "ivf": {"nprobe"},
    "ivfpq": {"nprobe", "refine_k_factor"},
    "hnsw": {"ef_search"},
}
#: Parameters that may be None (the index then picks them from the number of vectors).
AUTO = {"nlist", "pq_m"}
BOOLS = {"refine", "gpu_float16"}
#: The id search() returns where it found no vector.
MISSING_ID = -1


def check_positive_int(what: str, x: Any) -> int:
    if not is_whole_number(x) or x < 1:
        raise LoomError(f"{what} must be a positive integer, got {x!r}")
    return int(x)


def check_value(name: str, value: Any) -> None:
    """One parameter's value: a positive integer, except the switches and the k factor."""
    if name in AUTO and value is None:
        return
    if name in BOOLS:
        if not isinstance(value, bool | np.bool_):
            raise LoomError(f"{name}={value!r}: give True or False")
    elif name == "refine_k_factor":
        ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
        if not ok or not np.isfinite(value) or value < 1:
            raise LoomError(f"refine_k_factor={value!r}: give a number >= 1")
    elif name == "pq_bits":
        if not is_whole_number(value) or not 1 <= value <= 16:
            raise LoomError(f"pq_bits={value!r}: give an integer from 1 to 16")
    else:
        check_positive_int(name, value)


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The build parameters of a `kind` index, each a known parameter of a valid value."""
    allowed = BUILD_PARAMS[kind]
    unknown = sorted(set(params) - set().union(*BUILD_PARAMS.values()))
    if unknown:
        raise LoomError(
            f"VectorIndex(kind={kind!r}) got unknown parameters {unknown}: "
            f"{kind!r} takes {sorted(allowed) or 'none'} (docs/embedding.md)"
        )
    unused = sorted(set(params) - allowed)
    if unused:
        log.warning(
            "VectorIndex(kind=%r) does not use %s (parameters of other kinds); it takes %s",
            kind,
            unused,
            sorted(allowed) or "none",
        )
    for name, value in params.items():
        check_value(name, value)
    return dict(params)


def check_tune(kind: str, params: dict[str, Any]) -> None:
    """tune()'s settings: search-time ones of this kind of index, of valid values."""
    everything = set().union(*TUNE_PARAMS.values())
    unknown = sorted(set(params) - everything)
    if unknown:
        raise LoomError(f"tune() got {unknown}: search-time settings are {sorted(everything)}")
    other = sorted(set(params) - TUNE_PARAMS[kind])
    if other:
        log.warning(
            "tune(): a kind=%r index does not use %s; its search-time settings are %s",
            kind,
            other,
            sorted(TUNE_PARAMS[kind]) or "none (exact search)",
        )
    for name, value in params.items():
        check_value(name, value)


def check_ids(ids: Any, n: int) -> np.ndarray:
    """`ids` as n int64 ids, one per vector; never -1, which search() returns for 'none'."""
    arr = np.asarray(ids)
    if arr.shape != (n,) or not (
        np.issubdtype(arr.dtype, np.integer)
        or (arr.dtype == object and all(map(is_whole_number, arr)))
    ):
        raise LoomError(
            f"ids must be {n} integers, one per vector; got shape {arr.shape} dtype {arr.dtype}"
        )
    if arr.dtype == object or arr.dtype == np.uint64:
        info = np.iinfo(np.int64)
        big = [int(i) for i in arr if not info.min <= int(i) <= info.max]
        if big:
            raise LoomError(
                f"ids {big[:3]} do not fit in a signed 64-bit integer: give ids from "
                f"{info.min} to {info.max} (e.g. row numbers)"
            )
    out = arr.astype(np.int64)
    if (out == MISSING_ID).any():
        raise LoomError(
            f"id {MISSING_ID} is given for {int((out == MISSING_ID).sum())} vectors, but search() "
            f"returns {MISSING_ID} where it found no vector: use ids >= 0 (e.g. shift them by 1)"
        )
    return out
