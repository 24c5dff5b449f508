"""Issue 22: get_label_model("auto"): never below majority vote on a dev set, and says why."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from labeling import BaseLabelModel, MajorityVoter, get_label_model
from labeling.model import AutoLabelModel, LabelMatrixError
from labeling.synthetic import make_correlated, make_synthetic
from toolkit.errors import LoomError

# (name, generator settings, training rows): the rest of the rows are the dev set
SETTINGS = [
    ("independent", dict(m=12, cardinality=2, group_sizes=()), 6_000),
    ("correlated", dict(m=12, cardinality=2, group_sizes=(4,), correlation=0.9), 6_000),
    ("correlated k=3", dict(m=12, cardinality=3, group_sizes=(3,), correlation=0.7), 6_000),
    # few rows, LFs all alike: the learned models are noisier than majority vote
    ("mv wins", dict(m=8, cardinality=2, group_sizes=(), acc_range=(0.7, 0.7)), 200),
    ("mv wins k=3", dict(m=8, cardinality=3, group_sizes=(), acc_range=(0.6, 0.6)), 150),
]


def _split(settings, n_train, seed):
    d = make_correlated(n_train + 2_000, **settings, seed=seed)
    L, Y = d["L"], d["Y"]
    return L[:n_train], L[n_train:], Y[n_train:]


@pytest.mark.parametrize("name,settings,n_train", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_auto_is_never_below_majority_vote_on_the_dev_set(name, settings, n_train):
    k = settings["cardinality"]
    mv_won = False
    for seed in range(3):
        L, L_dev, Y_dev = _split(settings, n_train, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auto = get_label_model("auto", k).fit(L, Y_dev=Y_dev, L_dev=L_dev)
        mv = MajorityVoter(k).fit(L)
        ours = auto.score(L_dev, Y_dev, tie_break_policy="random")["accuracy"]
        base = mv.score(L_dev, Y_dev, tie_break_policy="random")["accuracy"]
        assert ours >= base, (name, seed, auto.selection_)
        sel = auto.selection_.set_index("model")["dev_accuracy"]
        assert ours == pytest.approx(sel[auto.chosen_])
        mv_won |= bool((sel.drop("MajorityVoter") < sel["MajorityVoter"]).all())
    if name.startswith("mv wins"):  # the setting really has every learned model below MV
        assert mv_won


def test_auto_with_gold_labels_for_the_training_rows():
    d = make_correlated(4_000, 10, 2, group_sizes=(3,), correlation=0.9, seed=1)
    y = np.full(4_000, -1)
    y[:400] = d["Y"][:400]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = get_label_model("auto", 2).fit(d["L"], Y_dev=y)
    mv = MajorityVoter(2).fit(d["L"])
    score = auto.score(d["L"], y, tie_break_policy="random")["accuracy"]  # -1 = unknown
    assert score >= mv.score(d["L"], y, tie_break_policy="random")["accuracy"]
    with pytest.raises(LabelMatrixError, match="L_dev="):
        get_label_model("auto", 2).fit(d["L"], Y_dev=d["Y"][:100])


def test_auto_without_gold_models_correlated_lfs_and_says_why(caplog):
    d = make_correlated(8_000, 12, 2, group_sizes=(4,), correlation=0.9, seed=2)
    L, Y = d["L"], d["Y"]
    with caplog.at_level(logging.INFO, logger="labeling.model.auto"):
        auto = get_label_model("auto", 2).fit(L)
    assert auto.chosen_ == "LabelModel+dependencies"
    assert "held-out" in auto.reason_ and auto.reason_ in caplog.text
    sel = auto.selection_
    assert sel["chosen"].sum() == 1 and set(sel["model"]) >= {"MajorityVoter", "TripletModel"}
    covered = (L >= 0).any(1)
    acc = (auto.predict(L, tie_break_policy="random") == Y)[covered].mean()
    mv_acc = (MajorityVoter(2).fit(L).predict(L, tie_break_policy="random") == Y)[covered].mean()
    assert acc > mv_acc
    assert auto.fit_info["chosen"] == auto.chosen_
    np.testing.assert_allclose(auto.get_weights(), auto.model_.get_weights())


def test_auto_save_load_and_bad_arguments(tmp_path):
    L = make_synthetic(3_000, 8, 2, seed=0)["L"]
    auto = AutoLabelModel(2, candidates=["MajorityVoter", "TripletModel"]).fit(L)
    back = BaseLabelModel.load(auto.save(tmp_path / "auto.npz"))
    assert isinstance(back, AutoLabelModel) and back.chosen_ == auto.chosen_
    np.testing.assert_allclose(back.predict_proba(L), auto.predict_proba(L))
    with pytest.raises(LoomError, match="choose among"):
        get_label_model("auto", 2, candidates=["Snorkel"])
    with pytest.raises(TypeError, match="did you mean 'holdout'"):
        get_label_model("auto", 2, holdot=0.3)
    with pytest.raises(LabelMatrixError, match="Y_dev"):
        get_label_model("auto", 2).fit(L, Y_dev=np.full(3_000, -1))
