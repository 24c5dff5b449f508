"""Extraction pieces that need no LLM: document loading, induced candidates, the ensemble,
answer grounding and code parsing."""

from __future__ import annotations

import pandas as pd
import pytest

from extraction.candidates import induce, normalize
from extraction.corpus import FEBRL_ATTRIBUTES, febrl_corpus
from extraction.documents import chunks, load_folder, readable
from extraction.ensemble import aggregate
from extraction.evaporate import evaluate
from extraction.prompts import ground, parse_attribute_list, parse_code
from extraction.sandbox import Sandbox
from toolkit.errors import LoomError


def test_empty_and_missing_folders(tmp_path) -> None:
    with pytest.raises(LoomError, match="does not exist"):
        load_folder(tmp_path / "nope")
    docs, skipped = load_folder(tmp_path)
    assert docs.empty and skipped.empty


def test_bad_files_are_skipped_with_reasons(tmp_path) -> None:
    (tmp_path / "ok.txt").write_text("City: Leeds\n")
    (tmp_path / "latin.txt").write_bytes("Caf\xe9: Z\xfcrich\n".encode("cp1252"))
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "bad.json").write_text('{"a": ')
    (tmp_path / "huge.md").write_text("x" * 5000)
    (tmp_path / "empty.html").write_text("")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    docs, skipped = load_folder(tmp_path, max_bytes=4000)
    assert sorted(docs["path"]) == ["latin.txt", "ok.txt"]
    assert docs.set_index("path").loc["latin.txt", "text"] == "Café: Zürich\n"
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert "binary" in reasons["blob.txt"]
    assert "unreadable" in reasons["broken.pdf"] or "no text" in reasons["broken.pdf"]
    assert "invalid JSON" in reasons["bad.json"]
    assert "too large" in reasons["huge.md"]
    assert "empty" in reasons["empty.html"]
    assert "unsupported" in reasons["image.png"]


def test_readable_html_and_chunks() -> None:
    html = "<html><script>x=1</script><table><tr><th>Name</th><td>Ann &amp; Bo</td></tr></table>"
    assert readable(html, "html") == "Name | Ann & Bo"
    parts = chunks("line\n" * 1000, size=500, overlap=50)
    assert len(parts) > 5 and all(len(t) <= 500 for _, t in parts)
    assert parts[1][0] < parts[0][0] + len(parts[0][1])  # overlapping


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("febrl") / "docs"
    gold = febrl_corpus(folder, n=60, seed=3)
    docs, _ = load_folder(folder)
    return folder, gold, docs.merge(gold, on="path")


def test_induced_functions_generalise_across_documents(corpus) -> None:
    _, _, docs = corpus
    kv = docs[docs["path"].str.startswith("kv/")]
    train, test = kv.iloc[:3], kv.iloc[3:]
    cands = induce(list(zip(train["text"], train["postcode"])))
    assert "label" in {kind for kind, _ in cands}
    out, failed = Sandbox(n_workers=1).run({"f": cands[0][1]}, list(test["text"]))
    assert not failed
    assert out["f"] == list(test["postcode"])


def test_induced_markup_function_on_html_tables(corpus) -> None:
    _, _, docs = corpus
    html = docs[docs["path"].str.startswith("html_table/")]
    cands = induce(list(zip(html["text"].iloc[:2], html["surname"].iloc[:2])))
    out, _ = Sandbox(n_workers=1).run(
        dict(cands and [("f", cands[0][1])]), list(html["text"].iloc[2:])
    )
    assert out["f"] == list(html["surname"].iloc[2:])


def test_ensemble_prefers_reliable_functions() -> None:
    truth = [f"v{i}" for i in range(40)]
    good1 = list(truth)
    good2 = [v if i % 5 else None for i, v in enumerate(truth)]
    noisy = [v if i % 2 else "junk" for i, v in enumerate(truth)]
    bad = ["junk"] * 40
    values, sources, probs, acc, cov = aggregate(
        {"good1": good1, "good2": good2, "noisy": noisy, "bad": bad}
    )
    assert values == truth
    assert acc["good1"] > acc["noisy"] > acc["bad"]
    assert cov["good2"] == pytest.approx(32 / 40)
    assert sources[0] in ("good1", "good2") and min(probs) > 0.5
    # with only abstentions there is no value
    assert aggregate({"a": [None, None]})[0] == [None, None]


def test_grounding_small_model_answers() -> None:
    doc = "Name: John Smith\nCity: Leeds\nPostcode: 2000"
    assert ground("The city in this record is Leeds.", doc, "city") == "Leeds"
    assert ground("Leeds", doc, "city") == "Leeds"
    assert ground("none", doc, "city") == ""
    assert ground("The city is Paris.", doc, "city") == ""
    assert ground("", doc, "city") == ""


def test_parse_code_and_attribute_lists() -> None:
    text = "Sure!\n```python\nimport re\ndef get_city(t):\n    return 'x'\n```\nThis works."
    code = parse_code(text)
    assert "def extract(text)" in code and "This works" not in code
    assert parse_code("I cannot write code.") is None
    assert parse_attribute_list("Attributes: name, city; postcode\n- date of birth") == [
        "name",
        "city",
        "postcode",
        "date_of_birth",
    ]


def test_evaluate_scores_exact_normalized_matches() -> None:
    gold = pd.DataFrame({"path": ["a", "b", "c"], "city": ["Leeds", "York", ""]})
    table = pd.DataFrame({"doc_id": ["d1", "d2", "d3"], "city": ["leeds.", None, "Hull"]})
    docs = pd.DataFrame({"doc_id": ["d1", "d2", "d3"], "path": ["a", "b", "c"]})
    s = evaluate(table, gold, docs).set_index("attribute").loc["city"]
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert normalize("  N/A ") == ""


def test_corpus_gold_matches_documents(corpus) -> None:
    _, gold, docs = corpus
    assert list(gold.columns) == ["path", *FEBRL_ATTRIBUTES]
    assert len(gold) == 60 and gold["path"].str.split("/").str[0].nunique() == 5
    row = docs.iloc[0]
    assert row["surname"].lower() in row["text"].lower()


def test_stratified_sample_covers_every_layout(corpus) -> None:
    import random

    from extraction.stages import draw_sample

    _, _, docs = corpus
    picked = draw_sample(docs, 5, random.Random(0), "stratified")
    assert len(set(docs["path"].iloc[picked].str.split("/").str[0])) == 5
    assert len(draw_sample(docs, 8, random.Random(0), "random")) == 8
    assert draw_sample(docs, 500, random.Random(0), "stratified") == list(range(len(docs)))


# ---- issue 21: text files by content; `loom extract` checks its inputs before any work ------


def test_files_without_a_known_extension_are_read_by_content(tmp_path) -> None:
    (tmp_path / "README").write_text("Name: Ann Lee\nCity: Leeds\n")
    (tmp_path / "METADATA").write_text('{"name": "Ann Lee"}')
    (tmp_path / "notes.log").write_text("City: York\n")
    (tmp_path / "page").write_text("<html><body><p>City: Hull</p></body></html>")
    (tmp_path / "LICENSE.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "latin").write_bytes("Caf\xe9\n".encode("latin-1"))
    docs, skipped = load_folder(tmp_path)
    formats = dict(zip(docs["path"], docs["format"]))
    assert formats == {"METADATA": "json", "README": "text", "notes.log": "text", "page": "html"}
    assert docs.set_index("path").loc["README", "text"] == "Name: Ann Lee\nCity: Leeds\n"
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert reasons["LICENSE.bin"].startswith("unsupported file type .bin")
    assert reasons["latin"] == "unsupported file type (no extension): not UTF-8 text"


def test_cli_extract_checks_flags_and_gold_before_any_work(tmp_path, capsys) -> None:
    from apps.cli import main

    folder = tmp_path / "docs"
    gold = febrl_corpus(folder, n=4, seed=1, layouts=("kv",))
    ws = tmp_path / "ws"
    base = ["extract", str(folder), "--out", str(ws), "--attributes", "surname,postcode"]

    def error(*flags: str, gold_frame: pd.DataFrame | None = None) -> str:
        extra = []
        if gold_frame is not None:
            path = tmp_path / "gold.csv"
            gold_frame.to_csv(path, index=False)
            extra = ["--gold", str(path)]
        assert main([*base, *flags, *extra]) == 2
        return capsys.readouterr().err

    g = str(tmp_path / "gold.csv")
    assert f"--gold {g} has no `path` column" in error(gold_frame=gold.drop(columns=["path"]))
    assert "no attribute column besides `path`" in error(gold_frame=gold[["path"]])
    renamed = gold.rename(columns={"surname": "last_name", "postcode": "zip"})
    assert "none of which is in --attributes surname,postcode" in error(
        gold_frame=renamed[["path", "last_name", "zip"]]
    )
    elsewhere = gold.assign(path="other/" + gold["path"])
    assert f"is a file under {folder}; give paths relative" in error(gold_frame=elsewhere)
    assert "--sample-size 0: give a whole number >= 1" in error("--sample-size", "0")
    assert "--num-candidates -1: give a whole number >= 0" in error("--num-candidates", "-1")
    assert "--llm /no/such/model: unknown LLM" in error("--llm", "/no/such/model")
    assert "--sandbox-allow-missing firewall" in error("--sandbox-allow-missing", "firewall")
    assert not ws.exists()  # nothing was started
