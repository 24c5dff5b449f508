"""The LinkTransformer surface on the CLI (issue 18): `loom cluster`, `loom aggregate`,
`loom train-linker` and `loom link --images`, on tiny tables written here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apps.cli import main
from toolkit.workspace import Workspace

PEOPLE = ["john smith", "jon smith", "mary jones", "peter brown", "peter browne"]


def _help(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_new_commands_are_listed_and_show_their_defaults(capsys):
    cluster = _help(capsys, "cluster")
    assert "(default: connected)" in cluster and "(default: 0.9)" in cluster
    assert "(default: 10)" in cluster and "(default: workspace)" in cluster
    aggregate = _help(capsys, "aggregate")
    assert "(default: none, every row gets its nearest reference row)" in aggregate
    train = _help(capsys, "train-linker")
    assert "(default: 32)" in train and "(default: 2e-05)" in train and "(default: 1)" in train
    link = _help(capsys, "link")
    assert "--images COLUMN" in link and "(default: 0.5)" in link


def test_cluster_writes_cluster_ids_to_a_file_and_a_workspace_run(tmp_path, capsys):
    src = tmp_path / "people.csv"
    pd.DataFrame({"name": PEOPLE, "id": range(5)}).to_csv(src, index=False)
    ws_path = tmp_path / "ws"
    argv = ["cluster", str(src), "--on", "name", "--threshold", "0.75", "--out", str(ws_path)]
    assert main([*argv, "--output", str(tmp_path / "c.csv")]) == 0
    assert "5 rows -> 3 clusters (connected)" in capsys.readouterr().out
    written = pd.read_csv(tmp_path / "c.csv")
    assert written["cluster_id"].tolist() == [0, 0, 1, 2, 2]
    assert written[["name", "id"]].equals(pd.read_csv(src))  # the input rows, in order
    ws = Workspace(ws_path)
    runs = ws.runs(kind="cluster")
    assert runs["status"].tolist() == ["complete"]
    run, params = runs["run_id"].iloc[0], runs["params"].iloc[0]
    # the run records the one LinkConfig the flags built (asdict), and what was decided
    assert params["threshold"] == 0.75 and params["k"] == 10 and params["char_weight"] == 0.0
    assert params["method"] == "connected" and params["decided"]["threshold_source"] == "given"
    clusters = ws.load_table(run, "clusters")
    assert clusters["cluster_id"].tolist() == [0, 0, 1, 2, 2]
    pairs = ws.load_table(run, "pairs")
    assert pairs[["row_a", "row_b"]].values.tolist() == [[0, 1], [3, 4]]
    assert (pairs["score"] >= 0.75).all()
    # agglomerative: the same groups here, written as parquet
    out = tmp_path / "c.parquet"
    assert main([*argv, "--method", "agglomerative", "--output", str(out)]) == 0
    assert pd.read_parquet(out)["cluster_id"].tolist() == [0, 0, 1, 2, 2]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--threshold", "auto", "--method", "agglomerative"], "--threshold auto works with"),
        (["--threshold", "none"], "--threshold none: clustering needs a cut"),
        (["--threshold", "1.5"], "--threshold 1.5: give a cosine"),
        (["--output", "c.txt"], "--output c.txt: name a file ending in one of .csv"),
        (["--output", "no/such/dir/c.csv"], "the folder no/such/dir does not exist"),
        (["--output", "./p.csv"], "--output ./p.csv is FILE p.csv: writing there would overwrite"),
        (["--k", "0"], "--k 0: give a whole number >= 1"),
        (["--char-weight", "auto"], "--char-weight auto needs --threshold auto"),
        (["--on", "nme"], "(named by --on); its columns are ['name']"),
    ],
)
def test_cluster_errors_name_the_flag_before_any_work(
    tmp_path, capsys, monkeypatch, flags, message
):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"name": PEOPLE}).to_csv("p.csv", index=False)
    argv = ["cluster", "p.csv", "--on", "name", *flags, "--out", "ws"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()
    assert pd.read_csv("p.csv")["name"].tolist() == PEOPLE  # the input is left as it was


def test_aggregate_assigns_each_row_its_reference_row_with_a_threshold(tmp_path, capsys):
    rows = pd.DataFrame(
        {
            "company": ["First National Bank", "Acme Software Labs", "Green Valley Farms", None],
            "n": range(4),
        }
    )
    rows.to_csv(tmp_path / "co.csv", index=False)
    ref = pd.DataFrame(
        {
            "industry": ["banking and finance", "software development", "agriculture and farming"],
            "code": ["K", "J", "A"],
        }
    )
    ref.to_csv(tmp_path / "ref.csv", index=False)
    ws_path = tmp_path / "ws"
    base = ["aggregate", str(tmp_path / "co.csv"), str(tmp_path / "ref.csv"), "--on", "company"]
    base += ["--ref-on", "industry", "--out", str(ws_path)]
    assert main([*base, "--output", str(tmp_path / "a.csv")]) == 0
    captured = capsys.readouterr()
    assert "assigned 3 of 4 rows to 3 reference rows" in captured.out
    assert "note: 1 of 4 rows have an empty key in ['company']" in captured.err
    out = pd.read_csv(tmp_path / "a.csv")
    assert out["ref_row"].tolist()[:3] == [0, 1, 2] and np.isnan(out["ref_row"].iloc[3])
    assert out["ref_code"].tolist()[:3] == ["K", "J", "A"]  # the reference row's columns
    assert out["n"].tolist() == [0, 1, 2, 3] and out["ref_score"].iloc[:3].between(0, 1).all()
    ws = Workspace(ws_path)
    runs = ws.runs(kind="aggregate")
    assert runs["status"].tolist() == ["complete"]
    assert runs["params"].iloc[0]["threshold"] is None and runs["params"].iloc[0]["k"] == 1
    summary = runs["summary"].iloc[0]
    assert summary["assigned"] == 3 and summary["empty_keys"] == 1
    table = ws.load_table(runs["run_id"].iloc[0], "assignments")
    assert table["row"].tolist() == [0, 1, 2, 3] and table["ref_row"].tolist()[:3] == [0, 1, 2]
    # a threshold above every score: no row gets a reference row, none is dropped
    best = float(out["ref_score"].max())
    cut_argv = [*base, "--threshold", f"{best + 0.01:.4f}", "--output", str(tmp_path / "b.csv")]
    assert main(cut_argv) == 0
    capsys.readouterr()
    cut = pd.read_csv(tmp_path / "b.csv")
    assert len(cut) == 4 and cut["ref_row"].isna().all() and cut["ref_score"].notna().sum() == 3


@pytest.mark.parametrize(
    "ref, flags, message",
    [
        ({"industry": ["banking", None]}, ["--ref-on", "industry"], "1 row(s) have an empty key"),
        ({"industry": ["banking"]}, [], "REFERENCE"),  # --on company is not in the reference
        ({"industry": ["banking"]}, ["--ref-on", "industry,x"], "--ref-on has 2 ['industry', 'x']"),
        ({"industry": ["banking"]}, ["--ref-on", "industry", "--threshold", "auto"], "auto is"),
        ({"ref_row": ["banking"]}, ["--ref-on", "ref_row"], "has column(s) ['ref_ref_row']"),
        ({"industry": ["banking"]}, ["--ref-on", "industry", "--output", "REF"], "is REFERENCE"),
    ],
)
def test_aggregate_errors(tmp_path, capsys, ref, flags, message):
    pd.DataFrame({"company": ["a bank"], "ref_ref_row": [1]}).to_csv(tmp_path / "co.csv")
    pd.DataFrame(ref).to_csv(tmp_path / "ref.csv", index=False)
    argv = ["aggregate", str(tmp_path / "co.csv"), str(tmp_path / "ref.csv"), "--on", "company"]
    flags = [str(tmp_path / "ref.csv") if f == "REF" else f for f in flags]
    assert main([*argv, *flags, "--out", str(tmp_path / "ws")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()
    assert pd.read_csv(tmp_path / "ref.csv").columns.tolist() == list(ref)  # left as it was


GROUPS = pd.DataFrame(
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


def test_train_linker_writes_a_model_for_link_and_cluster(tmp_path, capsys):
    GROUPS.to_csv(tmp_path / "groups.csv", index=False)
    ws_path, model = tmp_path / "ws", tmp_path / "model"
    argv = ["train-linker", str(tmp_path / "groups.csv"), "--cluster-col", "entity", "--on"]
    argv += ["name", "--batch-size", "3", "--eval-fraction", "0", "--output", str(model)]
    assert main([*argv, "--out", str(ws_path)]) == 0
    assert f"use it with --model {model}" in capsys.readouterr().out
    report = json.loads((model / "linking_train.json").read_text())
    assert report["train_pairs"] == 3 and report["steps"] == 1
    ws = Workspace(ws_path)
    runs = ws.runs(kind="train-linker")
    assert runs["status"].tolist() == ["complete"]
    assert runs["params"].iloc[0]["cluster_col"] == "entity"
    assert runs["summary"].iloc[0]["model"] == str(model)
    # the folder is a --model for link and cluster
    GROUPS.iloc[[0, 2, 4]].to_csv(tmp_path / "l.csv", index=False)
    GROUPS.iloc[[5, 1, 3]].to_csv(tmp_path / "r.csv", index=False)
    link = ["link", str(tmp_path / "l.csv"), str(tmp_path / "r.csv"), "--on", "name"]
    assert main([*link, "--threshold", "none", "--model", str(model), "--out", str(ws_path)]) == 0
    run = ws.latest_run("link")
    assert ws.runs(kind="link")["params"].iloc[0]["model"] == str(model)
    assert ws.load_table(run, "pairs")["right_row"].tolist() == [1, 2, 0]
    cluster = ["cluster", str(tmp_path / "groups.csv"), "--on", "name", "--model", str(model)]
    assert main([*cluster, "--threshold", "0.8", "--output", str(tmp_path / "c.csv")]) == 0
    assert pd.read_csv(tmp_path / "c.csv")["cluster_id"].nunique() < len(GROUPS)


@pytest.mark.parametrize(
    "table, flags, message",
    [
        (GROUPS.assign(x=1), [], "name the two text columns of each pair with --columns a,b"),
        (GROUPS, ["--columns", "name"], "--columns name: name the two text columns"),
        (GROUPS, ["--cluster-col", "entity", "--columns", "a,b"], "not both"),
        (GROUPS, ["--on", "name"], "use it with --cluster-col"),
        (GROUPS, ["--cluster-col", "entity"], "no column(s) ['text'] (named by --on (default"),
        (GROUPS, ["--cluster-col", "grp", "--on", "name"], "(named by --cluster-col)"),
        (GROUPS, ["--batch-size", "1"], "--batch-size 1: give a whole number >= 2"),
        (GROUPS, ["--eval-fraction", "1"], "--eval-fraction 1.0: give a share in [0, 1)"),
        (GROUPS.iloc[:1], [], "FILE g.csv: train needs at least 2 matching pairs, got 1"),
    ],
)
def test_train_linker_errors(tmp_path, capsys, monkeypatch, table, flags, message):
    monkeypatch.chdir(tmp_path)
    table.to_csv("g.csv", index=False)
    assert main(["train-linker", "g.csv", *flags, "--output", "m", "--out", "ws"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_train_linker_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    GROUPS[["name", "entity"]].astype(str).to_csv(tmp_path / "pairs.csv", index=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    argv = ["train-linker", str(tmp_path / "pairs.csv"), "--output", str(tmp_path / "m")]
    assert main([*argv, "--out", str(tmp_path / "ws")]) == 2
    assert "exists and is not a model written by train-linker" in capsys.readouterr().err
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


# ---- loom link --images: CLIPPINGS on the command line ------------------------------------


def _image(color: tuple[int, int, int], stripe: int, path) -> str:
    """A 48x48 picture with its own colour and a stripe at its own height."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (48, 48), color)
    ImageDraw.Draw(img).rectangle((0, stripe, 47, stripe + 6), fill=(255 - color[0], 40, 200))
    img.save(path)
    return str(path)


@pytest.fixture
def image_tables(tmp_path):
    """Left and right tables naming the same 4 images in another order, and a CLIP folder.

    No CLIP weights exist offline: like tests/test_multimodal.py this uses
    ClipEncoder.tiny(), a small CLIP initialised locally (untrained), saved as a folder; an
    image and itself get the same vector, so each left row's best right row is its image."""
    from linking.multimodal import ClipEncoder

    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    paths = [_image(c, 6 + 10 * i, tmp_path / f"i{i}.png") for i, c in enumerate(colors)]
    order = [2, 0, 3, 1]
    pd.DataFrame({"img": [f"i{i}.png" for i in range(4)], "title": list("abcd")}).to_csv(
        tmp_path / "l.csv", index=False
    )
    pd.DataFrame(
        {"img": [paths[i] for i in order], "title": [list("abcd")[i] for i in order]}
    ).to_csv(tmp_path / "r.csv", index=False)
    ClipEncoder.tiny(image_size=48, device="cpu").save(tmp_path / "clip")
    return tmp_path, order


def test_link_images_links_records_by_image_with_a_clip_folder(image_tables, capsys):
    root, order = image_tables
    argv = ["link", str(root / "l.csv"), str(root / "r.csv"), "--images", "img"]
    argv += ["--image-root", str(root), "--model", str(root / "clip"), "--out", str(root / "ws")]
    assert main([*argv, "--one-to-one"]) == 0
    captured = capsys.readouterr()
    assert "linked 4 of 4 left rows to 4 right rows by image (4 pairs)" in captured.out
    assert "--images keeps every nearest match" in captured.err  # threshold auto: not for images
    ws = Workspace(root / "ws")
    run = ws.latest_run("link")
    pairs = ws.load_table(run, "pairs")
    assert pairs["right_row"].tolist() == [order.index(i) for i in range(4)]
    assert {"left_img", "right_img"} <= set(pairs.columns)
    params = ws.runs(kind="link")["params"].iloc[0]
    assert params["images"] == "img" and params["one_to_one"] is True and params["k"] == 1
    # image + text, and a threshold that keeps the pairs of identical images only
    assert main([*argv, "--on", "title", "--image-weight", "0.7", "--threshold", "0.999"]) == 0
    assert "by image + text" in capsys.readouterr().out
    pairs = ws.load_table(ws.latest_run("link"), "pairs")
    assert pairs["right_row"].tolist() == [order.index(i) for i in range(4)]


def test_link_images_without_a_clip_model_says_what_to_give(image_tables, capsys):
    root, _ = image_tables
    argv = ["link", str(root / "l.csv"), str(root / "r.csv"), "--images", "img"]
    argv += ["--out", str(root / "ws")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--images needs a CLIP model and none installs with loom" in err
    assert "give --model FOLDER" in err and "save_pretrained" in err
    assert main([*argv, "--model", str(root), "--image-root", str(root)]) == 2
    assert f"--model {root}: {root} is not a CLIP checkpoint folder" in capsys.readouterr().err
    # image paths are checked before the model loads: relative to the current folder here
    assert main([*argv, "--model", str(root / "clip")]) == 2
    assert "LEFT" in (err := capsys.readouterr().err) and "do not exist from this folder" in err
    for flags, message in [
        (["--char-weight", "0.5"], "--char-weight 0.5: spelling similarity is for text keys"),
        (["--image-weight", "0.2"], "name the text column(s) with --on"),
        (["--image-weight", "2", "--on", "title"], "--image-weight 2.0: give a share"),
        (["--left-on", "title", "--right-on", "title"], "--images links on --on columns"),
        (["--blocking-on", "title"], "--blocking-on does not work with --images"),
        (["--on", "titel"], "(named by --on)"),
    ]:
        assert main([*argv, "--model", str(root / "clip"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (root / "ws").exists()
