"""Candidate functions the small local LLM writes in a checkable form (constrained generation).

SmolLM2-135M cannot write a working `extract(text)` function free-form (every one it wrote was
dropped: docs/extraction.md). Here it only chooses, and only among allowed answers: for an
attribute and a sample document it picks an *anchor* (a short text that occurs in the
document right before the value: a `Label:` line start, a `<th>`/`<dt>` label, a JSON key, or
a phrase of a prose line) and a *value pattern* from a fixed menu (`PATTERNS`: rest of the
line, one word, a number, a date, ...). The choice is exact constrained decoding: every
allowed option is scored by its log-likelihood (`LLM.score_options`, `toolkit.llm.constrain`)
and the best win, so the model cannot emit anything else. The toolkit renders each
(anchor, pattern) into plain `def extract(text)` source (`render`, `re` only), which goes
through the same sandbox, scoring and ensemble as every other candidate, with source
`llm-constrained`.

Only a local model can be scored this way (`llm.can_score`); with a server URL the run keeps
the free-form code prompts (`extraction.functions`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from extraction.config import EvaporateConfig
from extraction.structure import find_labels, label_key

log = logging.getLogger(__name__)

SOURCE = "llm-constrained"
#: the menu of value patterns: name -> (the word the LLM chooses, the regex whose group 1 is
#: the value; "count": an integer with thousands separators, "phrase": up to the next
#: punctuation mark). Short words: every option token is one model step.
PATTERNS: dict[str, tuple[str, str]] = {
    "rest_of_line": ("line", r"([^\n<]*[^\s<])"),
    "one_word": ("word", r"([^\s<>\"',;]+)"),
    "two_words": ("two words", r"([^\s<>\"',;]+[ \t]+[^\s<>\"',;]+)"),
    "number": ("number", r"(-?\d+(?:\.\d+)?)(?!\d)"),
    "integer_separators": ("count", r"(\d{1,3}(?:[,' ]\d{3})+|\d+)(?![\d,])"),
    "date": (
        "date",
        r"(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"
        r"|\d{1,2}\s+[A-Z][a-z]{2,8}\.?,?\s+\d{4}|[A-Z][a-z]{2,8}\.?\s+\d{1,2},?\s+\d{4})",
    ),
    "email": ("email", r"([\w.+-]+@[\w-]+(?:\.[\w-]+)+)"),
    "url": ("URL", r"(https?://[^\s<>\"')]+)"),
    "quoted": ("quoted text", r"\"([^\"\n]*)\""),
    "up_to_punctuation": ("phrase", r"([^\n<.,;:!?()\"]*[^\s<.,;:!?()\"])"),
}
#: what may stand between an anchor and its value: separators, quotes and whole tags
SEPARATOR = r"[ \t:=|\"'\-]*(?:<[^<>]*>[\s:=|\"'\-]*)*"
MAX_ANCHORS = 24
MAX_ANCHOR_CHARS = 40
#: anchors per document whose patterns are asked for, and (anchor, pattern) pairs kept
TOP_ANCHORS = 1
TOP_PAIRS = 3
EXCERPT_CHARS = 1000
#: the attribute of the calibration question (`_calibrated`)
NULL_ATTRIBUTE = "value"

ANCHOR_PROMPT = (
    "{text}\n\nIn documents like the one above, which text comes right before the {attribute}?"
    " Reply with that text only, copied from the document."
)
PATTERN_PROMPT = (
    '{text}\n\nIn the document above, the {attribute} comes right after "{anchor}". '
    "What does the {attribute} look like? Reply with one of: {menu}."
)

_TEMPLATE = """import re

_PAT = re.compile({pattern!r}, re.IGNORECASE)


def extract(text: str) -> str:
    m = _PAT.search(text)
    return " ".join(m.group(1).split()) if m else ""
"""


def anchor_regex(anchor: str) -> str:
    """The regex of an anchor: its text literally (whitespace runs as `\\s+`), not inside a
    longer word (`Name` never matches in `Surname`)."""
    parts = [re.escape(p) for p in anchor.split()]
    if not parts:
        raise ValueError(f"anchor {anchor!r} is empty: give a text that occurs in the document")
    body = r"\s+".join(parts)
    head = r"(?<![\w\-])" if re.match(r"[\w\-]", anchor.strip()) else ""
    tail = r"(?![\w])" if re.search(r"\w$", anchor.strip()) else ""
    return head + body + tail


def render(anchor: str, pattern: str) -> str:
    """The `extract(text)` source for (anchor, pattern): the first `pattern` value after
    `anchor` (case-insensitive), separators and tags between them skipped."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}: use one of {', '.join(PATTERNS)}")
    return _TEMPLATE.format(pattern=anchor_regex(anchor) + SEPARATOR + PATTERNS[pattern][1])


def anchor_options(raw: str, limit: int = MAX_ANCHORS) -> list[str]:
    """Anchors a document allows, each a substring of it: the labels it declares (`Label:` as
    written with its separator, `<th>`/`<dt>` labels, `"json_keys"`), then the first word of
    each other line and the one or two words before a capitalised word or a number in it."""
    out: dict[str, None] = {}
    for lab, kind in find_labels(raw):
        if kind == "line":
            m = re.search(r"(?m)" + re.escape(lab) + r"\**[ \t]*[:=]", raw)
            a = m.group(0) if m else lab
        elif kind == "json":
            a = f'"{lab}"'
        else:
            a = lab
        out.setdefault(a, None)
    text = re.sub(r"<[^>]*>", "\n", raw)
    for line in text.splitlines():
        if not line.strip() or re.match(r"\s*[\w][\w \-]{0,30}\s*[:=]", line):
            continue
        words = re.findall(r"[^\s]+", line)
        if len(words) >= 3 and re.match(r"[A-Za-z]", words[0]):  # prose, not a lone value
            out.setdefault(words[0].rstrip(",.;:"), None)
        for k in range(1, len(words)):
            if re.match(r"[A-Z0-9]", words[k]) and re.fullmatch(r"[a-z]+", words[k - 1]):
                out.setdefault(words[k - 1], None)
                if k >= 2 and re.fullmatch(r"[A-Za-z]+", words[k - 2]):
                    out.setdefault(f"{words[k - 2]} {words[k - 1]}", None)
    keep = [a for a in out if a and len(a) <= MAX_ANCHOR_CHARS and a in raw]
    return keep[:limit]


def _excerpt(raw: str, anchors: list[str]) -> str:
    """The part of a document the LLM reads: from a little before its first anchor."""
    first = min((raw.find(a) for a in anchors if a in raw), default=0)
    start = raw.rfind("\n", 0, max(0, first - 200)) + 1
    return raw[start : start + EXCERPT_CHARS]


def _calibrated(llm: Any, template: str, options: list[str], words: str, **kw: str) -> list:
    """Each option's log-likelihood under the question about `words` minus under the same
    question about a generic "value" (domain-conditional PMI): a 135M model's raw scores
    barely depend on the attribute (it prefers the same short option whatever is asked), its
    score *differences* between attributes do. The generic question is the same for every
    attribute of a document, so it is scored once (cached)."""
    asked = llm.score_options(template.format(attribute=words, **kw), options)
    base = llm.score_options(template.format(attribute=NULL_ATTRIBUTE, **kw), options)
    return [a - b for a, b in zip(asked, base)]


def allowed_patterns(value: str) -> list[str]:
    """The menu's patterns whose regex matches the whole of a known sample value (the whole
    menu when the value is unknown or none matches)."""
    v = " ".join(str(value or "").split())
    ok = [n for n, (_, rx) in PATTERNS.items() if v and re.fullmatch(rx, v)]
    return ok or list(PATTERNS)


def allowed_anchors(raw: str, value: str) -> list[str]:
    """The document's anchors (`anchor_options`), less those that hold the sample value or,
    when the value occurs in the document, start only after it."""
    anchors = anchor_options(raw)
    v = " ".join(str(value or "").split()).lower()
    if not v:
        return anchors
    at = raw.lower().find(v)
    return [
        a for a in anchors
        if v not in a.lower() and (at < 0 or raw.lower().find(a.lower()) < at)
    ]  # fmt: skip


def choose(llm: Any, raw: str, attribute: str, value: str = "") -> list[tuple[str, str, float]]:
    """The LLM's best (anchor, pattern, score) choices for `attribute` in `raw`, best first:
    the `TOP_ANCHORS` best anchors, each with its best patterns, `TOP_PAIRS` pairs in all
    ([] when the document allows no anchor). Scores are calibrated log-likelihoods
    (`_calibrated`); `value` (the sample's value, '' if unknown) narrows the options."""
    anchors = allowed_anchors(raw, value)
    if not anchors:
        return []
    words = attribute.replace("_", " ")
    text = _excerpt(raw, anchors)
    scores = _calibrated(llm, ANCHOR_PROMPT, anchors, words, text=text)
    best = sorted(range(len(anchors)), key=lambda i: -scores[i])[:TOP_ANCHORS]
    names = allowed_patterns(value)
    menu = [PATTERNS[n][0] for n in names]
    pairs = []
    for i in best:
        if len(names) == 1:
            pairs.append((anchors[i], names[0], scores[i]))
            continue
        ps = _calibrated(llm, PATTERN_PROMPT, menu, words, text=text, anchor=anchors[i],
                         menu="; ".join(menu))  # fmt: skip
        pairs += [(anchors[i], names[j], scores[i] + ps[j]) for j in range(len(names))]
    pairs.sort(key=lambda p: -p[2])
    return pairs[:TOP_PAIRS]


def constrained_candidates(
    llm: Any,
    raws: list[str],
    sample_vals: dict[str, list[str]],
    cfg: EvaporateConfig,
    budget: Callable[[], int] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Rows (attribute, function_id, source, code, raw) of the constrained functions: per
    attribute, the (anchor, pattern) pairs the LLM chose on the sample documents, those
    chosen on the most documents (then likeliest) first, one per anchor (case and
    punctuation ignored: `Surname` and `Surname:` are one), `cfg.constrained_candidates` of
    them. budget() -> LLM tokens left, checked before each document; none once spent."""
    rows: list[dict] = []
    bar = tqdm(total=len(sample_vals) * len(raws), desc="constrained functions",
               disable=not progress)  # fmt: skip
    for a, values in sample_vals.items():
        found: dict[str, list] = {}  # code -> [documents, best score, anchor, pattern]
        for i, raw in enumerate(raws):
            if budget is not None and budget() <= 0:
                log.info("LLM token budget spent: no further constrained functions")
                break
            value = values[i] if i < len(values) else ""
            for anchor, pattern, score in choose(llm, raw, a, value):
                code = render(anchor, pattern)
                got = found.setdefault(code, [0, score, anchor, pattern])
                got[0] += 1
                got[1] = max(got[1], score)
            bar.update(1)
        ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))
        taken: set[str] = set()  # one function per anchor: near-duplicates vote together
        for code, (_, score, anchor, pattern) in ranked:
            if label_key(anchor) in taken or len(taken) >= cfg.constrained_candidates:
                continue
            taken.add(label_key(anchor))
            rows.append({"attribute": a, "function_id": f"constrained_{len(taken) - 1}",
                         "source": SOURCE, "code": code, "raw": f"anchor={anchor!r} "
                         f"pattern={pattern} score={score:.2f}"})  # fmt: skip
    bar.close()
    return rows
