"""Constants shared by every labeling module."""

from __future__ import annotations

#: The vote of a labeling function that does not label a data point.
ABSTAIN = -1

__all__ = ["ABSTAIN"]
