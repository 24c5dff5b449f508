"""Fine-tuning with linking.train improves held-out FEBRL4 linkage; the CLI writes a workspace."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_linking import febrl4_subset

import linking
from linking.keys import key_texts
from toolkit.embed import get_embedder
from toolkit.errors import LoomError

ON = ["given_name", "surname", "suburb", "date_of_birth"]


@pytest.mark.slow
def test_training_improves_held_out_f1(tmp_path):
    # labelled pairs for training and a test set drawn from disjoint FEBRL4 records
    a_tr, b_tr, gold_tr = febrl4_subset(1000, 320)
    ta, _ = key_texts(a_tr, ON)
    tb, _ = key_texts(b_tr, ON)
    pairs = pd.DataFrame(
        {"a": [ta[i] for i in gold_tr["left_row"]], "b": [tb[j] for j in gold_tr["right_row"]]}
    )
    a, b, gold = febrl4_subset(0, 150)
    # threshold=None: the encoder's nearest neighbours, which is what training changes
    before = linking.evaluate(linking.merge(a, b, on=ON, threshold=None), gold)
    path = linking.train(
        pairs,
        epochs=1,
        output_dir=tmp_path / "model",
        batch_size=32,
        learning_rate=5e-5,
        eval_fraction=0.1,
    )
    report = json.loads((path / "linking_train.json").read_text())
    assert report["after"]["mrr"] >= report["before"]["mrr"]
    # the saved folder is a model for the embedding service and for merge(model=)
    emb = get_embedder(str(path))
    assert emb.dim == 384
    after = linking.evaluate(linking.merge(a, b, on=ON, model=str(path), threshold=None), gold)
    assert after["f1"] > before["f1"], (before, after)


def test_train_input_errors(tmp_path):
    with pytest.raises(LoomError, match="at least 2"):
        linking.train([("a", "b")], output_dir=tmp_path / "m")
    with pytest.raises(LoomError, match="columns="):
        linking.train(pd.DataFrame({"a": ["x"], "b": ["y"], "c": ["z"]}), output_dir=tmp_path)
    with pytest.raises(LoomError, match="two strings"):
        linking.train([("a", 1), ("b", 2)], output_dir=tmp_path / "m")
    with pytest.raises(LoomError, match="batch_size"):
        linking.train([("a", "b"), ("c", "d")], batch_size=1)


def test_train_from_cluster_ids(tmp_path):
    df = pd.DataFrame(
        {
            "name": [
                "acme corp",
                "acme corporation",
                "globex inc",
                "globex incorporated",
                "initech llc",
                "initech l.l.c.",
            ],
            "entity": [0, 0, 1, 1, 2, 2],
        }
    )
    path = linking.train(
        df,
        cluster_col="entity",
        on="name",
        output_dir=tmp_path / "m",
        batch_size=3,
        eval_fraction=0,
        progress=False,
    )
    report = json.loads((path / "linking_train.json").read_text())
    assert report["train_pairs"] == 3 and report["steps"] == 1
    out = linking.merge(df.iloc[[0, 2, 4]], df.iloc[[5, 1, 3]], on="name", model=path)
    assert out["right_row"].tolist() == [1, 2, 0]


def test_cli_link_and_dedup(tmp_path):
    from apps.cli import main
    from toolkit.workspace import Workspace

    left = pd.DataFrame(
        {"name": ["john smith", "mary jones", "peter brown"], "city": ["leeds", "york", "bath"]}
    )
    right = pd.DataFrame(
        {"name": ["jones mary", "jon smith", "pete browne"], "city": ["york", "leeds", "bath"]}
    )
    left.to_csv(tmp_path / "l.csv", index=False)
    right.to_csv(tmp_path / "r.csv", index=False)
    pd.DataFrame({"left_row": [0, 1, 2], "right_row": [1, 0, 2]}).to_csv(
        tmp_path / "gold.csv", index=False
    )
    ws_path = tmp_path / "ws"
    code = main(
        [
            "link",
            str(tmp_path / "l.csv"),
            str(tmp_path / "r.csv"),
            "--on",
            "name,city",
            "--out",
            str(ws_path),
            "--gold",
            str(tmp_path / "gold.csv"),
        ]
    )
    assert code == 0
    ws = Workspace(ws_path)
    runs = ws.runs(kind="link")
    run = runs["run_id"].iloc[-1]
    assert runs["status"].iloc[-1] == "complete"
    names = set(ws.tables(run)["name"])
    assert {"left", "right", "pairs", "gold"} <= names
    pairs = ws.load_table(run, "pairs")
    assert pairs[["left_row", "right_row"]].values.tolist() == [[0, 1], [1, 0], [2, 2]]
    assert {"score", "left_name", "right_city"} <= set(pairs.columns)
    assert ws.load_table(run, "left")["row"].tolist() == [0, 1, 2]

    dup = pd.DataFrame({"name": ["john smith", "jon smith", "mary jones", "peter brown"]})
    dup.to_csv(tmp_path / "d.csv", index=False)
    assert (
        main(
            [
                "dedup",
                str(tmp_path / "d.csv"),
                "--on",
                "name",
                "--threshold",
                "0.8",
                "--out",
                str(ws_path),
            ]
        )
        == 0
    )
    run = ws.runs(kind="dedup")["run_id"].iloc[-1]
    clusters = ws.load_table(run, "clusters")
    assert clusters["cluster_id"].tolist() == [0, 0, 1, 2]
    assert {"row", "cluster_id", "key", "name"} <= set(clusters.columns)
    assert len(ws.load_table(run, "pairs")) == 1
    # spelling mixed into the score; a weight outside [0, 1) is a user error
    link_args = ["link", str(tmp_path / "l.csv"), str(tmp_path / "r.csv"), "--on", "name,city"]
    assert main([*link_args, "--char-weight", "0.5", "--out", str(ws_path)]) == 0
    run = ws.runs(kind="link")["run_id"].iloc[-1]
    pairs = ws.load_table(run, "pairs")
    assert pairs[["left_row", "right_row"]].values.tolist() == [[0, 1], [1, 0], [2, 2]]
    assert main([*link_args, "--char-weight", "1.5", "--out", str(ws_path)]) == 2
    # a user error exits 2 with a message, no traceback
    assert (
        main(
            [
                "link",
                str(tmp_path / "l.csv"),
                str(tmp_path / "r.csv"),
                "--on",
                "nope",
                "--out",
                str(ws_path),
            ]
        )
        == 2
    )
