"""Labeling functions (Snorkel style) and preprocessors: the classes and their decorators.

An LF returns -1 (abstain) or a class 0..k-1. A row LF gets one data point `x` (fields as
attributes and keys); a vectorized LF gets a whole DataFrame batch and returns an int array.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import LoomError


class Row(dict):
    """One data point: `x.text` and `x["text"]` both work (like the pandas Series Snorkel passes)."""

    __slots__ = ("name",)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"data point has no field {key!r}; fields: {list(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name":
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def copy(self) -> Row:
        r = Row(self)
        r.name = getattr(self, "name", None)
        return r


def memo_key(value: Any) -> Any:
    """A hashable key equal for equal content, all fields included (lists, dicts, arrays).

    Types are part of the key (1, 1.0 and True differ), dict and set order is not. Raises
    TypeError for a value with no content key (the caller then does not memoize).
    """
    if isinstance(value, Mapping):
        items = [(memo_key(k), memo_key(v)) for k, v in value.items()]
        return ("mapping", frozenset(items))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(memo_key(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, frozenset(memo_key(v) for v in value))
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return ("ndarray", value.shape, tuple(memo_key(v) for v in value.ravel().tolist()))
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (pd.Series, pd.DataFrame, pd.Index)):
        return (type(value).__name__, memo_key(value.to_numpy()), memo_key(list(value.index)))
    hash(value)  # TypeError for other unhashable values
    return (type(value).__name__, value)


class Preprocessor:
    """Maps a data point to a new one (e.g. adds a field) before LFs see it; optional memoization.

    With memoize, a data point seen before (same content in every field, see `memo_key`)
    gets the stored result; `memoize_key(x)` replaces the content key.
    """

    def __init__(
        self,
        name: str,
        f: Callable[[Any], Any],
        memoize: bool = False,
        memoize_key: Callable[[Any], Any] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.name = name
        self._f = f
        self.memoize = memoize
        self._key = memoize_key
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self._cache_size = cache_size

    def _memo_key(self, x: Any) -> Any:
        if self._key is not None:
            return self._key(x)
        if isinstance(x, pd.Series):
            x = x.to_dict()
        return memo_key(x)

    def __call__(self, x: Any) -> Any:
        if not self.memoize:
            return self._run(x)
        try:
            key = self._memo_key(x)
            hash(key)
        except TypeError:
            return self._run(x)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        out = self._run(x)
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def _run(self, x: Any) -> Any:
        if isinstance(x, Row):
            x = x.copy()
        out = self._f(x)
        if out is None:
            raise LoomError(
                f"preprocessor {self.name!r} returned None: it must return the data point"
            )
        return out

    def reset_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return f"Preprocessor {self.name}"


def preprocessor(
    name: str | None = None,
    memoize: bool = False,
    memoize_key: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[[Any], Any]], Preprocessor]:
    """Decorator: `@preprocessor(memoize=True) def add_len(x): x.n = len(x.text); return x`."""
    if callable(name):  # used as @preprocessor without parentheses
        f = name
        return Preprocessor(f.__name__, f)  # type: ignore[return-value]

    def wrap(f: Callable[[Any], Any]) -> Preprocessor:
        return Preprocessor(name or f.__name__, f, memoize, memoize_key)

    return wrap


class LabelingFunction:
    """A named heuristic that votes a class (0..k-1) or abstains (-1).

    Row LFs: `f(x, **resources)` on one data point (after the preprocessors `pre`).
    Vectorized LFs (`vectorized=True`): `f(df, **resources)` on a DataFrame, returns n ints.
    """

    def __init__(
        self,
        name: str,
        f: Callable[..., Any],
        resources: Mapping[str, Any] | None = None,
        pre: Sequence[Callable[[Any], Any]] | None = None,
        vectorized: bool = False,
    ) -> None:
        if not name or not isinstance(name, str):
            raise LoomError(f"a labeling function needs a non-empty string name, got {name!r}")
        self.name = name
        self._f = f
        self._resources = dict(resources or {})
        self._pre = list(pre or [])
        self.vectorized = vectorized
        if vectorized and self._pre:
            raise LoomError(
                f"LF {name!r}: preprocessors work on single data points; a vectorized LF gets the "
                "whole DataFrame, so transform the DataFrame before applying instead"
            )

    @property
    def func(self) -> Callable[..., Any]:
        """The wrapped function (as the user wrote it, before preprocessors)."""
        return self._f

    def __call__(self, x: Any) -> Any:
        for pre in self._pre:
            x = pre(x)
        return self._f(x, **self._resources)

    def __repr__(self) -> str:
        kind = "vectorized " if self.vectorized else ""
        return f"{kind}LabelingFunction {self.name}, Preprocessors: {self._pre}"


def labeling_function(
    name: str | None = None,
    resources: Mapping[str, Any] | None = None,
    pre: Sequence[Callable[[Any], Any]] | None = None,
    vectorized: bool = False,
) -> Callable[[Callable[..., Any]], LabelingFunction]:
    """Decorator turning a function into a LabelingFunction (same arguments as Snorkel's)."""
    if callable(name):
        raise LoomError("use @labeling_function() with parentheses")

    def wrap(f: Callable[..., Any]) -> LabelingFunction:
        return LabelingFunction(name or f.__name__, f, resources, pre, vectorized)

    return wrap


def check_label(label: int, name: str) -> int:
    """`label` as an int class 0..k-1 (or -1), or an error naming the LF."""
    if not isinstance(label, (int, np.integer)) or label < -1:
        raise LoomError(f"LF {name!r}: label must be an int class 0..k-1 (or -1), got {label!r}")
    return int(label)
