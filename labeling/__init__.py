"""loom labeling: labeling functions, appliers, LF analysis and label models.

Votes are -1 (abstain) or 0..k-1 everywhere. Snorkel users switch by changing imports.
"""

from labeling.embroid import Embroid
from labeling.label_model import (
    ABSTAIN,
    BaseLabelModel,
    DawidSkene,
    LabelModel,
    MajorityLabelVoter,
    MajorityVoter,
    TripletModel,
    get_label_model,
)
from labeling.liger import Liger

__all__ = [
    "ABSTAIN",
    "BaseLabelModel",
    "DawidSkene",
    "Embroid",
    "LabelModel",
    "Liger",
    "MajorityLabelVoter",
    "MajorityVoter",
    "TripletModel",
    "get_label_model",
]
