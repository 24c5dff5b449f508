"""Small checks of user-given values shared by every package."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_whole_number(x: Any) -> bool:
    """Whether x is an integer, Python's or numpy's, and not a bool (True is not a count)."""
    return isinstance(x, int | np.integer) and not isinstance(x, bool)
