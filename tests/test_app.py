"""AppTest tests of every page of the Streamlit app, on a workspace made by the demo code
(quick mode) where a capability's demo exists, else on schema-true fixture runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app_fixtures import build_app_workspace, label_run

from toolkit.workspace import Workspace

MAIN = str(Path(__file__).resolve().parents[1] / "apps" / "app" / "main.py")


@pytest.fixture(scope="session")
def app_workspace(tmp_path_factory) -> Path:
    return build_app_workspace(tmp_path_factory)


def open_page(page: str, workspace: Path | str, **state) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.session_state["workspace"] = str(workspace)
    at.session_state["page"] = page
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def run_ids(workspace: Path, kind: str) -> list[str]:
    return Workspace(workspace).runs(kind)["run_id"].tolist()


def texts(at: AppTest) -> str:
    parts = [e.value for e in at.caption] + [e.value for e in at.markdown]
    parts += [e.value for e in at.info] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


def frame_with(at: AppTest, *columns: str) -> pd.DataFrame:
    """The last dataframe on the page that has all `columns`."""
    frames = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert frames, f"no table with columns {columns}"
    return frames[-1]


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart"))


# Runs --------------------------------------------------------------------------------------
def test_runs_page_lists_runs_and_filters_by_kind(app_workspace):
    at = open_page("Runs", app_workspace)
    assert at.title[0].value == "Runs"
    table = at.dataframe[0].value
    assert {"label", "extract", "embed"} <= set(table["kind"])
    assert len(table) == len(Workspace(app_workspace).runs())
    at.multiselect(key="runs_kind").set_value(["label"]).run()
    assert_clean(at)
    assert set(at.dataframe[0].value["kind"]) == {"label"}
    assert at.selectbox(key="runs_pick").value in run_ids(app_workspace, "label")


def test_runs_page_table_preview_paginates(app_workspace):
    label = run_ids(app_workspace, "label")[0]
    at = open_page("Runs", app_workspace, selected_run=label)
    at.selectbox(key="runs_table").set_value("data").run()
    at.selectbox(key="runs_table_pages_size").set_value(10).run()
    first = at.dataframe[-1].value
    assert len(first) == 10
    at.number_input(key="runs_table_pages_page").set_value(2).run()
    assert_clean(at)
    second = at.dataframe[-1].value
    assert len(second) == 10
    assert set(first["row"]).isdisjoint(second["row"])
    assert "rows 11–20" in texts(at)


# Labeling ----------------------------------------------------------------------------------
def test_labeling_page_charts_and_example_filters(app_workspace):
    at = open_page("Labeling", app_workspace)
    heads = [h.value for h in at.subheader]
    for h in ("LF summary", "Overlaps and conflicts between LFs", "Class balance", "Examples"):
        assert h in heads
    assert charts(at) >= 3
    run = at.selectbox(key="label_run").value
    n_rows = Workspace(app_workspace).count_rows(run, "data")
    assert f"of {n_rows:,}" in texts(at)

    at.selectbox(key="label_mode").set_value("an LF fired").run()
    assert_clean(at)
    name = at.selectbox(key="label_lf").value
    shown = frame_with(at, "row", "text")
    col = name if name in shown.columns else f"lf:{name}"
    assert len(shown) and (shown[col] != -1).all()

    at.selectbox(key="label_mode").set_value("LFs disagree").run()
    assert_clean(at)
    shown = frame_with(at, "row", "text")
    L = Workspace(app_workspace).load_table(run, "L")
    fired = L.where(L != -1)
    disagree = int((fired.max(axis=1) > fired.min(axis=1)).sum())  # NaN (no vote) compares False
    assert f"of {disagree:,}" in texts(at) or (disagree == 0 and "no rows match" in texts(at))
    assert len(shown) == min(25, disagree)


def test_labeling_text_search_and_unsure_filter(app_workspace):
    at = open_page("Labeling", app_workspace)
    run = at.selectbox(key="label_run").value
    data = Workspace(app_workspace).load_table(run, "data")
    word = data["text"].str.split().explode().str.lower().value_counts().index[20]
    at.text_input(key="label_search").input(word).run()
    assert_clean(at)
    expected = int(data["text"].str.contains(word, case=False, regex=False).sum())
    assert f"of {expected:,}" in texts(at)
    assert frame_with(at, "row", "text")["text"].str.contains(word, case=False, regex=False).all()
    at.text_input(key="label_search").input("").run()
    at.selectbox(key="label_mode").set_value("label model unsure").run()
    at.slider(key="label_unsure").set_value(0.6).run()
    assert_clean(at)
    shown = frame_with(at, "row", "text", "confidence")
    assert (shown["confidence"] < 0.6).all()


def test_labeling_smoothing_tab_shows_liger_tables(app_workspace):
    ws = Workspace(app_workspace)
    runs = [r for r in run_ids(app_workspace, "label") if "coverage" in set(ws.tables(r)["name"])]
    assert runs, "the Liger demo part (or the fixture) writes a smoothing run"
    at = open_page("Labeling", app_workspace, selected_run=runs[0])
    heads = [h.value for h in at.subheader]
    assert "Coverage before / after smoothing" in heads and "Per-partition LF accuracy" in heads
    shown = frame_with(at, "lf", "before", "after")
    stored = ws.load_table(runs[0], "coverage")
    assert shown["after"].tolist() == pytest.approx(stored["after"].tolist())
    assert len(frame_with(at, "partition", "lf", "accuracy")) == ws.count_rows(
        runs[0], "partition_accuracy"
    )


# Extraction --------------------------------------------------------------------------------
def test_extraction_page_search_functions_and_documents(app_workspace):
    at = open_page("Extraction", app_workspace)
    run = at.selectbox(key="extract_run").value
    ws = Workspace(app_workspace)
    table = ws.load_table(run, "table")
    full = at.dataframe[0].value
    assert len(full) == min(25, len(table))
    value = str(table.drop(columns="doc_id").stack().astype(str).iloc[0])
    at.text_input(key="extract_search").input(value).run()
    assert_clean(at)
    hits = at.dataframe[0].value
    assert 0 < len(hits) <= len(full)
    assert hits.astype(str).apply(lambda r: value.lower() in " ".join(r).lower(), axis=1).all()

    funcs = ws.load_table(run, "functions")
    at.radio(key="extract_func_kept").set_value("dropped").run()
    assert_clean(at)
    shown = [d.value for d in at.dataframe if "function_id" in d.value.columns][0]
    assert not shown["kept"].astype(bool).any()
    assert at.code, "the code of a candidate function is shown"
    attr = at.selectbox(key="extract_func_attr").value
    assert len(shown) == int(((funcs["attribute"] == attr) & ~funcs["kept"].astype(bool)).sum())

    html = "".join(str(h.proto.body) for h in at.get("html"))
    prov = ws.load_table(run, "provenance") if "provenance" in set(ws.tables(run)["name"]) else None
    if prov is not None and (prov["start"] >= 0).any():
        at.number_input(key="extract_doc_i").set_value(1).run()
        html = "".join(str(h.proto.body) for h in at.get("html"))
        assert "<mark" in html
    tok = ws.load_table(run, "tokens")
    assert charts(at) >= 1, "the tokens chart"
    if (tok["stage"] == "sample_direct").any():
        report = ws.load_json(run, "report")
        per_doc = tok.loc[tok["stage"] == "sample_direct", ["prompt_tokens", "completion_tokens"]]
        expected = per_doc.to_numpy().sum() / len(report["sample"]) * report["documents"]
        assert f"about **{expected:,.0f}** tokens" in texts(at)


# Linking -----------------------------------------------------------------------------------
def test_linking_threshold_updates_precision_recall(app_workspace):
    link = run_ids(app_workspace, "link")[0]
    at = open_page("Linking", app_workspace, selected_run=link)
    assert at.selectbox(key="link_run").value == link
    metrics = {m.label: m.value for m in at.metric}
    assert "precision" in metrics and "recall" in metrics, "gold pairs give precision/recall"
    slider = at.slider(key="link_threshold")
    lo, hi = slider.min, slider.max
    slider.set_value(lo).run()
    low = {m.label: m.value for m in at.metric}
    at.slider(key="link_threshold").set_value(hi).run()
    assert_clean(at)
    high = {m.label: m.value for m in at.metric}
    assert float(low["recall"]) >= float(high["recall"])
    assert low["pairs kept"] != high["pairs kept"]
    at.selectbox(key="link_view").set_value("all").run()
    all_pairs = at.dataframe[-1].value
    assert all_pairs["score"].is_monotonic_decreasing


def test_dedup_cluster_browser_filters(app_workspace):
    runs = run_ids(app_workspace, "dedup")
    if not runs:
        pytest.skip("the linking demo wrote no dedup run")
    at = open_page("Linking", app_workspace, selected_run=runs[0])
    clusters = Workspace(app_workspace).load_table(runs[0], "clusters")
    sizes = clusters.groupby("cluster_id").size()
    at.number_input(key="dedup_min_size").set_value(2).run()
    assert_clean(at)
    table = [d.value for d in at.dataframe if "size" in d.value.columns][0]
    assert (table["size"] >= 2).all()
    assert f"of {int((sizes >= 2).sum()):,}" in texts(at) or int((sizes >= 2).sum()) <= 25


def test_cluster_runs_open_in_the_cluster_browser(tmp_path):
    """`loom cluster` writes a run of kind "cluster" with dedup's tables: the Linking page
    lists it and shows its pairs and clusters."""
    from test_app_fixtures import dedup_run

    ws = Workspace(tmp_path / "ws")
    run = dedup_run(ws, n=60, kind="cluster")
    at = open_page("Linking", tmp_path / "ws", selected_run=run)
    assert_clean(at)
    at.number_input(key="dedup_min_size").set_value(2).run()
    assert_clean(at)
    assert any("size" in d.value.columns for d in at.dataframe)


# Embeddings --------------------------------------------------------------------------------
def test_embeddings_page_projects_embed_run_and_colours_label_run(app_workspace):
    embed = run_ids(app_workspace, "embed")[0]
    at = open_page("Embeddings", app_workspace, selected_run=embed)
    assert at.selectbox(key="emb_run").value == embed
    assert charts(at) == 1
    at.selectbox(key="emb_method").set_value("pca").run()
    at.number_input(key="emb_clusters").set_value(3).run()
    assert_clean(at)
    sizes = at.dataframe[-1].value
    assert len(sizes) == 3 and sizes["size"].sum() == at.slider(key="emb_n").value

    label = [
        r
        for r in run_ids(app_workspace, "label")
        if "embeddings_2d" in set(Workspace(app_workspace).tables(r)["name"])
    ]
    assert label, "the demo/fixture label run stores embeddings_2d"
    at = open_page("Embeddings", app_workspace, selected_run=label[0])
    options = at.selectbox(key="emb_label_color").options
    assert "pred" in options and any(o.startswith("LF ") for o in options)
    lf = next(o for o in options if o.startswith("LF "))
    at.selectbox(key="emb_label_color").set_value(lf).run()
    assert_clean(at)
    counts = at.dataframe[-1].value
    assert lf in counts.columns and "abstain" in set(counts[lf])


# Bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["Runs", "Labeling", "Extraction", "Linking", "Embeddings"])
def test_missing_and_empty_workspaces_give_a_message(tmp_path, page):
    at = open_page(page, tmp_path / "nowhere")
    assert "there is no workspace" in texts(at)
    (tmp_path / "empty").mkdir()
    at = open_page(page, tmp_path / "empty")
    assert "no catalog.duckdb" in texts(at)
    Workspace(tmp_path / "fresh")
    at = open_page(page, tmp_path / "fresh")
    assert "has no runs yet" in texts(at)


def test_missing_corrupt_and_old_tables_give_messages(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run = label_run(ws, n=80)
    (ws.path / "runs" / run / "lf_summary.parquet").write_bytes(b"PAR1 not really parquet")
    (ws.path / "runs" / run / "probs.parquet").unlink()
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["workspace"] = str(ws.path)
    at.session_state["page"] = "Labeling"
    at.run()
    assert not at.exception
    msgs = texts(at) + "\n".join(e.value for e in at.error)
    assert "lf_summary" in msgs and "unreadable" in msgs
    assert "no probabilistic labels" in msgs
    assert "Traceback" not in msgs

    old = ws.start_run("label", {"made by": "loom 0.0"})
    ws.save_table(old, "data", pd.DataFrame({"row": [0, 1], "text": ["a", "b"]}))
    ws.save_table(old, "L", pd.DataFrame({"lf_a": [0, -1]}))
    ws.save_table(old, "lf_summary", pd.DataFrame({"name": ["lf_a"], "cov": [0.5]}))
    ws.finish_run(old)
    import duckdb

    con = duckdb.connect(str(ws.catalog_path))
    con.execute("UPDATE runs SET schema_version = 0 WHERE run_id = ?", [old])
    con.close()
    at = open_page("Labeling", ws.path, selected_run=old)
    assert "older loom (schema v0" in texts(at)
    at = open_page("Runs", ws.path, selected_run=old)
    assert old in set(at.dataframe[0].value["run_id"])


def test_failed_run_is_flagged(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("extract", {"folder": "docs/"})
    ws.save_table(run, "table", pd.DataFrame({"doc_id": ["a"], "title": ["x"]}))
    ws.finish_run(run, status="failed")
    at = open_page("Extraction", ws.path)
    assert "'failed', not complete" in texts(at)
    assert "no candidate functions" in texts(at)


# CLI ---------------------------------------------------------------------------------------
def test_loom_app_command_checks_the_workspace(tmp_path):
    from apps.cli import main
    from apps.commands.app import streamlit_command

    assert main(["app", str(tmp_path / "missing")]) == 2
    cmd = streamlit_command(tmp_path, 8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[-1] == str(tmp_path.resolve()) and cmd[cmd.index("--server.port") + 1] == "8600"
    Workspace(tmp_path / "ws")
    res = subprocess.run(
        [sys.executable, "-m", "apps.cli", "app", str(tmp_path / "ws"), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=Path(MAIN).parents[2],
        timeout=60,
    )
    assert res.returncode == 2 and "--port 0" in res.stderr
    assert shutil.which(sys.executable)
