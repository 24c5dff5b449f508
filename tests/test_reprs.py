"""The objects users look at in a notebook render as HTML that carries their numbers."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest


def _numbers(html: str) -> set[str]:
    return set(re.findall(r"\d+\.\d+", html))


@pytest.fixture(scope="module")
def L_and_y():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    acc = [0.95, 0.8, 0.6]
    cols = []
    for a in acc:
        vote = np.where(rng.random(n) < a, y, 1 - y)
        cols.append(np.where(rng.random(n) < 0.6, vote, -1))
    return np.stack(cols, 1), y


def test_lf_analysis_html_shows_summary_numbers(L_and_y):
    from labeling import LFAnalysis, keyword_lf

    L, _ = L_and_y
    lfs = [keyword_lf(f"lf_{name}", ["x"], 0) for name in ("strong", "medium", "weak")]
    analysis = LFAnalysis(L, lfs)
    html = analysis._repr_html_()
    summary = analysis.lf_summary()
    for name in ("lf_strong", "lf_medium", "lf_weak"):
        assert name in html
    for cov in summary["coverage"]:
        assert f"{cov:.3f}" in html
    assert f"coverage {analysis.label_coverage():.3f}" in html
    assert f"conflict {analysis.label_conflict():.3f}" in html
    assert "2000 rows x 3 LFs" in html


@pytest.mark.parametrize("model_name", ["LabelModel", "MajorityVoter"])
def test_label_model_html_shows_weights(L_and_y, model_name):
    import labeling

    L, y = L_and_y
    model = getattr(labeling, model_name)(cardinality=2)
    unfitted = model._repr_html_()
    assert "not fitted" in unfitted
    model.fit(L, lf_names=["a", "b", "c"], seed=0)
    html = model._repr_html_()
    weights = model.get_weights()
    assert "est. accuracy" in html
    for name, w in zip(["a", "b", "c"], weights):
        assert re.search(rf"<td>{name}</td><td>{w:.3f}</td>", html), (name, w, html)
    if model_name == "LabelModel":
        # the strongest LF (true accuracy 0.95) is rated above the weakest (0.6)
        assert weights[0] > weights[2] + 0.1
        assert "class balance" in html


def test_extraction_result_html_shows_scores_and_provenance():
    from extraction.evaporate import ExtractionResult

    table = pd.DataFrame({"doc_id": ["d0", "d1"], "postcode": ["2615", None]})
    functions = pd.DataFrame(
        {
            "attribute": ["postcode", "postcode"],
            "function_id": ["induced_regex_0", "llm_0"],
            "source": ["induced", "llm"],
            "code": ["def f(t): ...", ""],
            "est_accuracy": [0.9375, 0.0],
            "coverage": [0.5, 0.0],
            "sample_f1": [0.8125, 0.0],
            "kept": [True, False],
            "reason": ["", "no code in the LLM's answer"],
        }
    )
    prov = pd.DataFrame(
        {
            "doc_id": ["d0"],
            "attribute": ["postcode"],
            "value": ["2615"],
            "function_id": ["induced_regex_0"],
            "start": [17],
            "end": [21],
        }
    )
    tokens = pd.DataFrame(
        {
            "mode": ["code+"],
            "stage": ["sample_direct"],
            "prompt_tokens": [1200],
            "completion_tokens": [34],
        }
    )
    report = {
        "attributes": ["postcode"],
        "mode": "code+",
        "functions_kept": 1,
        "functions_total": 2,
        "evaluation": [{"attribute": "postcode", "precision": 1.0, "recall": 0.5, "f1": 0.6667}],
    }
    res = ExtractionResult(table, functions, prov, tokens, report, run_id="extract-1")
    html = res._repr_html_()
    assert "2 documents" in html and "1/2 functions kept" in html
    assert "LLM tokens: 1,234" in html
    assert "0.938" in html and "0.812" in html  # est_accuracy, sample_f1
    assert "0.667" in html  # evaluation F1
    assert "no code in the LLM&#x27;s answer" in html or "no code in the LLM's answer" in html
    assert "induced_regex_0" in html and "<td>17</td>" in html  # provenance span
    assert "extract-1" in repr(res)


def test_link_result_html_shows_scores():
    import linking

    left = pd.DataFrame({"name": ["jon smith", "mary jones", "peter pan"]})
    right = pd.DataFrame({"name": ["john smith", "mary jones", "captain hook"]})
    out = linking.merge(left, right, on="name")
    html = out._repr_html_()
    assert out.loc[1, "name_right"] == "mary jones"
    for s in out["score"].dropna():
        assert f"{s:.6f}"[:5] in html
    assert "name_left" in html and "name_right" in html
    # the default (threshold="auto") leaves "peter pan" unmatched: no candidate shares spelling
    assert out.attrs["linking"]["pairs"] == 2 and pd.isna(out.loc[2, "right_row"])


def test_lf_analysis_plain_repr_has_the_numbers():
    import numpy as np

    from labeling import LFAnalysis

    text = repr(LFAnalysis(np.array([[0, -1], [1, 1], [-1, -1]])))
    assert "3 rows x 2 LFs" in text and "coverage 0.667" in text and "overlap 0.333" in text
