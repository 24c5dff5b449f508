"""Issue 23: honest scores (k-fold held-out precision/recall of induced functions, used as
the ensemble's priors) and the plain warning when the sample's values are mostly missing."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd

from extraction import functions as fn
from extraction.candidates import induce
from extraction.config import EvaporateConfig
from extraction.heldout import add_heldout, fold_of, heldout_induced, prior_accuracy
from extraction.quality import sample_warnings
from extraction.sandbox import Sandbox

CITIES = ["Leeds", "York", "Hull", "Bath", "Derby", "Ely"]
#: in documents 0 and 3 (fold 0) the city also follows "moved to"; in 1 and 2 another does
NOTES = ["moved to Leeds in May", "moved to Paris in May", "moved to Rome in May",
         "moved to Bath in May", "no change", "no change"]  # fmt: skip
DOCS = [f"Record {i}\nCity: {c}\nNote: {n}\n" for i, (c, n) in enumerate(zip(CITIES, NOTES))]


def test_fold_of() -> None:
    assert fold_of(6) == [0, 1, 2, 0, 1, 2]
    assert fold_of(2) == [0, 1] and fold_of(1) == [0]


def test_heldout_scores_catch_an_overfit_induced_function() -> None:
    """In-sample, a "moved to X" rule induced from documents 0 and 3 looks half right; on the
    folds it was not induced from it is always wrong. The `City:` rule holds everywhere."""
    codes = [c for _, c in induce(list(zip(DOCS, CITIES)), 12)]
    moved = [i for i, c in enumerate(codes) if "moved" in c]
    city = [i for i, c in enumerate(codes) if "City" in c]
    assert moved and city
    funcs = pd.DataFrame({"attribute": "city", "function_id": [f"f{i}" for i in range(len(codes))],
                          "source": "induced", "code": codes, "raw": ""})  # fmt: skip
    sandbox = Sandbox(n_workers=1)
    scored = fn.score_candidates(sandbox, funcs, DOCS, {"city": CITIES}, EvaporateConfig())
    f = add_heldout(sandbox, scored, DOCS, {"city": CITIES}, 12).set_index("code")
    for i in moved:
        row = f.loc[codes[i]]
        assert row["precision"] >= 0.5 and row["heldout_precision"] == 0.0, row
    for i in city:
        assert f.loc[codes[i], "heldout_precision"] == 1.0
        assert f.loc[codes[i], "heldout_recall"] == 1.0
    direct = heldout_induced(sandbox, DOCS, CITIES, [codes[moved[0]], "no such code"], 12)
    assert direct[0] == (0.0, 0.0) and direct[1] is None


def test_non_induced_functions_keep_their_sample_scores_as_heldout() -> None:
    f = pd.DataFrame({"attribute": ["a"], "function_id": ["label_line_0"], "source": ["label"],
                      "code": ["x"], "precision": [0.8], "recall": [0.5]})  # fmt: skip
    out = add_heldout(None, f, ["d"], {"a": ["v"]}, 12)  # no induced function: no sandbox run
    assert out.loc[0, "heldout_precision"] == 0.8 and out.loc[0, "heldout_recall"] == 0.5


def test_prior_accuracy() -> None:
    assert prior_accuracy(pd.Series({"sample_f1": 0.9, "heldout_precision": 0.6})) == 0.6
    assert prior_accuracy(pd.Series({"sample_f1": 0.9, "heldout_precision": np.nan})) == 0.5
    assert prior_accuracy(pd.Series({"sample_f1": 0.9})) == 0.9  # an old checkpoint


def test_ensemble_priors_are_the_heldout_precision() -> None:
    """Two functions that always disagree: the one with the better held-out precision wins,
    though its in-sample F1 is the lower (before issue 23 the in-sample F1 decided)."""
    code = 'def extract(text):\n    return "{}"\n'
    funcs = pd.DataFrame({
        "attribute": "a", "function_id": ["optimistic", "honest"], "source": "induced",
        "code": [code.format("x"), code.format("y")], "kept": True, "reason": "",
        "sample_f1": [0.9, 0.6], "heldout_precision": [0.55, 0.9], "est_accuracy": 0.0,
        "coverage": 0.0,
    })  # fmt: skip
    tools = SimpleNamespace(sandbox=Sandbox(n_workers=1), client=None, progress=False)
    _, values, sources, _ = fn.apply_functions(tools, funcs, ["d1", "d2", "d3"], EvaporateConfig())
    assert values["a"] == ["y"] * 3 and sources["a"] == ["honest"] * 3


def test_warning_when_sample_values_are_mostly_missing(caplog) -> None:
    vals = {"title": ["", "", "T"] + [""] * 7, "date": [""] * 10}
    with caplog.at_level(logging.WARNING, logger="extraction.quality"):
        w = sample_warnings(vals, vals, "smol")
    assert w[0].startswith("values found in 1 of 20 sample prompts")
    assert "results will be poor: use --llm URL" in w[0]
    assert "no sample value found for date" in w[1]
    assert w[0] in caplog.text
    full = {"title": ["T"] * 10, "date": ["2024-01-01"] * 10}
    assert sample_warnings(full, {"title": [""] * 10, "date": [""] * 10}) == []
