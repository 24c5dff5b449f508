"""Keyword-argument checks shared by labeling's public functions that take `**kwargs`.

A keyword nobody reads is an error that names it and the close matches, never silently
dropped: `fit(L, n_epoch=500)` must not run as if nothing had been given.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number


class UnknownArgumentError(LoomError, TypeError):
    """A keyword argument that the function does not take (or does not support yet)."""


def check_kwargs(
    where: str,
    given: Iterable[str],
    accepted: Iterable[str],
    unsupported: Mapping[str, str] | None = None,
) -> None:
    """Raise UnknownArgumentError for the first name in `given` that is not in `accepted`.

    where: the function as the user calls it, e.g. "LabelModel.fit()". unsupported: names
    that are known (e.g. Snorkel's) but not supported here -> the reason, said instead of
    "unexpected".
    """
    accepted = sorted(set(accepted))
    for name in given:
        if name in accepted:
            continue
        if unsupported and name in unsupported:
            raise UnknownArgumentError(f"{where} does not support {name}=: {unsupported[name]}")
        close = difflib.get_close_matches(name, accepted, n=3, cutoff=0.6)
        hint = (
            f"did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else f"it accepts {', '.join(accepted) or 'no keyword arguments'}"
        )
        raise UnknownArgumentError(f"{where} got an unexpected argument {name!r}; {hint}")


def keyword_names(func: Callable[..., Any], skip: Iterable[str] = ()) -> list[str]:
    """Names of the keyword-passable parameters of `func` (not *args/**kwargs, not `skip`)."""
    skip = set(skip)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in kinds and p.name not in skip and p.name != "self"
    ]


__all__ = ["UnknownArgumentError", "check_kwargs", "keyword_names"]


def whole_number_at_least(value: Any, minimum: int) -> bool:
    """Whether value is an integer (Python or numpy, not a bool) >= minimum."""
    return is_whole_number(value) and value >= minimum
