"""Workspace faults: what a killed writer leaves and how `check()` reports it, two processes on
one run, truncated Parquet, old/newer/foreign catalogs, a catalog held by another program,
run-id collisions, files that vanish while a folder is read, and a hypothesis round trip."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolkit.workspace as workspace_module
from toolkit.errors import LoomError
from toolkit.workspace import Workspace

FORK = mp.get_context("fork")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _start_and_hang(path: Path, queue) -> None:
    ws = Workspace(path)
    run = ws.start_run("label", {"n": 3})
    ws.save_table(run, "data", pd.DataFrame({"row": [0, 1, 2], "text": list("abc")}))
    queue.put(run)
    time.sleep(120)


def _live_writer(path: Path):
    """A real second process that starts a run, writes a table and stays alive."""
    queue = FORK.Queue()
    proc = FORK.Process(target=_start_and_hang, args=(path, queue), daemon=True)
    proc.start()
    return proc, queue.get(timeout=60)


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)


def test_check_reports_what_crashes_leave_and_deletes_nothing(tmp_path):
    ws = Workspace(tmp_path)
    proc, killed = _live_writer(tmp_path)
    assert ws.is_active(killed) and ws.check().ok  # a live writer is not a problem
    _kill(proc)
    good = ws.start_run("link")
    ws.save_table(good, "pairs", pd.DataFrame({"score": [0.1, 0.9]}))
    for name in ("gone", "cut", "swapped"):
        ws.save_table(good, name, pd.DataFrame({"x": np.arange(1000)}))
    ws.finish_run(good)
    rd = tmp_path / "runs" / good
    (rd / "gone.parquet").unlink()  # a row pointing at nothing
    cut = (rd / "cut.parquet").read_bytes()
    (rd / "cut.parquet").write_bytes(cut[: len(cut) // 2])  # truncated Parquet
    pq.write_table(pa.table({"x": [1, 2]}), rd / "swapped.parquet")  # not what was recorded
    pq.write_table(pa.table({"y": [1]}), rd / "extra.parquet")  # a file with no row
    (rd / ".pairs.parquet.x1y2.tmp").write_bytes(b"half")  # an interrupted atomic write
    (tmp_path / "runs" / "label-20990101-000000-dead").mkdir()  # a folder with no run row
    before = _files(tmp_path)

    report = ws.check()
    found = {(f.kind, f.run, f.name) for f in report.findings}
    assert found == {
        ("interrupted_run", killed, ""),
        ("missing_file", good, "gone"),
        ("unreadable_table", good, "cut"),
        ("row_count_mismatch", good, "swapped"),
        ("unlisted_file", good, "extra"),
        ("unlisted_run_folder", "label-20990101-000000-dead", ""),
        ("temp_file", good, ""),
    }
    assert not report.ok and report.interrupted_runs == [killed]
    text = str(report)
    assert f"runs/{good}/cut.parquet" in text and "re-run" in text and "safe to delete" in text
    assert _files(tmp_path) == before  # it reports; it never deletes or rewrites
    quick = {f.kind for f in ws.check(deep=False).findings}
    assert "unreadable_table" not in quick and "missing_file" in quick
    assert ws.runs().set_index("run_id").loc[killed, "status"] == "running"


def test_a_run_has_one_writer_and_is_taken_over_after_its_process_dies(tmp_path):
    ws = Workspace(tmp_path)
    proc, run = _live_writer(tmp_path)
    try:
        with pytest.raises(LoomError, match="being written by another live process"):
            ws.save_table(run, "L", pd.DataFrame({"a": [0]}))
        with pytest.raises(LoomError, match="another live process"):
            ws.finish_run(run)
    finally:
        _kill(proc)
    assert not ws.is_active(run)
    ws.save_table(run, "L", pd.DataFrame({"a": [0, 1, -1]}))  # resuming the dead run
    ws.finish_run(run)
    assert ws.check().ok
    assert list(ws.tables(run)["name"]) == ["L", "data"]


def test_truncated_parquet_gives_a_clear_error_on_every_read(tmp_path):
    ws = Workspace(tmp_path)
    run = ws.start_run("label")
    path = ws.save_table(run, "probs", pd.DataFrame({"p": np.linspace(0, 1, 500)}))
    path.write_bytes(path.read_bytes()[:300])
    for read in (
        lambda: ws.load_table(run, "probs"),
        lambda: ws.load_table(run, "probs", limit=5),
        lambda: ws.count_rows(run, "probs"),
    ):
        with pytest.raises(LoomError, match="is unreadable") as err:
            read()
        assert str(path) in str(err.value) and "Re-run the command" in str(err.value)
    assert [f.kind for f in ws.check().findings] == ["unreadable_table"]
    assert path.stat().st_size == 300


def _old_catalog(path: Path) -> None:
    """A catalog as loom wrote it before schema_version, summary and the tables table."""
    path.mkdir()
    con = duckdb.connect(str(path / "catalog.duckdb"))
    con.execute(
        "CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, kind VARCHAR, created TIMESTAMP,"
        " status VARCHAR, params VARCHAR)"
    )
    con.execute(
        "INSERT INTO runs VALUES ('label-old', 'label', ?, 'complete', '{\"n\": 2}')",
        [datetime(2024, 1, 1, tzinfo=UTC)],
    )
    con.close()


def test_a_catalog_from_an_older_schema_is_migrated(tmp_path):
    _old_catalog(tmp_path / "ws")
    ws = Workspace(tmp_path / "ws")
    runs = ws.runs()
    assert list(runs["run_id"]) == ["label-old"] and runs.loc[0, "params"] == {"n": 2}
    assert runs.loc[0, "summary"] == {} and ws.tables("label-old").empty
    run = ws.start_run("label")
    ws.save_table(run, "L", pd.DataFrame({"a": [1]}))
    ws.finish_run(run, summary={"accuracy": 1.0})
    assert ws.latest_run("label") == run and ws.check().ok
    con = duckdb.connect(str(ws.catalog_path), read_only=True)
    assert (
        con.execute("SELECT schema_version FROM runs WHERE run_id = 'label-old'").fetchone()[0] == 0
    )
    con.close()


@pytest.mark.parametrize(
    "make, message",
    [
        (
            "CREATE TABLE meta (key VARCHAR, value VARCHAR);"
            "INSERT INTO meta VALUES ('catalog_version', '99')",
            "written by a newer loom",
        ),
        ("CREATE TABLE runs (id VARCHAR, kind VARCHAR)", "not written by loom"),
        (b"not a database" * 100, "cannot open the workspace catalog"),
    ],
)
def test_newer_foreign_or_damaged_catalogs_are_refused_clearly(tmp_path, make, message):
    catalog = tmp_path / "catalog.duckdb"
    if isinstance(make, bytes):
        catalog.write_bytes(make)
    else:
        con = duckdb.connect(str(catalog))
        con.execute(make)
        con.close()
    before = catalog.read_bytes()
    with pytest.raises(LoomError, match=message):
        Workspace(tmp_path)
    assert catalog.read_bytes() == before


def _hold_catalog(path: Path, seconds: float, ready) -> None:
    con = duckdb.connect(str(path))  # another program: DuckDB's own lock, not loom's
    ready.set()
    time.sleep(seconds)
    con.close()


def test_a_catalog_held_by_another_program_is_retried_then_refused(tmp_path):
    ws = Workspace(tmp_path)
    ready = FORK.Event()
    proc = FORK.Process(target=_hold_catalog, args=(ws.catalog_path, 1.5, ready))
    proc.start()
    assert ready.wait(30)
    t0 = time.monotonic()
    run = ws.start_run("embed")  # waits for the other program, with backoff
    assert time.monotonic() - t0 > 0.5 and ws.runs().loc[0, "run_id"] == run
    proc.join(10)
    ready.clear()
    proc = FORK.Process(target=_hold_catalog, args=(ws.catalog_path, 30, ready))
    proc.start()
    assert ready.wait(30)
    try:
        with pytest.raises(LoomError, match="stayed locked by another program"):
            Workspace(tmp_path, lock_timeout=0.5).runs()
    finally:
        _kill(proc)


def test_run_ids_never_collide(tmp_path, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2030, 1, 1, 12, 0, 0, tzinfo=tz)

    tokens = iter(["dead", "dead", "beef"])
    monkeypatch.setattr(workspace_module, "datetime", Frozen)
    monkeypatch.setattr(workspace_module.secrets, "token_hex", lambda n: next(tokens))
    ws = Workspace(tmp_path)
    a, b = ws.start_run("label"), ws.start_run("label")  # same second, same first token
    assert (a, b) == ("label-20300101-120000-dead", "label-20300101-120000-beef")


def test_files_that_vanish_while_a_folder_is_read_are_reported(tmp_path, monkeypatch):
    """The loader's progress iterator is wrapped so that the next file is really deleted just
    before it is read: the race of a folder changing under `loom extract`, made repeatable."""
    import tqdm.auto

    from extraction.documents import load_folder

    for i in range(4):
        (tmp_path / f"d{i}.txt").write_text(f"Name: P{i}\nCity: York\n")
    real = tqdm.auto.tqdm

    def vanishing(files, **kw):
        for i, path in enumerate(real(files, **kw)):
            if i % 2:
                path.unlink()
            yield path

    monkeypatch.setattr(tqdm.auto, "tqdm", vanishing)
    docs, skipped = load_folder(tmp_path)
    assert list(docs["path"]) == ["d0.txt", "d2.txt"]
    assert list(skipped["path"]) == ["d1.txt", "d3.txt"]
    assert skipped["reason"].str.contains("vanished").all()


def _frames():
    names = st.lists(
        st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
        min_size=1,
        max_size=5,
        unique=True,
    )
    text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
    cells = {
        "int": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(allow_nan=True, allow_infinity=True),
        "str": text,
        "bool": st.booleans(),
        "str_or_none": st.one_of(st.none(), text),
        "float_or_none": st.one_of(st.none(), st.floats(allow_nan=False)),
    }

    @st.composite
    def frame(draw):
        n = draw(st.integers(0, 6))
        data = {}
        for name in draw(names):
            kind = draw(st.sampled_from(sorted(cells)))
            values = draw(st.lists(cells[kind], min_size=n, max_size=n))
            data[name] = pd.Series(values, dtype="float64" if kind == "float_or_none" else None)
        return pd.DataFrame(data, index=pd.RangeIndex(n))

    return frame()


_HYPO: dict[str, object] = {}


def _hypothesis_run() -> tuple[Workspace, str]:
    """One workspace and run for all examples (each example overwrites table `t`)."""
    if not _HYPO:
        _HYPO["dir"] = tempfile.TemporaryDirectory(prefix="loom-ws-hypothesis-")
        ws = Workspace(_HYPO["dir"].name)
        _HYPO["ws"], _HYPO["run"] = ws, ws.start_run("embed")
    return _HYPO["ws"], _HYPO["run"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=_frames())
def test_round_trip_of_random_frames(df):
    ws, run = _hypothesis_run()
    ws.save_table(run, "t", df)
    back = ws.load_table(run, "t")
    pd.testing.assert_frame_equal(back, df, check_dtype=len(df) > 0, check_column_type=False)
    listed = ws.tables(run).set_index("name").loc["t"]
    assert listed["columns"] == list(df.columns) and int(listed["rows"]) == len(df)
