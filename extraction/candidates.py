"""LLM-free candidate functions induced from sample values (wrapper induction).

Given sample documents and the value of an attribute in some of them (from direct LLM
extraction), write small `extract(text)` functions that reproduce those values:
label-anchored ("Attribute: value" on a line), markup-anchored (the cell after a header, a
dt/dd pair, a JSON key) and shape regexes (digits, dates) after the same left context. They
are plain code, run in the same sandbox and compete in the same scoring as the LLM's.
"""

from __future__ import annotations

import re
from collections import Counter

_CODE = """import re

_PAT = re.compile({pattern!r}{flags})


def extract(text: str) -> str:
    m = _PAT.search(text)
    return m.group(1).strip() if m else ""
"""


def normalize(v: str | None) -> str:
    """Comparison form of a value: lower case, single spaces, no surrounding punctuation."""
    if v is None:
        return ""
    v = re.sub(r"<[^>]+>", " ", str(v))
    v = " ".join(v.split()).strip(" \t.,;:'\"()[]").lower()
    return "" if v in ("", "none", "null", "n/a", "unknown", "not found", "nan") else v


def _find(text: str, value: str) -> list[int]:
    """Start offsets of `value` in `text` (case-insensitive, whole-token boundaries)."""
    if not value:
        return []
    pat = re.compile(r"(?<![\w])" + re.escape(value) + r"(?![\w])", re.IGNORECASE)
    return [m.start() for m in pat.finditer(text)][:3]


def _left_pattern(left: str) -> str | None:
    """A regex for a left context: whitespace runs become \\s*, the rest is literal."""
    left = left.lstrip()
    if len(left.strip()) < 2 or not re.search(r"[A-Za-z<\"]", left):
        return None
    parts = re.split(r"\s+", left)
    return r"\s*".join(re.escape(p) for p in parts if p) + (r"\s*" if left[-1:].isspace() else "")


def _value_pattern(value: str, right: str) -> list[str]:
    pats = []
    if right in ("", "\n", "\r"):
        pats.append(r"([^\n]+?)[ \t]*(?:\n|$)")
    elif right == "<":
        pats.append(r"([^<\n]+?)\s*<")
    elif right == '"':
        pats.append(r'((?:[^"\\]|\\.)+?)"')
    elif right in ",.;)":
        pats.append(r"([^\n" + re.escape(right) + r"]+?)" + re.escape(right))
    else:
        pats.append(r"(.+?)" + re.escape(right))
    if re.fullmatch(r"\d+", value):
        pats.append(r"(\d+)")
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        pats.append(r"(\d{4}-\d{2}-\d{2})")
    elif re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2,4}", value):
        pats.append(r"(\d{1,2}/\d{1,2}/\d{2,4})")
    elif re.fullmatch(r"[A-Z]{2,4}", value):
        pats.append(r"([A-Z]{2,4})\b")
    return pats


def induce(samples: list[tuple[str, str]], max_functions: int = 12) -> list[tuple[str, str]]:
    """Candidate functions from (document text, sample value) pairs.

    Returns (name, code) pairs, the ones that reproduce the most sample values first.
    """
    counts: Counter[str] = Counter()
    names: dict[str, str] = {}
    for text, value in samples:
        value = " ".join(str(value).split())
        if not value:
            continue
        for start in _find(text, value):
            end = start + len(value)
            right = text[end : end + 1]
            line_start = text.rfind("\n", 0, start) + 1
            lefts = []
            line_left = text[line_start:start]
            if line_left.strip():
                lefts.append(("label", line_left, True))
            for k in (12, 24, 40):
                seg = text[max(0, start - k) : start]
                if "\n" in seg.rstrip("\n \t"):  # keep contexts that cross one line break
                    seg = seg[seg.rfind("\n", 0, len(seg.rstrip("\n \t"))) + 1 :]
                lefts.append(("markup" if "<" in seg or '"' in seg else "context", seg, False))
            for kind, left, anchored in lefts:
                lp = _left_pattern(left)
                if lp is None:
                    continue
                for vp in _value_pattern(value, right):
                    pattern = ("^[ \t]*" if anchored else "") + lp + vp
                    flags = ", re.IGNORECASE | re.MULTILINE" if anchored else ", re.IGNORECASE"
                    try:
                        re.compile(pattern)
                    except re.error:
                        continue
                    code = _CODE.format(pattern=pattern, flags=flags)
                    if code not in names:
                        names[code] = kind
                    counts[code] += 1
    ranked = sorted(counts, key=lambda c: (-counts[c], len(c)))
    return [(names[c], c) for c in ranked[:max_functions]]
