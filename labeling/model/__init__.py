"""Label models: turn a label matrix L (n rows x m LFs, -1 = abstain) into probabilistic labels.

All models share one interface (`BaseLabelModel`): fit, predict_proba, predict, score,
get_weights, save/load. The probabilistic ones (`LabelModel`, `DawidSkene`, `TripletModel`)
share one parameterisation: a class balance p(y) and, per LF, a table
P(lf_i = a | Y = y) over a in {abstain, 0..k-1}, so abstaining is evidence too (an LF that
only ever votes one class is informative through when it fires). Work is vectorised in torch
(one-hot blocks times small matrices), on the GPU when there is one.

Sparse votes: LabelModel and MajorityVoter also take a scipy.sparse CSR label matrix that
stores vote + 1 (abstain = not stored); `to_sparse_votes(L)` converts a dense one.
"""

from __future__ import annotations

from typing import Any

from labeling.arguments import UnknownArgumentError, check_kwargs, keyword_names
from labeling.constants import ABSTAIN
from labeling.model.auto import AutoLabelModel
from labeling.model.base import MODELS, TIE_POLICIES, BaseLabelModel, register_model
from labeling.model.checks import LabelDtypeError, LabelMatrixError, check_L, check_Y
from labeling.model.conditional import ConditionalModel
from labeling.model.dawid_skene import DawidSkene
from labeling.model.diagnostics import degenerate_message, degenerate_symptoms
from labeling.model.label_model import LabelModel
from labeling.model.majority import MajorityLabelVoter, MajorityVoter
from labeling.model.multilabel import MultiLabelModel, check_multilabel_L
from labeling.model.sparse import check_sparse_L, from_sparse_votes, to_sparse_votes
from labeling.model.triplet import TripletModel
from labeling.model.votes import unique_rows
from toolkit.errors import LoomError

_ALIASES = {
    "auto": "AutoLabelModel",
    "majority": "MajorityVoter",
    "mv": "MajorityVoter",
    "ds": "DawidSkene",
    "triplet": "TripletModel",
    "flyingsquid": "TripletModel",
    "snorkel": "LabelModel",
    "label_model": "LabelModel",
    "dawid_skene": "DawidSkene",
    "triplet_model": "TripletModel",
    "majority_voter": "MajorityVoter",
}


def get_label_model(name: str, cardinality: int, **kw: Any) -> BaseLabelModel:
    """An unfitted label model by name: LabelModel, DawidSkene, TripletModel, MajorityVoter,
    or "auto" (AutoLabelModel: fits them all and keeps the best on `fit(L, Y_dev=...)`'s gold
    labels, else by held-out likelihood of the votes; never below majority vote on Y_dev).

    Names are case-insensitive; snake_case (label_model, majority) and short aliases (mv, ds,
    triplet) work too. `kw` are the model's constructor arguments (e.g. device=); an unknown
    one is an UnknownArgumentError naming the close matches.
    """
    aliases = {k.lower(): k for k in MODELS}
    aliases.update(_ALIASES)
    key = aliases.get(str(name).lower())
    if key is None:
        raise LoomError(f"unknown label model {name!r}: choose one of {sorted(MODELS)}")
    cls = MODELS[key]
    check_kwargs(f"{key}()", kw, keyword_names(cls.__init__, skip=("cardinality",)))
    return cls(cardinality=cardinality, **kw)


__all__ = [
    "ABSTAIN",
    "MODELS",
    "AutoLabelModel",
    "TIE_POLICIES",
    "BaseLabelModel",
    "ConditionalModel",
    "DawidSkene",
    "LabelDtypeError",
    "LabelMatrixError",
    "LabelModel",
    "MajorityLabelVoter",
    "MajorityVoter",
    "MultiLabelModel",
    "TripletModel",
    "UnknownArgumentError",
    "check_L",
    "check_Y",
    "check_multilabel_L",
    "check_sparse_L",
    "from_sparse_votes",
    "degenerate_message",
    "degenerate_symptoms",
    "get_label_model",
    "register_model",
    "to_sparse_votes",
    "unique_rows",
]
