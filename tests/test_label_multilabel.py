"""MultiLabelModel on synthetic multi-label votes (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest

from labeling import MajorityVoter, MultiLabelModel
from labeling.model import LabelMatrixError
from labeling.synthetic import make_multilabel


@pytest.fixture(scope="module")
def data():
    return make_multilabel(800, 12, 4, seed=2)


@pytest.fixture(scope="module")
def shared(data):
    return MultiLabelModel().fit(data["L"], n_epochs=50)


def test_multilabel_beats_per_label_majority_vote(data, shared):
    L, Y = data["L"], data["Y"]
    mv = [
        MajorityVoter(2).fit(L[:, :, c]).score(L[:, :, c], Y[:, c], tie_break_policy="random")
        for c in range(Y.shape[1])
    ]
    mv_acc = float(np.mean([s["accuracy"] for s in mv]))
    assert shared.score(L, Y)["accuracy"] > mv_acc + 0.02
    separate = MultiLabelModel(share_lfs=False).fit(L, n_epochs=50)
    assert separate.score(L, Y)["accuracy"] > mv_acc + 0.02
    assert separate.get_weights().shape == (4, 12)
    # shared reliability: one accuracy per LF, close to the truth
    assert np.abs(shared.get_weights() - data["acc"]).mean() < 0.03


def test_multilabel_outputs_and_list_input(data, shared):
    L = data["L"]
    probs = shared.predict_proba(L)
    assert probs.shape == (len(L), 4) and ((probs >= 0) & (probs <= 1)).all()
    as_list = [L[:, :, c] for c in range(4)]
    np.testing.assert_allclose(shared.predict_proba(as_list), probs)
    L2 = L.copy()
    L2[0, :, 1] = -1  # no LF votes on label 1 for row 0
    pred = shared.predict(L2)
    assert pred[0, 1] == -1 and set(np.unique(pred)) <= {-1, 0, 1}
    # each label keeps its own prevalence
    np.testing.assert_allclose(shared.priors_[:, 1], data["prevalence"], atol=0.06)


def test_multilabel_bad_input_is_named():
    with pytest.raises(LabelMatrixError, match=r"\(n, m, K\)"):
        MultiLabelModel().fit(np.zeros((5, 3), dtype=int))
    with pytest.raises(LabelMatrixError, match="-1 \\(abstain\\)"):
        MultiLabelModel().fit(np.full((5, 3, 2), 2))
