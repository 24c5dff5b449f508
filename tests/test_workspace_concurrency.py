"""Several processes on one workspace: 4 writers start, fill and finish runs while a 5th reads
everything through the app's data layer (apps/app/data.py), as the Streamlit app does."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.workspace import Workspace

SPAWN = mp.get_context("spawn")  # separate interpreters, like two `loom` commands
pytestmark = pytest.mark.slow  # ~20 s: 100 catalog writes serialised through one lock
WRITERS, RUNS = 4, 5


def _tables(writer: int, i: int) -> dict[str, pd.DataFrame]:
    n = 200 + 50 * writer + i
    rows = np.arange(n)
    return {
        "data": pd.DataFrame({"row": rows, "text": [f"w{writer} r{i} #{k}" for k in rows]}),
        "L": pd.DataFrame({"lf_a": (rows + i) % 3 - 1, "lf_b": (rows * writer) % 2}),
        "probs": pd.DataFrame({"row": rows, "prob_1": rows / n, "pred": rows % 2}),
    }


def _writer(path: str, writer: int) -> None:
    ws = Workspace(path)
    for i in range(RUNS):
        run = ws.start_run("label", {"writer": writer, "i": i})
        for name, df in _tables(writer, i).items():
            ws.save_table(run, name, df)
        ws.finish_run(run, summary={"writer": writer, "i": i})


def _reader(path: str, stop, results, ready) -> None:
    from apps.app.data import EmptyWorkspace, WorkspaceReader

    ready.set()  # imports done: the writers start now, so reading overlaps writing
    loops, during, most, errors = 0, 0, 0, []
    while not stop.is_set() or loops < 3:
        loops += 1
        during += not stop.is_set()  # reads begun while the writers were writing
        try:
            reader = WorkspaceReader(path)
        except EmptyWorkspace:
            continue
        try:
            runs = reader.runs()
            most = max(most, int((runs["status"] == "complete").sum()))
            for r in runs[runs["status"] == "complete"].itertuples():
                listed = reader.tables(r.run_id)
                want = _tables(r.params["writer"], r.params["i"])
                if sorted(listed["name"]) != sorted(want) or not listed["present"].all():
                    errors.append(f"{r.run_id}: complete but tables {list(listed['name'])}")
                    continue
                for name, df in want.items():
                    if reader.count(r.run_id, name) != len(df):
                        errors.append(f"{r.run_id}/{name}: wrong row count")
                page = reader.page(r.run_id, "data", limit=3, offset=len(want["data"]) - 3)
                if list(page["text"]) != list(want["data"]["text"].iloc[-3:]):
                    errors.append(f"{r.run_id}/data: wrong last page")
        except Exception as e:  # anything the app would show as an error
            errors.append(f"{type(e).__name__}: {e}")
    results.put((during, most, errors))


def test_four_writers_and_the_app_reader_share_one_workspace(tmp_path: Path):
    path = str(tmp_path / "ws")
    stop, results, ready = SPAWN.Event(), SPAWN.Queue(), SPAWN.Event()
    reader = SPAWN.Process(target=_reader, args=(path, stop, results, ready))
    reader.start()
    assert ready.wait(120), "the reader process did not start"
    writers = [SPAWN.Process(target=_writer, args=(path, w)) for w in range(WRITERS)]
    t0 = time.monotonic()
    for p in writers:
        p.start()
    for p in writers:
        p.join(240)
    seconds = time.monotonic() - t0
    stop.set()
    during, most, errors = results.get(timeout=120)
    reader.join(30)
    assert [p.exitcode for p in writers] == [0] * WRITERS
    assert not errors, errors[:5]
    assert during >= 1, f"the reader read {during} times while the writers wrote ({seconds:.1f} s)"

    ws = Workspace(path)
    runs = ws.runs("label")
    assert len(runs) == WRITERS * RUNS and (runs["status"] == "complete").all()
    assert runs["run_id"].is_unique
    for r in runs.itertuples():
        want = _tables(r.params["writer"], r.params["i"])
        assert sorted(ws.tables(r.run_id)["name"]) == sorted(want)
        for name, df in want.items():
            pd.testing.assert_frame_equal(ws.load_table(r.run_id, name), df)
    assert ws.check().ok, str(ws.check())
