"""Unusual but legitimate, or plainly bad, input to the shared toolkit's public API: the vector
index, the workspace, the embedding cache and the device and batching options of embedders.
Each case either round-trips exactly or is a LoomError naming the input and the fix."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import toolkit.index as index_module
from toolkit.device import resolve_device
from toolkit.embed.cache import EmbeddingCache
from toolkit.errors import LoomError
from toolkit.index import VectorIndex, knn
from toolkit.index_torch import TorchFlat
from toolkit.workspace import Workspace

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 4)).astype(np.float32)


# vector index ------------------------------------------------------------------------------
def test_ids_that_int64_cannot_hold_or_that_mean_missing_are_refused():
    big = np.array([2**63 + 5, 1], dtype=np.uint64)  # used to wrap to a negative id
    with pytest.raises(LoomError, match="do not fit in a signed 64-bit integer"):
        VectorIndex(4).add(X[:2], ids=big)
    with pytest.raises(LoomError, match="returns -1 where it found no vector"):
        VectorIndex(4).add(X[:2], ids=[-1, 5])
    # default ids continue after negative ids without ever producing -1
    index = VectorIndex(4).add(X[:2], ids=[-5, -3]).add(X[2:4])
    _, ids = index.search(X[:4], 4)
    assert -1 not in ids and sorted(ids[0].tolist()) == [-5, -3, 0, 1]


@pytest.mark.parametrize(
    "vectors, match",
    [
        (X.astype(np.complex128), "real numbers"),  # the imaginary part was dropped
        (np.full((1, 4), 1e300), "beyond float32's range"),  # was called NaN/inf
    ],
)
def test_vectors_that_float32_cannot_hold_are_refused(vectors, match):
    with pytest.raises(LoomError, match=match):
        VectorIndex(4, metric="l2").add(vectors)


def test_unknown_parameters_and_bad_settings_are_errors():
    with pytest.raises(LoomError, match=r"unknown parameters \['nprobes'\]"):
        VectorIndex(4, kind="ivf", nprobes=4)  # a typo was silently ignored
    index = VectorIndex(4, kind="ivf", nlist=1).add(np.tile(X, (10, 1)))
    for bad in (0, -1, "8", True):  # raw FAISS errors or silent coercion before
        with pytest.raises(LoomError, match="nprobe must be a positive integer"):
            index.tune(nprobe=bad)
    with pytest.raises(LoomError, match="k must be a positive integer"):
        index.search(X[:1], True)


def test_parameters_of_another_kind_are_logged_not_silently_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="toolkit.index_checks"):
        VectorIndex(4, kind="hnsw", nprobe=8)
        VectorIndex(4).tune(ef_search=10)
    assert "does not use ['nprobe']" in caplog.text
    assert "does not use ['ef_search']" in caplog.text


def test_knn_says_what_is_wrong_with_k_and_tiny_inputs():
    with pytest.raises(LoomError, match="k must be a positive integer, got -1"):
        knn(X, -1)  # said "got 0"
    with pytest.raises(LoomError, match="knn\\(\\) got 1 rows: it needs at least 2"):
        knn(X[:1], 1)  # said "use k <= 0"


def test_save_keeps_files_of_the_folder_that_are_not_its_own(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    mine = ["ids.npy", "ids-train.npy", "index-old.faiss", "index.faiss"]
    for name in mine:
        (folder / name).write_bytes(b"user data")
    index = VectorIndex(4).add(X)
    index.save(folder)
    index.add(X).save(folder)  # a second save removes only the first save's files
    for name in mine:
        assert (folder / name).read_bytes() == b"user data", name
    own = sorted(p.name for p in folder.iterdir() if p.name not in mine)
    assert len(own) == 3 and own[-1] == "meta.json"
    assert len(VectorIndex.load(folder)) == 12


def test_save_refuses_a_file_or_a_foreign_meta_json_and_expands_home(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LoomError, match="it is a file; give a folder"):
        VectorIndex(4).add(X).save(tmp_path / "file")
    other = tmp_path / "model"
    other.mkdir()
    (other / "meta.json").write_text('{"author": "someone"}')
    with pytest.raises(LoomError, match="not the meta.json of a saved VectorIndex"):
        VectorIndex(4).add(X).save(other)
    assert json.loads((other / "meta.json").read_text()) == {"author": "someone"}
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    VectorIndex(4).add(X).save("~/idx")  # made a folder named "~" in the working directory
    assert (tmp_path / "home" / "idx" / "meta.json").exists() and not (tmp_path / "~").exists()
    assert len(VectorIndex.load("~/idx")) == 6


@pytest.mark.parametrize("field, value", [("dim", 8), ("metric", "l2")])
def test_load_checks_meta_json_against_the_faiss_file(tmp_path, field, value):
    VectorIndex(4).add(X).save(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / "meta.json").read_text())
    meta[field] = value  # an AssertionError in FAISS, or silently wrong scores, before
    (tmp_path / "i" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LoomError, match="save the index again"):
        VectorIndex.load(tmp_path / "i")


def test_exact_torch_search_on_a_gpu_returns_more_than_2048_neighbours(monkeypatch):
    """FAISS's GPU limit of 2048 applied to the torch path too: the rest came back as -1."""

    class CpuFlat(TorchFlat):  # the torch GPU path, run on the CPU
        def __init__(self, dim, metric, device):
            super().__init__(dim, metric, ["cpu"])

    monkeypatch.setattr(index_module, "TorchFlat", CpuFlat)
    monkeypatch.setattr(VectorIndex, "_torch_gpu", lambda self: True)
    x = RNG.normal(size=(2100, 4)).astype(np.float32)
    threads = torch.get_num_threads()
    # one thread: a pool of OpenMP workers started in pytest's process would hang the tests
    # that fork it later (tests/test_workspace_kill.py's loom children)
    torch.set_num_threads(1)
    try:
        index = VectorIndex(4, device="cuda").add(x)
        assert isinstance(index._index, CpuFlat)
        _, ids = index.search(x[:2], 2100)
    finally:
        torch.set_num_threads(threads)
    assert sorted(ids[0].tolist()) == list(range(2100))


# workspace ---------------------------------------------------------------------------------
@pytest.fixture
def ws_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    return ws, ws.start_run("edges")


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(5, 7)),  # came back as 0, 1
        pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(0, 4, 2, name="row")),
        pd.DataFrame({0: [1], 1: [2]}),  # came back as '0', '1'
        pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
    ],
    ids=["range-start", "range-step-name", "int-columns", "multiindex-columns"],
)
def test_tables_round_trip_index_and_column_labels(ws_run, df):
    ws, run = ws_run
    ws.save_table(run, "t", df)
    pd.testing.assert_frame_equal(ws.load_table(run, "t"), df)


@pytest.mark.parametrize(
    "df, match",
    [
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicate column names \\['a'\\]"),
        (pd.DataFrame({"m": [1, "a"]}), "column m.*astype\\(str\\)"),
    ],
    ids=["duplicates", "mixed-values"],
)
def test_tables_parquet_cannot_hold_are_clear_errors(ws_run, df, match):
    ws, run = ws_run
    with pytest.raises(LoomError, match=match):
        ws.save_table(run, "t", df)
    assert ws.tables(run).empty


def test_column_names_of_mixed_types_are_stored_as_strings_with_a_warning(ws_run, caplog):
    """A linking table read with header=None gets a "row" column: it is stored, as pyarrow
    stores it, and the log says the names come back as strings (a Python warning before)."""
    ws, run = ws_run
    with caplog.at_level(logging.WARNING, logger="toolkit.workspace_tables"):
        ws.save_table(run, "t", pd.DataFrame({"row": [0], 0: ["a"]}))
    assert "the column names ['row', 0] mix types" in caplog.text
    assert ws.load_table(run, "t").columns.tolist() == ["row", "0"]


def test_load_table_column_and_page_arguments(ws_run):
    ws, run = ws_run
    df = pd.DataFrame({"a": [1, 2, 3], "ab": [4, 5, 6], 'say "hi"': ["x", "y", "z"]})
    ws.save_table(run, "t", df)
    # a missing column was reported as a truncated or corrupt file
    with pytest.raises(LoomError, match="has no columns \\['nope'\\]; its columns are"):
        ws.load_table(run, "t", columns=["nope"])
    # a string was read as its characters: columns "a" and "b" (or an error about the file)
    for kw in ({}, {"limit": 2}):
        with pytest.raises(LoomError, match="give a list of column names"):
            ws.load_table(run, "t", columns="ab", **kw)
    got = ws.load_table(run, "t", columns=['say "hi"'], limit=2)  # was an SQL parser error
    assert got['say "hi"'].tolist() == ["x", "y"]
    for bad in (-1, 1.7, "2"):
        with pytest.raises(LoomError, match="give a whole number >= 0"):
            ws.load_table(run, "t", limit=bad)


def test_names_too_long_for_a_file_are_clear_errors(ws_run):
    ws, run = ws_run
    with pytest.raises(LoomError, match="300 characters\\): use at most 200"):
        ws.save_table(run, "x" * 300, pd.DataFrame({"a": [1]}))  # OSError before
    with pytest.raises(LoomError, match="use at most 200"):
        ws.start_run("k" * 300)


# embedding cache ---------------------------------------------------------------------------
def test_embedding_cache_put_and_get_check_their_input(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path / "c", "model")
    with pytest.raises(LoomError, match="3 keys and vectors of shape \\(2, 3\\)"):
        cache.put(["a", "b", "c"], np.ones((2, 3)))  # "c" was silently dropped
    with pytest.raises(LoomError, match="2-D array"):
        cache.put(["x"], np.ones(3))  # stored three 1-d vectors of length 1... under one key
    with pytest.raises(LoomError, match="not one string"):
        cache.get("ab")  # looked up the keys "a" and "b"
    with caplog.at_level(logging.WARNING, logger="toolkit.embed.cache"):
        cache.put(["nan", "ok"], np.array([[np.nan, 1, 1], [1, 2, 3]]))
    assert "1 of 2 vectors hold NaN or inf" in caplog.text
    got = cache.get(["nan", "ok", "a"])
    assert list(got) == ["ok"] and got["ok"].tolist() == [1, 2, 3]


# devices and batching options --------------------------------------------------------------
def test_resolve_device_names_bad_devices():
    with pytest.raises(LoomError, match="device='gpu' is not a torch device"):
        resolve_device("gpu")
    with pytest.raises(LoomError, match="not a device name"):
        resolve_device(1.0)
    assert resolve_device("cpu") == "cpu"
    import torch

    if not torch.cuda.is_available():
        for dev in ("cuda", 0):  # 0 silently meant "the default device"
            with pytest.raises(LoomError, match="no CUDA GPU is visible: use device='cpu'"):
                resolve_device(dev)
    else:
        with pytest.raises(LoomError, match="CUDA GPU\\(s\\) are visible"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    # torch knows these names but loom cannot run there: torch's own RuntimeError came later
    if not torch.backends.mps.is_available():
        with pytest.raises(LoomError, match="no usable MPS"):
            resolve_device("mps")
    for dev in ("xpu", "meta"):
        with pytest.raises(LoomError, match="loom runs on 'cpu', 'cuda\\[:N\\]' or 'mps'"):
            resolve_device(dev)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"overlap": -5}, "overlap=-5"),  # skipped 5 tokens between windows
        ({"overlap": 400}, "overlap=400"),  # embedded a long text once per token
        ({"token_budget": 0}, "token_budget=0"),
    ],
)
def test_embedder_batching_options_are_checked(kwargs, match):
    from toolkit.embed.transformer import TransformerEmbedder, default_model_path

    with pytest.raises(LoomError, match=match):
        TransformerEmbedder(default_model_path(), "cpu", **kwargs)


# fork ---------------------------------------------------------------------------------------
FORK_SCRIPT = """
import os, signal, sys
import torch
if sys.argv[1] == "toolkit":
    import toolkit  # what any loom program has imported before it forks
torch.set_num_threads(2)
x = torch.ones(20_000_000)
for _ in range(3):
    x.mul_(1.0001)  # GNU OpenMP's thread pool now exists in this process
pid = os.fork()
if pid == 0:  # the child imports linking only now, as a forked `loom link` does
    signal.alarm(10)
    import scipy.sparse as sp
    from linking.chargrams import top_k
    m = sp.random(400, 800, density=0.05, format="csr", random_state=0)
    top_k(m, m, 5)
    os._exit(0)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_openmp_work_in_a_forked_child_does_not_hang():
    # the fork hook lived in linking.chargrams, so a child that imported linking only after
    # the fork ran sparse_dot_topn's OpenMP region on the parent's dead pool and never
    # returned (tests/test_workspace_kill.py hung after other tests had used torch)
    def child_exit(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", FORK_SCRIPT, mode], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.strip().splitlines()[-1])

    assert child_exit("none") == -signal.SIGALRM  # control: without the hook the child hangs
    assert child_exit("toolkit") == 0


def test_finish_run_takes_only_known_statuses(ws_run):
    ws, run = ws_run
    with pytest.raises(LoomError, match=r"status='completed': a run ends as one of"):
        ws.finish_run(run, "completed")  # would have hidden the run from latest_run()
    ws.finish_run(run, "complete")
    assert ws.latest_run("edges") == run
