"""loom labeling: labeling functions, appliers, LF analysis and label models.

Votes are -1 (abstain) or 0..k-1 everywhere. Snorkel users switch by changing imports.
"""

from labeling.analysis import LFAnalysis
from labeling.apply import ApplierMetadata, DaskLFApplier, LFApplier, LFError, PandasLFApplier
from labeling.arguments import UnknownArgumentError
from labeling.constants import ABSTAIN
from labeling.embroid import Embroid
from labeling.lf import (
    LabelingFunction,
    Preprocessor,
    keyword_lf,
    labeling_function,
    model_lf,
    preprocessor,
    prompt_lf,
    regex_lf,
    threshold_lf,
)
from labeling.liger import Liger
from labeling.metrics import filter_unlabeled_dataframe, metric_score
from labeling.model import (
    AutoLabelModel,
    BaseLabelModel,
    DawidSkene,
    LabelDtypeError,
    LabelMatrixError,
    LabelModel,
    MajorityLabelVoter,
    MajorityVoter,
    MultiLabelModel,
    TripletModel,
    from_sparse_votes,
    get_label_model,
    to_sparse_votes,
)

__all__ = [
    "ABSTAIN",
    "ApplierMetadata",
    "AutoLabelModel",
    "BaseLabelModel",
    "DaskLFApplier",
    "DawidSkene",
    "Embroid",
    "LFAnalysis",
    "LFApplier",
    "LFError",
    "LabelDtypeError",
    "LabelMatrixError",
    "LabelModel",
    "LabelingFunction",
    "Liger",
    "MajorityLabelVoter",
    "MajorityVoter",
    "MultiLabelModel",
    "PandasLFApplier",
    "Preprocessor",
    "TripletModel",
    "UnknownArgumentError",
    "filter_unlabeled_dataframe",
    "from_sparse_votes",
    "get_label_model",
    "keyword_lf",
    "labeling_function",
    "metric_score",
    "model_lf",
    "preprocessor",
    "prompt_lf",
    "regex_lf",
    "threshold_lf",
    "to_sparse_votes",
]
