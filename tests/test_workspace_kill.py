"""kill -9 fault tests: `loom extract`, `loom label` and `loom link` are SIGKILLed at seeded
points, re-run to completion, and compared with an uninterrupted run.

Each run is a child forked from this test process, which has already imported loom and
loaded the embedding model: a fresh interpreter per kill would spend ~5 s on imports, too
slow for 60+ kills on a 2-core CI box. The child runs the real `apps.cli.main(argv)`, writes
the real workspace and dies by a real SIGKILL (no cleanup, no finally). Half of the kill
points are seeded random delays spread over the measured uninterrupted duration (they land
anywhere: in the LLM, the sandbox, a fsync, a DuckDB commit); the other half are seeded
workspace steps, counted in the child only (before/after each atomic file write, and after
each catalog transaction but before its connection is closed), so the narrow windows
between a table file and its catalog row are hit on every run of the suite, not by luck.

The LLM is a test double on purpose (no offline model answers fast and deterministically):
it reads the `Key: value` lines of the documents, and is served by loom's real
OpenAI-compatible server on loopback, reached by URL as a user's model would be.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from toolkit.llm import LLM, Completion
from toolkit.workspace import Workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="forks children"),
]
FORK = mp.get_context("fork")
KILLS = 20  # per command: 10 at random delays, 10 at random workspace steps
CITIES = ["Leeds", "York", "Bath", "Derby", "Exeter", "Hull", "Ely", "Wells"]
# what each command writes into its run; `tokens` differs on resume by design (a resumed
# run re-uses checkpointed stages and cached completions), so it is checked, not compared
OUTPUTS = {
    "extract": ["documents", "functions", "provenance", "table", "tokens"],
    "label": ["L", "data", "lf_summary", "probs", "weights"],
    "link": ["left", "pairs", "right"],
}
NOT_COMPARED = {"tokens"}


class KeyValueLLM(LLM):
    """Answers a question about a document from its `Key: value` line; writes a regular
    expression for that key when asked for code."""

    name = "key-value"

    def __init__(self) -> None:
        super().__init__(cache=False)

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        out = []
        for p in prompts:
            if "Python function" in p:
                key = re.search(r"(?:returns the|finds the) (\w+)", p).group(1).replace("_", " ")
                code = (
                    "import re\ndef extract(text):\n"
                    f"    m = re.search(r'(?im)^{key}:[ \\t]*(.+)$', text)\n"
                    "    return m.group(1).strip() if m else ''\n"
                )
                out.append(Completion(f"```python\n{code}```", 40, 40))
            else:
                q = re.search(r"What is the (.+?) in the document above", p)
                key = q.group(1).replace("_", " ") if q else "?"
                m = re.search(rf"(?im)^{re.escape(key)}:[ \t]*(.+)$", p)
                out.append(Completion(m.group(1).strip() if m else "none", 40, 3))
        return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, embedder):
    from toolkit.llm_server import make_server

    root = tmp_path_factory.mktemp("kill")
    docs = root / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"r{i:02d}.txt").write_text(
            f"Name: Person {i}\nCity: {CITIES[i % 8]}\nPostcode: LS{i} {i % 9}AB\n\nNotes.\n"
        )
    rng = np.random.default_rng(0)
    words = ["great", "fun", "boring", "dull", "fine", "long"]
    texts = [" ".join(rng.choice(words, 4)) for _ in range(300)]
    gold = [int(("great" in t or "fun" in t) and "dull" not in t) for t in texts]
    pd.DataFrame({"text": texts, "label": gold}).to_csv(root / "reviews.csv", index=False)
    (root / "lfs.py").write_text(
        "from labeling import keyword_lf\ncardinality = 2\n"
        "good = keyword_lf('good', ['great', 'fun'], 1)\n"
        "bad = keyword_lf('bad', ['boring', 'dull'], 0)\n"
        "meh = keyword_lf('meh', ['long'], 0)\n"
    )
    names = ["john smith", "mary jones", "peter brown", "anna lee", "omar khan", "li wei"]
    typos = ["jon smith", "mary jones", "pete browne", "ana lee", "omar kahn", "li wei"]
    cities = ["leeds", "york", "bath", "hull", "ely", "wells"]
    pd.DataFrame({"name": names, "city": cities}).to_csv(root / "l.csv", index=False)
    pd.DataFrame({"name": typos[::-1], "city": cities[::-1]}).to_csv(root / "r.csv", index=False)
    server = make_server(KeyValueLLM(), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    argv = {
        "extract": ["extract", str(docs), "--llm", url, "--attributes", "city,postcode",
                    "--sample-size", "4", "--num-candidates", "2", "--workers", "1"],
        "label": ["label", "--data", str(root / "reviews.csv"), "--lfs", str(root / "lfs.py"),
                  "--gold-column", "label", "--device", "cpu"],
        "link": ["link", str(root / "l.csv"), str(root / "r.csv"), "--on", "name,city",
                 "--device", "cpu"],
    }  # fmt: skip
    yield root, argv
    server.shutdown()
    server.server_close()


def _count_steps(kill_at: int | None, counter: Path) -> None:
    """In the child only: count workspace steps, SIGKILL itself at step `kill_at`."""
    import toolkit.workspace as w

    state = {"n": 0}
    counter.write_text("0")

    def step() -> None:
        state["n"] += 1
        counter.write_text(str(state["n"]))
        if state["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_write, real_open = w.atomic_write_bytes, w.open_catalog

    def write(path, data):
        step()
        real_write(path, data)
        step()  # the file is in place, its catalog row not yet

    @contextmanager
    def open_catalog(*args, **kwargs):
        step()
        with real_open(*args, **kwargs) as con:
            yield con
            step()  # committed, not yet checkpointed, lock still held

    w.atomic_write_bytes, w.open_catalog = write, open_catalog


def _child(argv: list[str], log: Path, kill_at: int | None, counter: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import torch

    torch.set_num_threads(1)  # OpenMP's pool does not survive fork; one thread is enough
    _count_steps(kill_at, counter)
    from apps.cli import main

    os._exit(main(argv))


def _start(argv, log, kill_at=None):
    proc = FORK.Process(target=_child, args=(argv, log, kill_at, log.with_suffix(".steps")))
    proc.start()
    return proc


def _run(argv, log) -> tuple[int | None, float, int]:
    """Run `loom argv` to the end in a forked child: (exit code, seconds, workspace steps)."""
    t0 = time.monotonic()
    proc = _start(argv, log)
    proc.join(300)
    assert proc.exitcode is not None, f"loom {argv[0]} hung; see {log}"
    return proc.exitcode, time.monotonic() - t0, int(log.with_suffix(".steps").read_text())


def _drive(chains: list[dict], kind: str) -> set:
    """Run the chains' jobs (kill, then re-run to completion) two at a time, one per chain
    (2 cores; each chain has its own workspace); returns where the kills landed."""
    landed, running = set(), {}
    while any(c["jobs"] for c in chains) or running:
        for i, c in enumerate(chains):
            if i not in running and c["jobs"]:
                how, kill_at, delay = job = c["jobs"].pop(0)
                deadline = time.monotonic() + (delay if delay is not None else 300)
                running[i] = (_start(c["argv"], c["log"], kill_at), deadline, job)
        time.sleep(0.005)
        for i, (proc, deadline, (how, kill_at, delay)) in list(running.items()):
            if proc.exitcode is None and time.monotonic() < deadline:
                continue
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            del running[i]
            log = chains[i]["log"]
            if how == "rerun":
                assert proc.exitcode == 0, f"re-run after a kill: exit {proc.exitcode}; see {log}"
            else:
                code = proc.exitcode
                assert code in (-signal.SIGKILL, 0), f"{how} {kill_at or delay}: {code}; see {log}"
                landed.add(_landing(chains[i]["ws"], kind))
    return landed


def _outputs(ws: Workspace, run: str, kind: str) -> dict[str, pd.DataFrame]:
    return {n: ws.load_table(run, n) for n in OUTPUTS[kind] if n not in NOT_COMPARED}


def _landing(ws: Workspace, kind: str) -> tuple:
    """Where a kill landed: the newest run's status and which of its files exist."""
    runs = ws.runs(kind)
    if runs.empty:
        return ("no run",)
    run = runs["run_id"].iloc[0]
    files = tuple(sorted(p.name for p in (ws.path / "runs" / run).iterdir()))
    return (runs["status"].iloc[0], len(ws.tables(run)), files)


@pytest.mark.parametrize("kind", ["extract", "label", "link"])
def test_kill_9_then_rerun_gives_the_uninterrupted_result(inputs, tmp_path, kind):
    root, argvs = inputs
    log = tmp_path / "reference.log"
    code, seconds, steps = _run([*argvs[kind], "--out", str(tmp_path / "reference")], log)
    assert code == 0, log.read_text()[-3000:]
    ref = Workspace(tmp_path / "reference")
    expected = _outputs(ref, ref.latest_run(kind), kind)

    rng = random.Random(f"loom-kill-{kind}")
    points = [("step", k, None) for k in rng.sample(range(1, steps + 1), KILLS // 2)]
    points += [("delay", None, rng.uniform(0.02, 1.0) * seconds) for _ in range(KILLS // 2)]
    rng.shuffle(points)
    chains = []
    for c in range(2):
        ws = Workspace(tmp_path / f"ws{c}")
        jobs = [job for p in points[c::2] for job in (p, ("rerun", None, None))]
        argv = [*argvs[kind], "--out", str(ws.path)]
        chains.append({"ws": ws, "argv": argv, "log": tmp_path / f"chain{c}.log", "jobs": jobs})
    landed = _drive(chains, kind)
    assert len(landed) >= 6, landed  # the kills landed in many different stages
    for chain in chains:
        _check_after_kills(chain["ws"], kind, expected, reruns=KILLS // 2)


def _check_after_kills(ws: Workspace, kind: str, expected: dict, reruns: int) -> None:
    runs = ws.runs(kind)
    complete = runs[runs["status"] == "complete"]
    assert len(complete) >= (reruns if kind != "extract" else 1)
    for run in complete["run_id"]:  # every finished run: all its tables, each as expected
        assert sorted(ws.tables(run)["name"]) == sorted(OUTPUTS[kind]), run
        got = _outputs(ws, run, kind)
        for name, want in expected.items():
            pd.testing.assert_frame_equal(got[name], want, check_exact=False, rtol=1e-5)
    con = duckdb.connect(str(ws.catalog_path), read_only=True)
    dup = con.execute(
        "SELECT (SELECT count(*) - count(DISTINCT run_id) FROM runs),"
        " (SELECT count(*) - count(DISTINCT (run_id, name)) FROM tables)"
    ).fetchone()
    con.close()
    assert dup == (0, 0)  # no catalog row duplicated
    report = ws.check()
    interrupted = set(report.interrupted_runs)
    assert set(runs.loc[runs["status"] == "running", "run_id"]) == interrupted
    if kind == "extract":
        assert not interrupted  # every re-run resumed the run its kill interrupted
    for f in report.findings:  # besides killed runs and their files: nothing lost or broken
        in_killed_run = f.run in interrupted and f.kind in ("unlisted_file", "temp_file")
        assert f.kind in ("interrupted_run", "unlisted_run_folder") or in_killed_run, f.line()
