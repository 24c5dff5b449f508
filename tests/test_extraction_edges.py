"""The public extraction API on unusual but legitimate, and plainly bad, input: nothing a
user gave is dropped without a word, and a bad option is refused naming the fix."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from extraction import Evaporate, EvaporateConfig, load_folder
from extraction.budget import plan_run
from extraction.evaporate import check_attributes
from extraction.stages import identify_schema
from toolkit.errors import LoomError
from toolkit.llm import LLM, Completion
from toolkit.workspace import Workspace


def _reasons(skipped) -> dict[str, str]:
    return dict(zip(skipped["path"], skipped["reason"]))


# ---- documents: every file under the folder is read or listed in `skipped` -----------------


def test_hidden_files_and_folders_are_listed_not_dropped(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("City: Leeds\n")
    (tmp_path / ".notes.txt").write_text("City: York\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "config").write_text("[core]\n")
    docs, skipped = load_folder(tmp_path)
    assert list(docs["path"]) == ["a.txt"]
    reasons = _reasons(skipped)
    assert "hidden file" in reasons[".notes.txt"] and "rename" in reasons[".notes.txt"]
    assert reasons[".git/"].startswith("hidden folder (2 files)")


def test_links_outside_the_folder_broken_or_looping_are_listed_not_read(tmp_path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("API_KEY: s3cr3t\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "far.txt").write_text("City: Hull\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("City: Leeds\n")
    (folder / "alias.txt").symlink_to(folder / "a.txt")  # inside the folder: read
    (folder / "key.txt").symlink_to(outside)
    (folder / "dangling.txt").symlink_to(folder / "nothing.txt")
    (folder / "loop1").symlink_to(folder / "loop2")
    (folder / "loop2").symlink_to(folder / "loop1")
    (folder / "linked").symlink_to(other, target_is_directory=True)
    os.mkfifo(folder / "pipe")  # would block a reader forever
    # control: the link does reach the secret when the file is simply opened
    assert "s3cr3t" in (folder / "key.txt").read_text()
    docs, skipped = load_folder(folder)
    assert sorted(docs["path"]) == ["a.txt", "alias.txt"]
    assert not docs["text"].str.contains("s3cr3t").any()
    reasons = _reasons(skipped)
    assert "outside the document folder" in reasons["key.txt"]
    assert "broken link" in reasons["dangling.txt"]
    assert "broken link" in reasons["loop1"] and "broken link" in reasons["loop2"]
    assert "link to a folder" in reasons["linked/"]
    assert "not a regular file" in reasons["pipe"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_text_with_a_byte_order_mark_is_read(tmp_path, encoding) -> None:
    text = "Name: Zoë Müller\nCity: Köln\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    (tmp_path / "win.txt").write_bytes(data)
    (tmp_path / "README").write_bytes(data)  # no extension: read by its content
    docs, skipped = load_folder(tmp_path)
    assert skipped.empty, _reasons(skipped)
    assert list(docs["text"]) == [text, text]
    assert docs["encoding"].str.startswith(encoding[:6]).all()


# ---- attributes: the names a user gives are the columns, or a clear error ------------------


def test_attribute_names_in_other_scripts_are_kept_not_mangled() -> None:
    assert check_attributes(["Prénom", "Straße", "名前"]) == ("prénom", "straße", "名前")
    assert check_attributes("date of birth, Date-Of-Birth") == ("date_of_birth",)


def test_a_label_in_another_script_names_only_its_own_attribute() -> None:
    from extraction.structure import labels_for

    page = "<table><tr><th>住所</th><td>Tokyo</td></tr><tr><th>名前</th><td>Aiko</td></tr>"
    assert labels_for("名前", [page]) == [("名前", "cell")]  # was both: every key was ''
    assert labels_for("größe", ["<dl><dt>Größe</dt><dd>5</dd></dl>"]) == [("größe", "cell")]


@pytest.mark.parametrize("name", ["doc_id", "Doc ID", "path"])
def test_an_attribute_named_like_a_result_column_is_refused(name) -> None:
    with pytest.raises(LoomError, match="another name"):
        check_attributes(["surname", name])
    with pytest.raises(LoomError, match="another name"):
        EvaporateConfig(attributes=(name,))


def test_schema_never_proposes_a_result_column() -> None:
    import numpy as np

    class Tools:  # stand-ins for the two services identify_schema calls
        class llm:  # noqa: N801
            @staticmethod
            def complete(prompts, max_tokens):
                return [Completion("doc_id, path, surname", 1, 1) for _ in prompts]

        class embedder:  # noqa: N801 - unrelated names: nothing is merged
            @staticmethod
            def encode(texts):
                return np.eye(len(texts), dtype="float32")

    texts = ['{"doc_id": 1, "path": "/x", "surname": "Lee"}'] * 3
    cfg = EvaporateConfig(max_attributes=5)
    assert identify_schema(Tools, texts, texts, cfg) == ["surname"]


def test_a_config_given_one_string_of_attributes_is_not_split_into_letters(tmp_path) -> None:
    cfg = EvaporateConfig(attributes="surname")
    assert cfg.attributes == ("surname",)
    assert EvaporateConfig(attributes=["Post Code", "surname"]).attributes == (
        "post_code",
        "surname",
    )
    (tmp_path / "a.txt").write_text("Surname: Lee\n")
    docs, _ = load_folder(tmp_path)
    plan = plan_run(docs, cfg).set_index("stage")
    assert plan.loc["sample_direct", "calls"] == 1  # one attribute, not seven letters


def test_an_empty_attribute_list_in_a_config_is_refused() -> None:
    with pytest.raises(LoomError, match="attributes is empty"):
        EvaporateConfig(attributes=())


# ---- options: a wrong type names the option ------------------------------------------------


@pytest.mark.parametrize(
    "option",
    [
        {"sample_size": 2.5},
        {"sample_size": "4"},
        {"sample_size": True},
        {"num_candidates": 1.5},
        {"max_llm_tokens": 10.5},
        {"seed": None},
        {"max_chars": "1500"},
        {"min_precision": "0.5"},
        {"constrained": "no"},
        {"attributes": 5},
    ],
)
def test_options_of_the_wrong_type_are_refused_naming_the_option(option) -> None:
    (name,) = option
    with pytest.raises(LoomError, match=re.escape(name)):
        EvaporateConfig(**option)


def test_numpy_integers_are_accepted_as_plain_ints() -> None:
    np = pytest.importorskip("numpy")
    cfg = EvaporateConfig(sample_size=np.int64(3), seed=np.int32(1))
    assert type(cfg.sample_size) is int and type(cfg.seed) is int
    assert dataclasses.replace(cfg, mode="code").sample_size == 3


# ---- Evaporate: input errors before any work; resumed runs see the folder as it is ---------


class ScriptedLLM(LLM):
    """Answers a direct question with the value of the asked `Label:` line, instantly; raises
    KeyboardInterrupt (Ctrl-C) once `stop_after` answers were given."""

    name = "scripted-edges"

    def __init__(self, cache=None, stop_after: int | None = None) -> None:
        super().__init__(cache)
        self.stop_after, self.generated = stop_after, 0

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        out = []
        for p in prompts:
            if self.stop_after is not None and self.generated >= self.stop_after:
                raise KeyboardInterrupt
            self.generated += 1
            m = re.search(r"What is the (\w+) in the document", p)
            v = re.search(rf"(?im)^{m.group(1)}:\s*(.+)$", p) if m else None
            out.append(Completion(v.group(1).strip() if v else "none", len(p) // 4, 2))
        return out


def test_run_refuses_keywords_that_a_config_would_override(tmp_path) -> None:
    ev = Evaporate(llm=ScriptedLLM(cache=False), progress=False)
    cfg = EvaporateConfig(attributes=("city",), mode="direct")
    with pytest.raises(LoomError, match=r"mode='code'.*put them in the config"):
        ev.run(tmp_path, mode="code", config=cfg)
    with pytest.raises(LoomError, match="not an EvaporateConfig"):
        ev.extract(tmp_path, {"attributes": ["city"]})


def test_a_resumed_run_over_changed_documents_starts_over(tmp_path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"p{i}.txt").write_text(f"Name: P{i}\nCity: Town{i}\n")
    ws = Workspace(tmp_path / "ws")
    cache = tmp_path / "c.sqlite"
    ev = Evaporate(llm=ScriptedLLM(cache=cache, stop_after=2), workspace=ws, progress=False)
    with pytest.raises(KeyboardInterrupt):
        ev.run(folder, attributes=["city"], mode="direct")
    (folder / "p3.txt").write_text("Name: P3\nCity: Newtown\n")  # same count, new content
    ev = Evaporate(llm=ScriptedLLM(cache=cache), workspace=ws, progress=False)
    res = ev.run(folder, attributes=["city"], mode="direct")
    assert list(res.table["city"]) == ["Town0", "Town1", "Town2", "Newtown"]
    saved = ws.load_table(res.run_id, "documents")
    assert saved["text"].str.contains("Newtown").any()  # the workspace holds what was read
    assert len(ws.runs("extract")) == 2  # the interrupted run was not resumed


def test_a_small_max_chars_cuts_a_document_into_few_chunks_not_one_per_character() -> None:
    from extraction.documents import chunks

    text = ("word " * 20 + "\n") * 300  # 30,300 characters
    parts = chunks(text, 100)
    assert len(parts) < 1000  # was 30,201: every one embedded by the chunk retrieval
    assert all(len(t) <= 100 for _, t in parts)
    covered = set()
    for start, t in parts:
        covered.update(range(start, start + len(t)))
    assert covered == set(range(len(text)))  # nothing of the document is left out


# ---- evaluation against gold ------------------------------------------------------------


def _table_and_docs():
    import pandas as pd

    table = pd.DataFrame(
        {"doc_id": ["d0", "d1"], "city": ["Leeds", "York"], "postcode": ["2600", None]}
    )
    docs = pd.DataFrame({"doc_id": ["d0", "d1"], "path": ["a.txt", "b.txt"]})
    return table, docs


def test_gold_that_cannot_be_joined_or_counts_a_document_twice_is_refused() -> None:
    import pandas as pd

    from extraction.result import evaluate

    table, docs = _table_and_docs()
    with pytest.raises(LoomError, match="not a DataFrame"):
        evaluate(table, "gold.csv", docs)
    with pytest.raises(LoomError, match="no `path` or `doc_id` column"):
        evaluate(table, pd.DataFrame({"file": ["a.txt"], "city": ["Leeds"]}), docs)
    twice = pd.DataFrame({"path": ["a.txt", "a.txt"], "city": ["Leeds", "Leeds"]})
    with pytest.raises(LoomError, match="more than one row for path a.txt"):
        evaluate(table, twice, docs)


def test_gold_numbers_read_as_floats_match_the_extracted_digits() -> None:
    import pandas as pd

    from extraction.result import evaluate

    table, docs = _table_and_docs()
    gold = pd.DataFrame({"path": ["a.txt", "b.txt"], "postcode": [2600.0, float("nan")]})
    scores = evaluate(table, gold, docs).set_index("attribute")
    assert scores.loc["postcode", "f1"] == 1.0  # was 0.0: '2600.0' against '2600'
