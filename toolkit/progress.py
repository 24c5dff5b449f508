"""One rule for progress bars: `progress=None` means on in notebooks and terminals, off otherwise.

Every long-running public function takes `progress: bool | None = None`; older spellings
(`show_progress=`, `verbose=`) keep working for one release through `deprecated_progress`.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def resolve_progress(progress: bool | None) -> bool:
    """Whether to show a progress bar: the given value, else on in a notebook or terminal."""
    if progress is not None:
        return bool(progress)
    if in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def deprecated_progress(
    progress: bool | None, old_name: str, old_value: Any, where: str
) -> bool | None:
    """`progress` after honouring an old keyword (`show_progress`, `verbose`) with a warning."""
    if old_value is None:
        return progress
    warnings.warn(
        f"{where}({old_name}=...) is deprecated and will be removed in the next release; "
        "use progress=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return bool(old_value) if progress is None else progress
