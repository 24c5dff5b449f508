import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from toolkit.errors import LoomError
from toolkit.workspace import Workspace


def test_round_trip(tmp_path):
    ws = Workspace(tmp_path / "ws")
    run = ws.start_run("label", {"lfs": 3, "data": "x.csv"})
    df = pd.DataFrame(
        {
            "text": ["a", "b", "c"],
            "lf_a": np.array([0, -1, 1], dtype=np.int8),
            "vec": [np.ones(3, np.float32)] * 3,
        }
    )
    ws.save_table(run, "L", df)
    ws.save_json(run, "report", {"accuracy": np.float64(0.9)})
    ws.finish_run(run, summary={"accuracy": 0.9})
    back = ws.load_table(run, "L")
    pd.testing.assert_frame_equal(back.drop(columns="vec"), df.drop(columns="vec"))
    assert back["lf_a"].dtype == np.int8
    np.testing.assert_array_equal(np.stack(back["vec"]), np.ones((3, 3)))
    runs = Workspace(tmp_path / "ws").runs()  # a new process would see the same
    assert runs.loc[0, "run_id"] == run and runs.loc[0, "status"] == "complete"
    assert runs.loc[0, "params"] == {"lfs": 3, "data": "x.csv"}
    assert runs.loc[0, "summary"] == {"accuracy": 0.9}
    assert ws.load_json(run, "report") == {"accuracy": 0.9}
    assert ws.tables(run).loc[0, "rows"] == 3
    assert ws.latest_run("label") == run


def test_pages_and_filters(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("link")
    ws.save_table(run, "pairs", pd.DataFrame({"score": np.linspace(0, 1, 101)}))
    page = ws.load_table(run, "pairs", limit=10, offset=20)
    assert len(page) == 10 and page["score"].iloc[0] == pytest.approx(0.2)
    assert ws.count_rows(run, "pairs", where="score > 0.5") == 50


def test_running_until_finished_and_errors(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("extract")
    assert ws.runs().loc[0, "status"] == "running"
    with pytest.raises(LoomError, match="no table 'nope'"):
        ws.load_table(run, "nope")
    with pytest.raises(LoomError, match="no run"):
        ws.save_table("embed-0-0", "x", pd.DataFrame({"a": [1]}))
    with pytest.raises(LoomError, match="invalid table name"):
        ws.save_table(run, "../escape", pd.DataFrame({"a": [1]}))
    with pytest.raises(LoomError, match="is a file"):
        Workspace(ws.catalog_path)


def _write_forever(path, run):
    ws = Workspace(path)
    big = pd.DataFrame({"x": np.arange(2_000_000)})
    while True:
        ws.save_table(run, "t", big)


def test_killed_writer_never_leaves_half_table(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("embed")
    ws.save_table(run, "t", pd.DataFrame({"x": np.arange(2_000_000)}))
    proc = mp.get_context("spawn").Process(target=_write_forever, args=(tmp_path, run))
    proc.start()
    time.sleep(6)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    back = ws.load_table(run, "t")  # always the old or the new full table
    assert len(back) == 2_000_000 and back["x"].iloc[-1] == 1_999_999
