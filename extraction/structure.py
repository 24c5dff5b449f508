"""The labels documents carry: `Label: value` lines (package METADATA headers, key-value
files), table header and definition-list cells (`<th>`/`<dt>`) and JSON keys.

Schema discovery (`extraction.stages.identify_schema`) names attributes after them, chunk
retrieval shows the LLM the part of a document that holds an attribute's label before any
semantically similar part, and `label_candidates` writes one label-anchored `extract(text)`
function per label that names an attribute. The functions are plain code, run in the same
sandbox and are scored with the other candidates; `label_value` is the same extraction in
this process (a document's own label is also evidence for the sample's values).
"""

from __future__ import annotations

import re

#: label kinds: a `Label: value` line, a th/td or dt/dd cell pair, a JSON key
KINDS = ("line", "cell", "json")
#: a line may open with markup: `<p>City: Hull</p>`
_OPEN = r"^[ \t-]*(?:<[^>\n]+>[ \t]*)*\**"
_LINE = re.compile(r"(?m)" + _OPEN + r"([A-Za-z][\w \-]{1,30}?)\**[ \t]*[:=]")
_CELL = re.compile(r"(?i)<(?:th|dt)[^>]*>\s*([^<]{2,30}?)\s*</(?:th|dt)>")
_JSON = re.compile(r'"([A-Za-z_][\w \-]{1,30})"\s*:\s*[^{\[\s]')
#: markup inside a captured value (a `<p>City: Hull</p>` line); other `<...>` text is kept
_TAGS = r"</?(?:p|div|span|li|td|th|dd|dt|b|strong|em|i|a|br|code|font|u|small)\b[^>]*>"


def label_key(name: str) -> str:
    """Comparison form of a label or attribute: case, spaces, `_` and `-` ignored."""
    return re.sub(r"[\W_]", "", str(name).lower())  # any script: 'Größe' is not 'Gre'


def inside_tag(raw: str, pos: int) -> bool:
    """Whether `pos` lies inside an HTML tag (an attribute line such as `title="Next">`
    of a tag spread over lines is no `Label: value` line)."""
    return raw.rfind("<", 0, pos) > raw.rfind(">", 0, pos)


def find_labels(raw: str) -> list[tuple[str, str]]:
    """(label as written, kind) of every label in a document, in document order, once each."""
    found: list[tuple[int, str, str]] = []
    tags = "<" in raw  # plain text: no tag to be inside (and no backward scan per line)
    for kind, pat in (("line", _LINE), ("cell", _CELL), ("json", _JSON)):
        found += [(m.start(), m.group(1).strip(), kind) for m in pat.finditer(raw)
                  if kind != "line" or not (tags and inside_tag(raw, m.start()))]  # fmt: skip
    return list(dict.fromkeys((lab, kind) for _, lab, kind in sorted(found) if lab))


def labels_for(attribute: str, raws: list[str]) -> list[tuple[str, str]]:
    """The labels of `raws` that name `attribute` (case/underscore/hyphen-insensitive)."""
    key = label_key(attribute)
    out: dict[tuple[str, str], None] = {}
    for raw in raws:
        for lab, kind in find_labels(raw):
            if label_key(lab) == key:
                out.setdefault((lab.lower(), kind), None)
    return list(out)


def label_pattern(label: str, kind: str) -> str:
    """The regex (case-insensitive; multi-line for lines) whose group 1 is the value."""
    words = [re.escape(w) for w in re.split(r"[\s_\-]+", label.strip()) if w]
    lab = r"[ \t_\-]*".join(words)
    if kind == "line":  # at a line start, so `Version` never matches `Metadata-Version:`
        return _OPEN + lab + r"\**[ \t]*[:=][ \t]*([^\n]*?)[ \t]*$"
    if kind == "cell":
        return (
            r"<(th|dt)\b[^>]*>\s*"
            + lab
            + r"\s*:?\s*</\1>\s*<(?:td|dd)\b[^>]*>([\s\S]*?)</(?:td|dd)>"
        )
    if kind == "json":
        return r'"' + lab + r'"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d[\d.eE+\-]*|true|false)'
    raise ValueError(f"unknown label kind {kind!r}: use one of {', '.join(KINDS)}")


_CODE = """import re

_PAT = re.compile({pattern!r}, re.IGNORECASE | re.MULTILINE)
_TAGS = re.compile({tags!r}, re.IGNORECASE)


def extract(text: str) -> str:
    m = _PAT.search(text)
    if not m:
        return ""
    v = _TAGS.sub(" ", m.group(m.lastindex))
    v = " ".join(v.split())
    if {json} and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return v
"""


def label_code(label: str, kind: str) -> str:
    """The `extract(text)` function for a label (what `label_value` computes here)."""
    return _CODE.format(pattern=label_pattern(label, kind), tags=_TAGS, json=kind == "json")


def label_value(text: str, label: str, kind: str) -> str:
    """The value a document declares under `label` ('' when it has no such label)."""
    m = re.search(label_pattern(label, kind), text, re.IGNORECASE | re.MULTILINE)
    if not m:
        return ""
    v = " ".join(re.sub(_TAGS, " ", m.group(m.lastindex), flags=re.IGNORECASE).split())
    if kind == "json" and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return v


def label_candidates(attribute: str, raws: list[str]) -> list[tuple[str, str]]:
    """(function_id, code) of one label-anchored function per label naming `attribute`."""
    return [
        (f"label_{kind}_{k}", label_code(lab, kind))
        for k, (lab, kind) in enumerate(labels_for(attribute, raws))
    ]


def declared_values(raws: list[str], attribute: str) -> list[str]:
    """Per document, the value its own label for `attribute` declares ('' where none)."""
    labels = labels_for(attribute, raws)
    out = []
    for raw in raws:
        v = ""
        for lab, kind in labels:
            v = label_value(raw, lab, kind)
            if v:
                break
        out.append(v)
    return out


def label_spans(view: str, attribute: str) -> list[int]:
    """Offsets in a readable view where a label naming `attribute` starts (a `Label:` line,
    a `Label | value` row of a table, a `"label":` key)."""
    words = [re.escape(w) for w in attribute.replace("_", " ").split() if w]
    if not words:
        return []
    lab = r"[ \t_\-]*".join(words)
    pat = re.compile(
        r"(?im)^[ \t-]*\**" + lab + r"\**[ \t]*[:=|]|\"" + lab + r"\"\s*:",
    )
    return [m.start() for m in pat.finditer(view)]
