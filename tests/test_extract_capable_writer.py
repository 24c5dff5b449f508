"""Issue 23: the LLM-code path with a capable writer, end to end over HTTP.

No capable model runs offline in a test, so `CapableWriter` stands in for one (a large model
behind an OpenAI-compatible server such as vLLM): it answers questions about a document
correctly and writes correct functions for some attributes and subtly wrong ones for others.
It is served by loom's own `toolkit.llm_server` on 127.0.0.1 and the run reaches it through
`--llm URL`'s client, as a user's server would be reached."""

from __future__ import annotations

import re
import threading

import pandas as pd
import pytest

from extraction import Evaporate
from extraction.candidates import normalize
from extraction.corpus import febrl_corpus
from extraction.sandbox import Sandbox
from toolkit.llm import LLM, Completion
from toolkit.llm_server import make_server
from toolkit.metrics import precision_recall_f1

ATTRS = ["surname", "date_of_birth", "postcode"]

#: correct for letters ("Dear Isaac Riddell,"): the `Surname:` lines are left to labels
SURNAME = """import re

def extract(text):
    m = re.search(r"Dear (?:[A-Z][\\w'-]* )?([A-Z][\\w'-]*),", text)
    return m.group(1) if m else ""
"""
DOB_RIGHT = """import re

def extract(text):
    m = re.search(r"recorded as (\\d{4})-(\\d{2})-(\\d{2})", text)
    return "-".join([m.group(1), m.group(2), m.group(3)]) if m else ""
"""
#: subtly wrong: day and month swapped
DOB_SWAPPED = DOB_RIGHT.replace("m.group(2), m.group(3)", "m.group(3), m.group(2)")
#: subtly wrong: the first four-digit number (the record number, in these documents)
POSTCODE_WRONG = """import re

def extract(text):
    m = re.search(r"(\\d{4})", text)
    return m.group(1) if m else ""
"""


class CapableWriter(LLM):
    """Test double: a stand-in for a large model (none runs offline). It answers a question
    about a document with the record's true value (it knows the records, as a capable reader
    would find them), and writes correct functions for surname and (when shown values) date
    of birth, and subtly wrong ones for date of birth (day/month swapped, when shown no
    values) and postcode (the first four-digit number)."""

    name = "capable-writer"

    def __init__(self, gold: pd.DataFrame) -> None:
        super().__init__(cache=False)
        self.gold = gold

    def _answer(self, prompt: str) -> str:
        code = re.search(r"returns the (.+?) from a document|The (.+?) in these documents", prompt)
        if code:
            attr = code.group(1) or code.group(2)
            if attr == "surname":
                return f"```python\n{SURNAME}```"
            if attr == "date of birth":
                return f"```python\n{DOB_RIGHT if code.group(2) else DOB_SWAPPED}```"
            return f"```python\n{POSTCODE_WRONG}```"
        q = re.search(r"What is the (.+?) in the document above", prompt)
        if q:
            doc = prompt.split("\n\nQuestion:")[0]
            for r in self.gold.itertuples():
                if r.surname and r.given_name and r.surname in doc and r.given_name in doc:
                    return str(getattr(r, q.group(1).replace(" ", "_")))
        return "none"

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        return [Completion(self._answer(p), 20, 20) for p in prompts]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("capable") / "docs"
    gold = febrl_corpus(folder, n=20, seed=11, layouts=("kv", "letter"))
    return folder, gold


def f1(got: list, want: list) -> float:
    got, want = [normalize(v) for v in got], [normalize(v) for v in want]
    correct = sum(1 for g, t in zip(got, want) if g and g == t)
    return precision_recall_f1(correct, sum(map(bool, got)), sum(map(bool, want)))[2]


def test_capable_writer_functions_kept_wrong_ones_dropped_ensemble_wins(corpus) -> None:
    folder, gold = corpus
    srv = make_server(CapableWriter(gold), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/v1"
        res = Evaporate(llm=url, progress=False).run(
            folder, attributes=ATTRS, sample_size=4, num_candidates=2, gold=gold
        )
    finally:
        srv.shutdown()
        srv.server_close()
    f = res.functions.set_index(["attribute", "function_id"])
    llm = res.functions[res.functions["source"].eq("llm")]
    assert int((llm["sample_f1"] > 0).sum()) > 0  # the benchmark's llm_functions_valid
    assert f.loc[("surname", "llm_0"), "kept"] and f.loc[("surname", "llm_1"), "kept"]
    assert f.loc[("date_of_birth", "llm_1"), "kept"]  # written from values: right
    for key in [("date_of_birth", "llm_0"), ("postcode", "llm_0"), ("postcode", "llm_1")]:
        assert not f.loc[key, "kept"] and f.loc[key, "reason"].startswith("disagrees"), key
    # the ensemble beats every single function it was built from
    docs = res.documents.merge(gold, on="path")
    assert len(docs) == len(gold)
    kept = res.functions[res.functions["kept"]].reset_index(drop=True)
    out, failed = Sandbox(n_workers=1).run(dict(zip(map(str, kept.index), kept["code"])),
                                           list(docs["text"]))  # fmt: skip
    assert not failed
    ev = res.evaluate(gold).set_index("attribute")["f1"]
    for a in ATTRS:
        best = max(f1(out[str(i)], list(docs[a])) for i in kept.index[kept["attribute"].eq(a)])
        print(f"{a}: ensemble F1 {ev[a]:.3f}, best single function {best:.3f}")
        assert ev[a] > best, (a, ev[a], best)
    assert ev["surname"] >= 0.9 and ev["date_of_birth"] >= 0.9
    # held-out scores are reported beside the in-sample ones
    assert {"precision", "heldout_precision", "heldout_recall"} <= set(res.functions.columns)


class Unhelpful(LLM):
    """Test double: a model whose answers are never in the document (the small model's
    failure the warning is for, without minutes of CPU generation)."""

    name = "unhelpful"

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        return [Completion("The answer is unknown to me.", 9, 7) for _ in prompts]


def test_run_warns_plainly_when_sample_values_are_not_found(corpus, tmp_path, capsys) -> None:
    """Letters carry no labels: every sample value would come from the LLM, and none is in
    the document. The report, the log and `loom extract` say so instead of a quiet table."""
    from apps.cli import main

    folder, _ = corpus
    res = Evaporate(llm=Unhelpful(cache=False), progress=False).run(
        folder / "letter", attributes=ATTRS, sample_size=3, num_candidates=0
    )
    assert res.report["warnings"][0].startswith("values found in 0 of 9 sample prompts")
    assert "results will be poor: use --llm URL" in res.report["warnings"][0]
    srv = make_server(Unhelpful(cache=False), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/v1"
        args = ["extract", str(folder / "letter"), "--out", str(tmp_path / "ws"), "--llm", url]
        args += ["--attributes", ",".join(ATTRS), "--sample-size", "3", "--num-candidates", "0"]
        main(args)
    finally:
        srv.shutdown()
        srv.server_close()
    assert "warning: values found in 0 of 9 sample prompts" in capsys.readouterr().err
