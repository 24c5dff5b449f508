"""Prompts for schema identification, direct extraction and code synthesis, and the parsers
that turn (possibly garbage) LLM output into attribute names, values and code."""

from __future__ import annotations

import re

SCHEMA = (
    "{text}\n\nList the main attributes (fields) of the record described in the document "
    "above, as a comma-separated list of short field names. Reply with the list only."
)

DIRECT = (
    "{text}\n\nQuestion: What is the {attribute} in the document above? Reply with only the "
    "value, copied exactly from the document. If it is not there, reply: none"
)

CODE_PLAIN = (
    "Here are example documents:\n\n{examples}\n\nWrite a Python function "
    "`extract(text: str) -> str` that returns the {attribute} from a document like these, "
    "using the `re` module. Return an empty string if it is missing. Reply with the code only."
)

CODE_WITH_VALUES = (
    "{examples}\n\nThe {attribute} in these documents: {values}.\nWrite a Python function "
    "`def extract(text: str) -> str:` that finds the {attribute} in the raw text of such a "
    'document with regular expressions (import re) and returns it as a string, or "" if '
    "absent.\n```python\n"
)

_ANSWER_PREFIX = re.compile(
    r"^(?:answer|value|the answer is|it is|the value is|a|an)\s*[:\-]?\s*", re.IGNORECASE
)
_STOP = set(
    "the a an of in is are was for to and or this that document record above value its it "
    "his her their with on at by as be which who contains contain reference letter not "
    "mentioned provided given text information record field name there".split()
)


def attribute_name(name: str) -> str:
    """snake_case form of a proposed attribute name ('' when it is not a usable name)."""
    name = re.sub(r"[*_`#\"']", " ", str(name)).strip().lower()
    name = re.sub(r"^\s*(?:\d+[.)]|[-•])\s*", "", name)
    name = re.sub(r"[^\w ]+|_", " ", name)  # letters of any script stay: 'prénom', '名前'
    words = name.split()
    if not words or len(words) > 4 or not re.search(r"[^\W\d_]", name):
        return ""
    return "_".join(words)


def parse_attribute_list(text: str) -> list[str]:
    """Attribute names from a schema answer: comma, semicolon, newline or bullet separated."""
    text = re.sub(r"(?i)^.*?(attributes|fields)\s*(are|:)\s*", "", text.strip())
    parts = re.split(r"[,;\n]|\s-\s", text)
    names = []
    for p in parts:
        p = p.split(":")[0]
        n = attribute_name(p)
        if n and n not in names:
            names.append(n)
    return names[:20]


def ground(answer: str, document: str, attribute: str) -> str:
    """The part of an LLM answer that appears in the document ('' when nothing does).

    Small models answer in sentences ("The city in this record is Leeds."); the value is the
    longest run of the answer's words found verbatim in the document that is not made only
    of stop words or the attribute's own words.
    """
    a = answer.strip().splitlines()[0].strip() if answer.strip() else ""
    a = _ANSWER_PREFIX.sub("", a).strip().strip("\"'`").rstrip(".").strip()
    if not a or a.lower() in ("none", "null", "n/a", "unknown", "not found", "not available"):
        return ""
    low = document.lower()
    tail = re.split(r"\b(?:is|are|was|:)\s+", a)[-1].strip().strip("\"'`").rstrip(".").strip()
    if tail and tail != a and tail.lower() in low and not _trivial(tail, attribute):
        return tail
    if len(a) <= 200 and a.lower() in low and not _trivial(a, attribute):
        return a
    words = re.findall(r"[\w@./'-]+", a)
    skip = _STOP | set(attribute.lower().replace("_", " ").split())
    best = ""
    for i in range(len(words)):
        for j in range(min(len(words), i + 12), i, -1):
            phrase = " ".join(words[i:j]).strip(".,")
            if len(phrase) <= len(best):
                break
            if all(w.lower() in skip for w in words[i:j]):
                continue
            if re.search(r"(?<!\w)" + re.escape(phrase.lower()) + r"(?!\w)", low):
                best = phrase
                break
    return best


def _trivial(a: str, attribute: str) -> bool:
    skip = _STOP | set(attribute.lower().replace("_", " ").split())
    return all(w.lower() in skip for w in re.findall(r"\w+", a))


def parse_code(text: str) -> str | None:
    """The Python source in an LLM answer, with its function named `extract` (None if none)."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", text, re.DOTALL)
    code = m.group(1) if m else text
    start = re.search(r"^(import |from |def )", code, re.MULTILINE)
    if not start:
        return None
    code = code[start.start() :]
    lines = code.splitlines()
    keep = []
    for ln in lines:  # drop trailing prose and example calls at top level
        if ln and not ln[0].isspace() and not re.match(r"(import |from |def |@|_?[A-Z_]+ ?=)", ln):
            if keep and not ln.startswith(("#",)):
                break
        keep.append(ln)
    code = "\n".join(keep).rstrip() + "\n"
    defs = re.findall(r"^def (\w+)\s*\(", code, re.MULTILINE)
    if not defs:
        return None
    if "extract" not in defs:
        code += f"\n\ndef extract(text):\n    return {defs[0]}(text)\n"
    return code
