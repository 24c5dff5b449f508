"""Label models against known truth, Snorkel on the same L, interface and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from labeling import (
    DawidSkene,
    LabelDtypeError,
    LabelMatrixError,
    LabelModel,
    MajorityVoter,
    TripletModel,
    get_label_model,
)
from labeling.label_model import unique_rows
from labeling.synthetic import make_synthetic
from toolkit.errors import LoomError

ESTIMATORS = [LabelModel, DawidSkene, TripletModel]


def _acc(model, d):
    covered = (d["L"] >= 0).any(1)
    return float((model.predict_proba(d["L"]).argmax(1) == d["Y"])[covered].mean())


@pytest.fixture(scope="module")
def binary():
    return make_synthetic(20_000, 12, 2, seed=3)


@pytest.fixture(scope="module")
def multiclass():
    return make_synthetic(20_000, 15, 4, class_balance=[0.4, 0.3, 0.2, 0.1], seed=4)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("data", ["binary", "multiclass"])
def test_estimators_recover_lf_accuracies(cls, data, request):
    d = request.getfixturevalue(data)
    k = int(d["Y"].max()) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(k).fit(d["L"])
    mae = np.abs(model.get_weights() - d["acc"]).mean()
    assert mae < 0.03, (cls.__name__, mae)
    mv = MajorityVoter(k)
    covered = (d["L"] >= 0).any(1)
    mv_acc = float((mv.predict(d["L"], tie_break_policy="random") == d["Y"])[covered].mean())
    assert _acc(model, d) > mv_acc


def test_label_model_at_least_snorkel(binary, multiclass):
    import torch
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Snorkel's many tiny torch steps crawl when 2 cores are shared
    try:
        _compare_with_snorkel(SnorkelLabelModel, binary, multiclass)
    finally:
        torch.set_num_threads(threads)


def _compare_with_snorkel(SnorkelLabelModel, binary, multiclass):
    for d in (binary, multiclass):
        k = int(d["Y"].max()) + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = LabelModel(k).fit(d["L"])
        peer = SnorkelLabelModel(cardinality=k, verbose=False)
        peer.fit(d["L"], n_epochs=200, seed=0, progress_bar=False)
        covered = (d["L"] >= 0).any(1)
        peer_acc = float((peer.predict_proba(d["L"]).argmax(1) == d["Y"])[covered].mean())
        assert _acc(ours, d) >= peer_acc - 1e-3


def test_class_balance_is_estimated():
    d = make_synthetic(40_000, 10, 2, class_balance=[0.8, 0.2], seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LabelModel(2).fit(d["L"])
    assert abs(model.class_balance[0] - 0.8) < 0.02
    fixed = LabelModel(2).fit(d["L"], class_balance=[0.5, 0.5])
    assert np.allclose(fixed.class_balance, [0.5, 0.5])
    dev = LabelModel(2).fit(d["L"], Y_dev=d["Y"][:500])
    assert abs(dev.class_balance[0] - (d["Y"][:500] == 0).mean()) < 0.01


def test_unipolar_lfs_are_informative():
    """LFs that vote only one class carry information through when they fire."""
    rng = np.random.default_rng(0)
    n = 20_000
    y = rng.integers(0, 2, n)
    cols = []
    for lab in (0, 0, 0, 1, 1, 1):
        fire = rng.random(n) < np.where(y == lab, 0.5, 0.08)
        cols.append(np.where(fire, lab, -1))
    L = np.stack(cols, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LabelModel(2).fit(L)
    covered = (L >= 0).any(1)
    acc = (model.predict(L) == y)[covered].mean()
    assert acc > 0.85
    assert np.all(np.abs(model.get_weights() - 0.5 / 0.58) < 0.05)


def test_predict_ties_and_rows_without_votes():
    L = np.array([[0, 1, -1], [0, 0, -1], [-1, -1, -1], [1, 1, 1]])
    mv = MajorityVoter(2)
    assert mv.predict(L).tolist() == [-1, 0, -1, 1]
    rnd = mv.predict(L, tie_break_policy="random", seed=1)
    assert rnd[0] in (0, 1) and rnd[2] == -1
    probs = mv.predict_proba(L)
    assert np.allclose(probs[0], [0.5, 0.5]) and np.allclose(probs[2], [0.5, 0.5])
    pred, probs = mv.predict(L, return_probs=True)
    assert probs.shape == (4, 2)
    with pytest.raises(LoomError, match="tie_break_policy"):
        mv.predict(L, tie_break_policy="coin")


def test_save_load_roundtrip(tmp_path, binary):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in [*ESTIMATORS, MajorityVoter]:
            model = cls(2).fit(binary["L"][:3000])
            path = model.save(tmp_path / f"{cls.__name__}.npz")
            again = cls.load(path)
            assert type(again) is cls
            assert np.allclose(
                again.predict_proba(binary["L"][:50]), model.predict_proba(binary["L"][:50])
            )
            filled = cls(2)
            filled.load(path)  # Snorkel style: fills the instance
            assert np.allclose(filled.get_weights(), model.get_weights())
            assert "<table>" in model._repr_html_()
    with pytest.raises(LoomError, match="not a"):
        DawidSkene.load(tmp_path / "LabelModel.npz")


def test_factory():
    assert isinstance(get_label_model("LabelModel", 3), LabelModel)
    assert isinstance(get_label_model("dawidskene", 2), DawidSkene)
    assert isinstance(get_label_model("TripletModel", 2), TripletModel)
    assert get_label_model("MajorityVoter", 4).cardinality == 4
    with pytest.raises(LoomError, match="unknown label model"):
        get_label_model("Snorkel2", 2)


def test_unique_rows_exact():
    rng = np.random.default_rng(0)
    L = rng.integers(-1, 3, size=(5000, 6))
    U, inv, counts = unique_rows(L)
    assert np.array_equal(U[inv], L)
    assert counts.sum() == len(L)
    assert len(U) == len(np.unique(L, axis=0))


def test_bad_input_is_named():
    model = LabelModel(2)
    with pytest.raises(LabelDtypeError, match="astype\\(int\\)"):
        model.fit(np.zeros((10, 3), dtype=float))
    with pytest.raises(LabelDtypeError, match="dtype"):
        model.fit(np.full((10, 3), 0.5))
    with pytest.raises(LabelMatrixError, match="2-D"):
        model.fit(np.zeros(10, dtype=int))
    with pytest.raises(LabelMatrixError, match="-2"):
        model.fit(np.full((10, 3), -2))
    with pytest.raises(LabelMatrixError, match="cardinality is 2"):
        model.fit(np.array([[0, 1, 2], [1, 1, 0]]))
    with pytest.raises(LabelMatrixError, match="empty"):
        model.fit(np.zeros((0, 3), dtype=int))
    with pytest.raises(LoomError, match="not fitted"):
        model.predict_proba(np.zeros((2, 3), dtype=int))
    with pytest.raises(LabelMatrixError, match="cardinality must be"):
        LabelModel(1)
    L = make_synthetic(2000, 5, 2, seed=0)["L"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(L)
    with pytest.raises(LabelMatrixError, match="fitted on 5"):
        model.predict(L[:, :4])
    with pytest.raises(LabelMatrixError, match="class_balance"):
        LabelModel(2).fit(L, class_balance=[1.0, 0.0, 0.0])


def test_silent_lf_and_empty_rows_warn():
    L = make_synthetic(3000, 5, 2, seed=1)["L"]
    L[:, 2] = -1
    L[:10] = -1
    with pytest.warns(UserWarning, match="never vote"):
        model = LabelModel(2).fit(L)
    assert abs(model.get_weights()[2] - 0.5) < 1e-9
    with pytest.warns(UserWarning, match="no votes"):
        LabelModel(2).fit(L)
    assert (model.predict(L[:10]) == -1).all()
    probs = model.predict_proba(L[:10])
    assert np.allclose(probs, probs[0]) and np.allclose(probs.sum(1), 1.0)
    assert np.allclose(MajorityVoter(2).predict_proba(L[:10]), 0.5)


@pytest.mark.gpu
def test_gpu_matches_cpu(binary):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = LabelModel(2, device="cpu").fit(binary["L"])
        gpu = LabelModel(2, device="cuda").fit(binary["L"])
    assert np.abs(cpu.get_weights() - gpu.get_weights()).max() < 1e-3
    assert np.abs(cpu.predict_proba(binary["L"]) - gpu.predict_proba(binary["L"])).max() < 1e-3


def test_deprecated_names_still_work_and_warn():
    import labeling.label_model
    import labeling.liger
    from labeling.model import check_L
    from labeling.smoothing import smooth

    with pytest.warns(DeprecationWarning, match="verbose"):
        model = LabelModel(2, verbose=False)
    assert model.progress is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LabelModel(2, progress=True).progress is True
    assert labeling.label_model.LabelModel is LabelModel  # old module path, no warning
    with pytest.warns(DeprecationWarning, match="labeling.smoothing"):
        assert labeling.liger.smooth is smooth
    with pytest.warns(DeprecationWarning, match="check_L"):
        L = labeling.liger.check_label_matrix(np.zeros((3, 2), dtype=int), 2)
    assert np.array_equal(L, check_L(np.zeros((3, 2), dtype=int), 2))


def test_fit_rejects_unknown_arguments_and_names_close_matches():
    """Issue 20: fit(**_) swallowed misspelt and unsupported keywords."""
    L = make_synthetic(2000, 6, 2, seed=2)["L"]
    with pytest.raises(TypeError, match=r"LabelModel.fit\(\).*'n_epoch'.*did you mean 'n_epochs'"):
        LabelModel(2).fit(L, n_epoch=500)
    with pytest.raises(TypeError, match=r"DawidSkene.fit\(\) does not support dependencies=.*"):
        DawidSkene(2).fit(L, dependencies=[(0, 1)])
    with pytest.raises(TypeError, match=r"DawidSkene.fit\(\).*'tol_'.*did you mean 'tol'"):
        DawidSkene(2).fit(L, tol_=1e-3)
    with pytest.raises(TypeError, match=r"TripletModel.fit\(\).*did you mean 'min_overlap'"):
        TripletModel(2).fit(L, min_overlp=5)
    with pytest.raises(TypeError, match=r"MajorityVoter.fit\(\).*'class_balanse'.*'class_balance'"):
        MajorityVoter(2).fit(L, class_balanse=[0.5, 0.5])
    with pytest.raises(TypeError, match=r"LabelModel\(\).*'devcie'.*did you mean 'device'"):
        get_label_model("label_model", 2, devcie="cpu")
    with pytest.raises(LoomError, match="Adam only"):
        LabelModel(2).fit(L, optimizer="sgd")
    from labeling import metric_score

    y = np.array([0, 1, 1])
    with pytest.raises(TypeError, match=r"'bta'.*did you mean 'beta'"):
        metric_score(y, y, metric="fbeta", bta=2.0)
    with pytest.raises(TypeError, match="f1_macro"):
        metric_score(y, y, metric="f1", average="macro")
    # what is accepted is honoured (n_epochs, l2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = LabelModel(2, refine="none").fit(L, n_epochs=5)
        more = LabelModel(2, refine="none").fit(L, n_epochs=300)
        pulled = LabelModel(2, refine="none").fit(L, n_epochs=300, l2=10.0)
    assert not np.allclose(base.get_weights(), more.get_weights())
    assert not np.allclose(more.get_weights(), pulled.get_weights())
    with pytest.warns(UserWarning, match=r"TripletModel.fit\(\) ignores n_epochs= and lr="):
        TripletModel(2).fit(L, n_epochs=50, lr=0.1)


def test_snorkel_fit_arguments_are_honoured(caplog):
    L = make_synthetic(2000, 6, 2, seed=2)["L"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with caplog.at_level("INFO", logger="labeling.model.label_model"):
            LabelModel(2).fit(L, n_epochs=20, log_freq=10, progress_bar=False, seed=0)
    logged = [r.getMessage() for r in caplog.records if "matrix completion" in r.getMessage()]
    assert len(logged) == 2 and "epoch 20/20" in logged[-1]


def _no_overlap_L(n=268, m=5, seed=0):
    """Sparse LFs that rarely vote together: no triplet has min_overlap=10 co-votes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    L = np.full((n, m), -1)
    for j in range(m):
        fire = rng.random(n) < 0.06
        L[:, j] = np.where(fire, np.where(rng.random(n) < 0.8, y, 1 - y), -1)
    return L


def test_degenerate_fit_warns_with_the_alternative(tmp_path):
    """Issue 21: TripletModel finished with every accuracy 0.5, every probability 0.5, all -1."""
    L = _no_overlap_L()
    with pytest.warns(UserWarning, match="TripletModel cannot estimate anything") as rec:
        model = TripletModel(2).fit(L)
    msg = model.fit_warnings_[-1]
    assert "at chance" in msg and "uniform" in msg and "-1" in msg and "min_overlap" in msg
    assert "--label-model label_model or majority" in msg
    assert any(str(w.message) == msg for w in rec)
    assert TripletModel.load(model.save(tmp_path / "t.npz")).fit_warnings_ == model.fit_warnings_
    # a model whose every prediction is a tie says so too
    ties = np.array([[0, 1], [1, 0]] * 50)
    with pytest.warns(UserWarning, match="MajorityVoter cannot estimate.*every row"):
        assert MajorityVoter(2).fit(ties).fit_warnings_
    # a healthy fit stays quiet
    d = make_synthetic(5000, 8, 2, seed=1)
    covered = d["L"][(d["L"] >= 0).any(1)]
    for cls in [*ESTIMATORS, MajorityVoter]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert cls(2).fit(covered).fit_warnings_ == []
