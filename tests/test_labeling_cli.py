"""`loom label` end to end into a workspace, and docs/labeling.md executed as a script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

LFS_FILE = """
from labeling import keyword_lf, regex_lf, labeling_function
from snorkel.labeling import labeling_function as snorkel_lf

cardinality = 2

good = keyword_lf("good", ["great", "best", "funny", "wonderful", "fun"], 1)
bad = keyword_lf("bad", ["dull", "boring", "worst", "mess", "bad"], 0)
fails = regex_lf("fails", r"\\bfails?\\b|disappoint", 0)


@labeling_function()
def exclaim(x):
    return 1 if "!" in x.text else -1


@snorkel_lf()
def too_long(x):
    return 0 if "too long" in x.text.lower() else -1
"""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    from toolkit.datasets import load_rotten_tomatoes

    df = load_rotten_tomatoes().sample(1500, random_state=1).reset_index(drop=True)
    path = tmp_path_factory.mktemp("label") / "reviews.csv"
    df[["text", "label"]].to_csv(path, index=False)
    return path


def test_loom_label_writes_workspace(tmp_path, data_file, capsys):
    from apps.cli import main
    from toolkit.workspace import Workspace

    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    ws_dir = tmp_path / "ws"
    code = main(
        [
            "label",
            "--data",
            str(data_file),
            "--lfs",
            str(lfs),
            "--out",
            str(ws_dir),
            "--gold-column",
            "label",
        ]
    )
    assert code == 0
    ws = Workspace(ws_dir)
    runs = ws.runs(kind="label")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "complete"
    run = runs.iloc[0]["run_id"]
    L = ws.load_table(run, "L")
    assert list(L.columns) == ["good", "bad", "fails", "exclaim", "too_long"]
    assert L.shape == (1500, 5) and set(np.unique(L.to_numpy())) <= {-1, 0, 1}
    data = ws.load_table(run, "data")
    assert list(data.columns) == ["row", "text", "gold"]
    summary = ws.load_table(run, "lf_summary")
    for col in [
        "lf",
        "polarity",
        "coverage",
        "overlaps",
        "conflicts",
        "correct",
        "incorrect",
        "emp_acc",
        "est_acc",
    ]:
        assert col in summary.columns
    probs = ws.load_table(run, "probs")
    assert list(probs.columns) == ["row", "prob_0", "prob_1", "pred"]
    assert np.allclose(probs[["prob_0", "prob_1"]].sum(1), 1.0, atol=1e-5)
    weights = ws.load_table(run, "weights")
    assert list(weights.columns) == ["lf", "accuracy"] and len(weights) == 5
    s = runs.iloc[0]["summary"]
    s = s if isinstance(s, dict) else __import__("json").loads(s)
    assert 0.6 < s["accuracy"] <= 1.0 and s["coverage"] > 0.1
    assert "label run" in capsys.readouterr().out


def test_loom_label_errors(tmp_path, data_file, capsys):
    from apps.cli import main

    empty = tmp_path / "none.py"
    empty.write_text("x = 1\n")
    assert (
        main(["label", "--data", str(data_file), "--lfs", str(empty), "--out", str(tmp_path / "w")])
        == 2
    )
    assert "defines no labeling functions" in capsys.readouterr().err
    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    assert (
        main(
            [
                "label",
                "--data",
                str(data_file),
                "--lfs",
                str(lfs),
                "--out",
                str(tmp_path / "w"),
                "--text-column",
                "body",
            ]
        )
        == 2
    )
    assert "body" in capsys.readouterr().err


def _doc_script() -> str:
    src = (ROOT / "docs" / "labeling.md").read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", src, re.S))


@pytest.mark.slow
def test_docs_walkthrough_runs(tmp_path):
    script = tmp_path / "labeling_doc.py"
    script.write_text(_doc_script())
    env = {**os.environ, "LOOM_DOCS_SAMPLE": "300", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "zs_embed" in out.stdout and "coverage" in out.stdout
    accs = dict(re.findall(r"'(\w+)': ([0-9.]+)", out.stdout))
    assert set(accs) >= {"MajorityVoter", "LabelModel", "DawidSkene", "TripletModel"}
    assert float(accs["LabelModel"]) > 0.6


@pytest.mark.slow
def test_demo_part(tmp_path):
    from apps.demo_labeling import run
    from toolkit.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    out = run(ws, quick=True)
    assert out["n"] == 300 and out["accuracy"] > 0.6
    assert pd.DataFrame(ws.load_table(out["run"], "probs")).shape[0] == 300
