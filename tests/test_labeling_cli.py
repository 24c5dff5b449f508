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


# ---- issue 21: `loom label` inputs checked before work, no silent outcome -----------------


def _summary(ws_dir):
    import json

    from toolkit.workspace import Workspace

    runs = Workspace(ws_dir).runs(kind="label")
    assert len(runs) == 1
    s = runs.iloc[0]["summary"]
    return runs.iloc[0], (s if isinstance(s, dict) else json.loads(s))


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """268 real reviews: too few overlaps for the triplet model to estimate anything."""
    from toolkit.datasets import load_rotten_tomatoes

    df = load_rotten_tomatoes().sample(268, random_state=1).reset_index(drop=True)
    path = tmp_path_factory.mktemp("label268") / "reviews.csv"
    df[["text", "label"]].to_csv(path, index=False)
    return path


def test_label_model_that_estimates_nothing_says_so(tmp_path, small_file, capsys):
    from apps.cli import main

    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    args = ["label", "--data", str(small_file), "--lfs", str(lfs), "--out", str(tmp_path / "ws")]
    assert main([*args, "--label-model", "triplet", "--gold-column", "label"]) == 0
    err = capsys.readouterr().err
    run, summary = _summary(tmp_path / "ws")
    assert run["status"] == "complete" and summary["label_model"] == "TripletModel"
    assert summary["warnings"], summary  # never complete without the warning
    assert any("TripletModel" in w and "estimate" in w for w in summary["warnings"])
    assert f"warning: {summary['warnings'][0]}" in err


def test_label_cardinality_flag_must_agree_with_the_lf_file(tmp_path, small_file, capsys):
    from apps.cli import main

    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)  # declares cardinality = 2
    ws = tmp_path / "ws"
    args = ["label", "--data", str(small_file), "--lfs", str(lfs), "--out", str(ws)]
    assert main([*args, "--cardinality", "3"]) == 2
    err = capsys.readouterr().err
    assert f"--cardinality 3 disagrees with `cardinality = 2` in --lfs {lfs}" in err
    assert not ws.exists()  # refused before any work


def test_label_gold_labels_beyond_the_classes_are_refused(tmp_path, small_file, capsys):
    from apps.cli import main

    df = pd.read_csv(small_file)
    df.loc[3, "label"] = 5
    data = tmp_path / "gold5.csv"
    df.to_csv(data, index=False)
    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    ws = tmp_path / "ws"
    args = ["label", "--data", str(data), "--lfs", str(lfs), "--out", str(ws)]
    assert main([*args, "--gold-column", "label"]) == 2
    err = capsys.readouterr().err
    assert f"--gold-column label: {data} has label 5 (row 3) but there are 2 classes" in err
    assert not ws.exists()


def test_text_column_is_the_column_the_lfs_read(tmp_path, small_file, capsys):
    from apps.cli import main
    from toolkit.workspace import Workspace

    df = pd.read_csv(small_file)
    data = tmp_path / "products.csv"
    df.rename(columns={"text": "description"}).to_csv(data, index=False)
    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)  # its LFs read x.text
    ws_dir = tmp_path / "ws"
    args = ["label", "--data", str(data), "--lfs", str(lfs), "--out", str(ws_dir)]
    assert main([*args, "--text-column", "description"]) == 0
    ws = Workspace(ws_dir)
    run = ws.latest_run("label")
    L = ws.load_table(run, "L")
    assert (L["exclaim"] >= 0).sum() == df["text"].str.contains("!").sum() > 0
    assert list(ws.load_table(run, "data")["text"]) == list(df["text"].astype(str))
    # a data file that has both columns: x.text would silently be another column
    both = tmp_path / "both.csv"
    df.assign(description=df["text"].str.upper()).to_csv(both, index=False)
    capsys.readouterr()
    assert main([*args[:2], str(both), *args[3:], "--text-column", "description"]) == 2
    err = capsys.readouterr().err
    assert f"--text-column description: the LFs read it as x.text, but {both} also has" in err


FLAKY_LF = """
from labeling import labeling_function

@labeling_function()
def fifth_word(x):
    return 1 if x.text.split()[5] == "the" else -1
"""


def test_fault_tolerant_flag(tmp_path, small_file, capsys):
    from apps.cli import main

    lfs = tmp_path / "flaky.py"
    lfs.write_text(FLAKY_LF)  # IndexError on reviews shorter than six words
    ws = tmp_path / "ws"
    args = ["label", "--data", str(small_file), "--lfs", str(lfs), "--out", str(ws)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--lfs {lfs}: LF 'fifth_word' raised on row" in err and "--fault-tolerant" in err
    assert main([*args, "--fault-tolerant"]) == 0
    short = (pd.read_csv(small_file)["text"].str.split().str.len() < 6).sum()
    _, summary = _summary(ws)
    assert summary["lf_faults"] == {"fifth_word": short} and short > 0
    assert "fifth_word" in summary["warnings"][0]  # the faults are said, not only counted
    assert f"warning: {summary['warnings'][0]}" in capsys.readouterr().err


def test_label_run_that_fails_part_way_is_marked_failed(tmp_path, small_file, capsys):
    from apps.cli import main
    from apps.options import failed_on_error
    from toolkit.workspace import Workspace

    five = tmp_path / "five.csv"
    pd.read_csv(small_file).head(5).to_csv(five, index=False)
    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    ws_dir = tmp_path / "ws"
    args = ["label", "--data", str(five), "--lfs", str(lfs), "--out", str(ws_dir)]
    code = main([*args, "--smooth", "liger"])  # Liger's neighbours on 5 rows: fails part-way
    runs = Workspace(ws_dir).runs(kind="label")
    assert len(runs) == 1 and runs.iloc[0]["status"] != "running"
    if code != 0:
        assert runs.iloc[0]["status"] == "failed" and runs.iloc[0]["summary"]["error"]
    # the guard itself, on a real workspace
    ws = Workspace(tmp_path / "ws2")
    run = ws.start_run("label", {})
    with pytest.raises(ValueError), failed_on_error(ws, run):
        raise ValueError("boom")
    row = ws.runs().iloc[0]
    assert row["status"] == "failed" and row["summary"] == {"error": "ValueError: boom"}


def test_label_model_auto_from_the_cli(tmp_path, data_file, capsys):
    """`--label-model auto` fits the candidates and records which one it kept."""
    from apps.cli import main
    from toolkit.workspace import Workspace

    lfs = tmp_path / "lfs.py"
    lfs.write_text(LFS_FILE)
    ws_dir = tmp_path / "ws"
    argv = ["label", "--data", str(data_file), "--lfs", str(lfs), "--out", str(ws_dir)]
    assert main([*argv, "--label-model", "auto"]) == 0
    ws = Workspace(ws_dir)
    run = ws.runs(kind="label")["run_id"].iloc[-1]
    probs = ws.load_table(run, "probs")
    assert len(probs) == 1500 and np.allclose(probs[["prob_0", "prob_1"]].sum(1), 1)
    assert ws.runs(kind="label")["params"].iloc[-1]["label_model"] == "AutoLabelModel"
    summary = ws.runs(kind="label")["summary"].iloc[-1]
    assert summary["chosen_model"] in ("MajorityVoter", "LabelModel", "DawidSkene", "TripletModel")
    assert summary["chosen_because"]
