"""Issue 23: the structure real documents carry (`Label:` lines, th/dt cells, JSON keys)
drives chunk retrieval and label-anchored candidate functions.

The real data are the `.dist-info/METADATA` files of the packages installed in this
environment; their gold values come from `email.parser` (independent of the extractor)."""

from __future__ import annotations

import email.parser
import importlib.metadata
import threading

import pytest

from extraction import Evaporate
from extraction.sandbox import Sandbox
from extraction.stages import best_chunk, identify_schema
from extraction.structure import declared_values, label_candidates, label_value
from toolkit.llm import LLM, Completion
from toolkit.llm_server import make_server

ATTRS = ["name", "version", "summary", "license"]


def metadata_files(n: int) -> list[tuple[str, dict[str, str]]]:
    """(METADATA text, gold) of `n` installed packages whose four headers are one line."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for d in importlib.metadata.distributions():
        text = d.read_text("METADATA")
        if not text:
            continue
        msg = email.parser.Parser().parsestr(text, headersonly=True)
        gold = {a: msg.get(a.capitalize()) for a in ATTRS}
        if all(v and "\n" not in v and v.strip() == v for v in gold.values()):
            out.setdefault(gold["name"].lower(), (text, gold))
    if len(out) < n:
        pytest.skip(f"only {len(out)} installed packages have one-line METADATA headers")
    return [out[k] for k in sorted(out)[:n]]


class UnhelpfulLLM(LLM):
    """Test double (no capable model runs offline in a test): a 'model' that answers every
    question with the Metadata-Version number and writes a function returning the first
    word, i.e. the free-form answers a small model gives on these files."""

    name = "unhelpful"

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        code = "```python\ndef extract(text):\n    return text.split()[0]\n```"
        return [
            Completion(code if "def extract" in p or "Python function" in p else "2.1", 9, 3)
            for p in prompts
        ]


def test_label_value_and_candidates_on_key_value_documents() -> None:
    doc = "Metadata-Version: 2.1\nName: loom\nVersion: 0.1.0\nHome-page: https://x.org\n"
    assert label_value(doc, "Version", "line") == "0.1.0"  # not Metadata-Version's 2.1
    assert declared_values([doc, "no labels"], "home_page") == ["https://x.org", ""]
    html = "<table><tr><th>Version</th><td><b>2.0</b></td></tr></table>\n<p>City: Hull</p>"
    assert declared_values([html], "version") == ["2.0"]
    assert declared_values([html], "city") == ["Hull"]
    assert declared_values(['{"Version": "3.1", "n": 4}'], "VERSION") == ["3.1"]
    cands = label_candidates("version", [doc, html])
    assert [fid for fid, _ in cands] == ["label_line_0", "label_cell_1"]
    out, failed = Sandbox(n_workers=1).run(dict(cands), [doc, html])
    assert not failed
    assert out["label_line_0"][0] == "0.1.0" and out["label_cell_1"] == [None, "2.0"]


def test_chunk_shown_for_an_attribute_holds_its_label_line() -> None:
    """The label line ranks before semantic similarity (no embedder is needed for it)."""
    text, gold = metadata_files(1)[0]
    long = (
        text + "\n\n" + "\n".join(f"The version of this library is great {i}." for i in range(300))
    )
    chunk = best_chunk(None, long, "version", 1500)
    assert f"Version: {gold['version']}" in chunk


def test_schema_discovery_finds_hyphenated_header_labels() -> None:
    texts = [t for t, _ in metadata_files(3)]

    class Tools:
        llm = UnhelpfulLLM(cache=False)

        class embedder:  # noqa: N801 - a stand-in with an encode method
            @staticmethod
            def encode(words):
                import numpy as np

                return np.eye(len(words), dtype="float32")

    from extraction.config import EvaporateConfig

    found = identify_schema(Tools, texts, texts, EvaporateConfig(max_attributes=30))
    assert {"name", "version", "summary", "metadata_version"} <= set(found)


def test_metadata_files_extracted_by_label_candidates_despite_an_unhelpful_llm(
    tmp_path,
) -> None:
    files = metadata_files(12)
    folder = tmp_path / "docs"
    folder.mkdir()
    gold = {}
    for text, g in files:
        (folder / f"{g['name']}.txt").write_text(text)
        gold[f"{g['name']}.txt"] = g
    llm = UnhelpfulLLM(cache=False)
    srv = make_server(llm, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/v1"
        res = Evaporate(llm=url, progress=False).run(
            folder, attributes=ATTRS, sample_size=4, num_candidates=2
        )
    finally:
        srv.shutdown()
        srv.server_close()
    table = res.table.merge(res.documents[["doc_id", "path"]], on="doc_id")
    right = sum(getattr(r, a) == gold[r.path][a] for r in table.itertuples() for a in ATTRS)
    assert right >= 0.9 * len(files) * len(ATTRS), table
    f = res.functions
    assert f[f["source"].eq("label")].groupby("attribute")["kept"].any().all()
    assert not f[f["source"].eq("llm")]["kept"].any()  # the unhelpful functions are dropped
    assert res.report["sample_values"]["version"]["from_labels"] == 4
