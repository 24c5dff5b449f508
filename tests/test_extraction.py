"""Evaporate end to end on the embedded LLM (tiny token budgets), the workspace contract,
resuming, bad LLM output, unreachable endpoints and the `loom extract` command."""

from __future__ import annotations

import random

import pytest

from extraction import Evaporate, Sandbox
from extraction.corpus import febrl_corpus
from toolkit.errors import LoomError
from toolkit.llm import LLM, Completion, get_llm
from toolkit.workspace import Workspace

pytestmark = pytest.mark.slow  # runs the embedded LLM on CPU (a few minutes on a busy machine)

ATTRS = ["surname", "postcode"]
RUN = dict(attributes=ATTRS, sample_size=4, num_candidates=1, code_tokens=64, direct_tokens=12)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    folder = root / "docs"
    gold = febrl_corpus(folder, n=25, seed=5, layouts=("kv", "html_table"))
    (folder / "kv" / "notes.bin.txt").write_bytes(b"\x00\x01\x02binary")
    return root, folder, gold


@pytest.fixture(scope="module")
def llm() -> LLM:
    return get_llm(None)


@pytest.fixture(scope="module")
def first_run(corpus, llm):
    root, folder, gold = corpus
    ws = Workspace(root / "ws")
    res = Evaporate(llm=llm, workspace=ws, progress=False).run(folder, gold=gold, **RUN)
    return ws, res


def test_code_plus_table_with_provenance(first_run, corpus) -> None:
    ws, res = first_run
    _, _, gold = corpus
    assert list(res.table.columns) == ["doc_id", *ATTRS] and len(res.table) == 25
    scores = res.evaluate(gold).set_index("attribute")
    # induced functions seeded by the small model's sample answers carry the table
    assert scores.loc["postcode", "f1"] >= 0.8, scores
    prov = res.provenance
    assert set(prov["attribute"]) <= set(ATTRS) and (prov["function_id"] != "").all()
    docs = res.documents.set_index("doc_id")
    for r in prov[prov["start"] >= 0].head(10).itertuples():
        assert docs.loc[r.doc_id, "text"][r.start : r.end].lower() == r.value.lower()
    funcs = res.functions
    assert {"llm", "induced"} <= set(funcs["source"])
    assert funcs["kept"].any() and (funcs.loc[~funcs["kept"], "reason"] != "").all()
    assert res.report["skipped"] and "binary" in res.report["skipped"][0]["reason"]


def test_workspace_contract(first_run) -> None:
    ws, res = first_run
    runs = ws.runs("extract")
    row = runs[runs["run_id"] == res.run_id].iloc[0]
    assert row["status"] == "complete" and row["summary"]["llm_tokens"] > 0
    names = set(ws.tables(res.run_id)["name"])
    assert {"documents", "table", "functions", "provenance", "tokens", "gold"} <= names
    fcols = list(ws.load_table(res.run_id, "functions").columns)
    assert fcols == [
        "attribute",
        "function_id",
        "source",
        "code",
        "est_accuracy",
        "coverage",
        "sample_f1",
        "precision",
        "recall",
        "heldout_precision",
        "heldout_recall",
        "kept",
        "reason",
    ]
    tokens = ws.load_table(res.run_id, "tokens")
    assert set(tokens["stage"]) == {"sample_direct", "codegen"}
    assert (tokens["prompt_tokens"] > 0).all()


class _Interrupt(Sandbox):
    """Stops the run at the full application stage, like Ctrl-C would."""

    def __init__(self) -> None:
        super().__init__(n_workers=1)
        self.calls = 0

    def run(self, functions, texts, progress=False):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return super().run(functions, texts, progress)


def test_interrupted_run_resumes_from_cache(corpus, llm, first_run) -> None:
    root, folder, gold = corpus
    ws = Workspace(root / "ws")  # same workspace: its completion cache holds every answer
    with pytest.raises(KeyboardInterrupt):
        Evaporate(llm=llm, workspace=ws, sandbox=_Interrupt(), progress=False).run(folder, **RUN)
    running = ws.runs("extract")
    assert (running["status"] == "running").sum() == 1  # never marked complete
    run_id = running[running["status"] == "running"]["run_id"].iloc[0]
    assert "table" not in set(ws.tables(run_id)["name"])
    res = Evaporate(llm=llm, workspace=ws, progress=False).run(folder, **RUN)
    assert res.run_id == run_id
    assert ws.runs("extract").set_index("run_id").loc[run_id, "status"] == "complete"
    t = res.tokens
    assert (t["calls"] == t["cached_calls"]).all()  # nothing was generated twice


class GarbageLLM(LLM):
    """An LLM endpoint that answers noise: no code, no values."""

    name = "garbage"

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        rng = random.Random(seed)
        return [
            Completion("".join(rng.choice("#@!? xyz{}") for _ in range(30)), 5, 5) for _ in prompts
        ]


def test_garbage_llm_gives_clear_report_not_a_fake_table(corpus, tmp_path) -> None:
    _, folder, gold = corpus
    ev = Evaporate(llm=GarbageLLM(cache=False), workspace=tmp_path / "ws", progress=False)
    res = ev.run(folder, **RUN)
    # no LLM function is kept; the values there are come from the documents' own labels
    # (issue 23: `Surname:` lines, `<th>Postcode</th>` cells) and are the true ones
    assert not res.functions[res.functions["source"].eq("llm")]["kept"].any()
    assert res.functions[res.functions["source"].eq("label")]["kept"].any()
    assert res.evaluate(gold)["precision"].min() == 1.0
    # without attributes the schema still comes from the markup's own labels, and no value
    # is invented for them: each one is found in its document
    res = ev.run(folder, attributes=None, sample_size=3, num_candidates=1)
    assert "postcode" in res.report["attributes"]
    assert (res.provenance["start"] >= 0).all()


def test_bad_inputs(tmp_path, llm) -> None:
    ev = Evaporate(llm=llm, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoomError, match="no readable documents"):
        ev.run(tmp_path / "empty")
    with pytest.raises(LoomError, match="unknown mode"):
        ev.run(tmp_path / "empty", mode="fast")
    with pytest.raises(LoomError, match="not a usable name"):
        ev.run(tmp_path / "empty", attributes=["", "ok"])
    with pytest.raises(LoomError, match=r"127\.0\.0\.1:9.*failed after"):
        Evaporate(llm="http://127.0.0.1:9/v1")


def test_cli_extract(corpus, first_run, capsys) -> None:
    from apps.cli import main

    root, folder, gold = corpus
    gold_csv = root / "gold.csv"
    gold.to_csv(gold_csv, index=False)
    code = main(
        [
            "extract",
            str(folder),
            "--out",
            str(root / "ws"),
            "--attributes",
            ",".join(ATTRS),
            "--sample-size",
            "4",
            "--num-candidates",
            "1",
            "--code-tokens",
            "64",
            "--direct-tokens",
            "12",
            "--gold",
            str(gold_csv),
            "--workers",
            "1",
            "--no-resume",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "extracted 25 documents x 2 attributes" in out and "(mean)" in out
    assert "sandbox isolation" in out and "  seccomp      on" in out
    assert main(["extract", str(root / "missing"), "--out", str(root / "ws")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- issue 21: --num-candidates 0, and runs that fail part-way ------------------------------


def test_no_candidate_function_still_gives_every_attribute(corpus, tmp_path) -> None:
    _, folder, _ = corpus
    ws = Workspace(tmp_path / "ws")
    ev = Evaporate(llm=GarbageLLM(cache=False), workspace=ws, progress=False)
    # no LLM-written function, no induced one (the noise answers ground nowhere) and no
    # label-anchored one (no document has a label naming these attributes)
    attrs = ["nickname", "shoe_size"]
    res = ev.run(folder, **{**RUN, "num_candidates": 0, "attributes": attrs})
    assert list(res.table.columns) == ["doc_id", *attrs] and res.table[attrs].isna().all().all()
    assert res.report["unextractable"] == attrs and res.functions.empty
    assert "num_candidates=0" in res.report["message"]
    assert ws.runs("extract").iloc[0]["status"] == "complete"


class _CrashingSandbox(Sandbox):
    """A sandbox whose pool dies on the first batch: a stand-in for a crash mid-run, which no
    real input causes on purpose (test double)."""

    def __init__(self) -> None:
        super().__init__(n_workers=1)

    def run(self, functions, texts, progress=False):
        raise RuntimeError("worker pool died")


def test_run_that_fails_part_way_is_marked_failed_and_resumes(corpus, tmp_path) -> None:
    _, folder, _ = corpus
    ws = Workspace(tmp_path / "ws")
    llm = GarbageLLM(cache=False)
    with pytest.raises(RuntimeError, match="worker pool died"):
        Evaporate(llm=llm, workspace=ws, sandbox=_CrashingSandbox(), progress=False).run(
            folder, **RUN
        )
    row = ws.runs("extract").iloc[0]
    assert row["status"] == "failed"  # never left `running`
    assert row["summary"]["error"] == "RuntimeError: worker pool died"
    assert "resumes" in row["summary"]["resume"]
    res = Evaporate(llm=llm, workspace=ws, progress=False).run(folder, **RUN)
    assert res.run_id == row["run_id"]  # the saved stages are reused
    assert ws.runs("extract").set_index("run_id").loc[res.run_id, "status"] == "complete"


def test_cli_extract_with_no_llm_written_functions(corpus, first_run, capsys) -> None:
    from apps.cli import main

    root, folder, _ = corpus
    args = ["extract", str(folder), "--out", str(root / "ws"), "--attributes", ",".join(ATTRS)]
    args += ["--sample-size", "4", "--direct-tokens", "12", "--workers", "1"]
    assert main([*args, "--num-candidates", "0"]) == 0  # the sample answers are cached
    out = capsys.readouterr().out
    assert "extracted 25 documents x 2 attributes" in out
    ws = Workspace(root / "ws")
    runs = ws.runs("extract")
    run = runs[runs["params"].map(lambda p: p["num_candidates"] == 0)].iloc[0]
    assert run["status"] == "complete"
    funcs = ws.load_table(run["run_id"], "functions")
    assert set(funcs["source"]) <= {"induced", "label"}  # LLM-free functions only
