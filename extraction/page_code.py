"""The code of the web-page structure candidates (`extraction.webpage`): helpers that read a
page's `<meta>`, `<title>`, `<h1>`, `<time>`, JSON-LD and microdata with the standard library
only (the sandbox admits `re`, `json`, `html`, `datetime` and no parser), and the functions
this process and the sandbox both use (`SHARED`: `iso_date`, `labelled_date`, `heading_text`,
`clean_text`, `walk_ld`, `ld_value`, `title_part`; their source is copied into the sandbox
code), so a page reads the same on either side."""

from __future__ import annotations

import datetime as _dt
import html
import inspect
import re

MONTHS = {
    **dict.fromkeys(("january", "jan", "januar", "janvier", "enero", "janeiro", "gennaio"), 1),
    **dict.fromkeys(("february", "feb", "februar", "février", "fevrier", "febrero"), 2),
    **dict.fromkeys(("march", "mar", "märz", "maerz", "mars", "marzo", "março"), 3),
    **dict.fromkeys(("april", "apr", "avril", "abril", "aprile"), 4),
    **dict.fromkeys(("may", "mai", "mayo", "maio", "maggio"), 5),
    **dict.fromkeys(("june", "jun", "juni", "juin", "junio", "junho", "giugno"), 6),
    **dict.fromkeys(("july", "jul", "juli", "juillet", "julio", "julho", "luglio"), 7),
    **dict.fromkeys(("august", "aug", "août", "aout", "agosto"), 8),
    **dict.fromkeys(("september", "sep", "sept", "septembre", "septiembre", "setembro"), 9),
    **dict.fromkeys(("october", "oct", "oktober", "octobre", "octubre", "outubro"), 10),
    **dict.fromkeys(("november", "nov", "novembre", "noviembre", "novembro"), 11),
    **dict.fromkeys(("december", "dec", "dezember", "décembre", "decembre", "diciembre"), 12),
}
#: what CMSs wrap JSON-LD in: `<!-- ... -->`, `//<![CDATA[ ... //]]>`
LD_WRAPPERS = r"^\s*(?:<!--|(?://\s*)?<!\[CDATA\[)|(?:-->|(?://\s*)?\]\]>)\s*$"
#: `<meta>` names of a page's modification date
MODIFIED_KEYS = (
    "article:modified_time",
    "og:updated_time",
    "datemodified",
    "dcterms.modified",
    "last-modified",
)
MONTH_PATTERN = "|".join(sorted(map(re.escape, MONTHS), key=len, reverse=True))
#: what sites put between a headline and the site's name in `<title>`
TITLE_SEPARATORS = r"\s+[|\-\u2013\u2014\u00b7\u00bb]\s+|\s+::\s+"
#: permalink marks that generators append to headings (Sphinx/MkDocs `¶`, `§`, `🔗`)
PERMALINK_MARKS = "\u00b6\u00a7\U0001f517"
#: words that label a page's own date in its text, the publication labels first: "Posted on",
#: "Published:", "Last updated on", "This page last modified on", "Updated:"
DATE_LABELS = (
    r"(?i)\b(?:published|posted)(?:\s+on)?\b\s*:?|\bdate\s+published\s*:?",
    r"(?i)\blast[ -]?(?:updated|modified|changed|revised)(?:\s+on)?\b\s*:?"
    r"|\b(?:updated|modified|revised)(?:\s+on\b|\s*:)",
)


def iso_date(text: str) -> str:
    """The first date written in `text` as ISO `YYYY-MM-DD` ('' when none): ISO 8601 and
    `2024/03/05`, `5 March 2024`, `5. März 2024`, `5 de marzo de 2024`, `March 5, 2024`,
    `Tue, 05 Mar 2024` (RFC 2822), `2022 September 19`. Numeric day/month orders
    (`05/03/2024`) are ambiguous and not read. This exact function also runs in the sandbox (its source is copied)."""
    s = " ".join(str(text or "").split())
    found = []
    m = re.search(r"(?<!\d)(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?!\d)", s)
    if m:
        found.append((m.start(), int(m.group(1)), int(m.group(2)), int(m.group(3))))
    months = "(" + MONTH_PATTERN + r")\.?"
    m = re.search(
        r"(?i)(?<![\w])(\d{1,2})(?:st|nd|rd|th)?\.?\s+(?:de\s+)?"
        + months
        + r",?\s+(?:de\s+)?(\d{4})(?!\d)",
        s,
    )
    if m:
        found.append((m.start(), int(m.group(3)), MONTHS[m.group(2).lower()], int(m.group(1))))
    m = re.search(r"(?i)(?<![\w])" + months + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})(?!\d)", s)
    if m:
        found.append((m.start(), int(m.group(3)), MONTHS[m.group(1).lower()], int(m.group(2))))
    m = re.search(r"(?i)(?<![\w])(\d{4})\s+" + months + r"\s+(\d{1,2})(?!\d)", s)
    if m:  # `2022 September 19` (man pages)
        found.append((m.start(), int(m.group(1)), MONTHS[m.group(2).lower()], int(m.group(3))))
    for _, y, mo, d in sorted(found):
        try:
            return _dt.date(y, mo, d).isoformat()
        except ValueError:
            continue
    return ""


def labelled_date(text: str) -> str:
    """The date (ISO) that the text labels as the page's own: the first date within 40
    characters after a DATE_LABELS phrase, publication labels before "last updated" ones
    ('' when none). Also runs in the sandbox (its source is copied)."""
    for pattern in DATE_LABELS:
        for m in re.finditer(pattern, text):
            v = iso_date(text[m.end() : m.end() + 40])
            if v:
                return v
    return ""


def heading_text(v: str) -> str:
    """A heading's text without the permalink mark a generator appends (PERMALINK_MARKS).
    Also runs in the sandbox (its source is copied)."""
    return re.sub("[\\s" + PERMALINK_MARKS + "]+$", "", v)


def clean_text(v: str) -> str:
    """`v` without tags and character references, white space folded. Also runs in the
    sandbox (its source is copied)."""
    v = re.sub(r"(?s)<[^>]+>", " ", v or "")
    return " ".join(html.unescape(v).split())


def walk_ld(data: object) -> list:
    """The JSON-LD objects of one parsed block, in document order (lists and `@graph`
    flattened). This exact function also runs in the sandbox (its source is copied)."""
    out = []
    todo = [data]
    while todo:
        d = todo.pop(0)
        if isinstance(d, list):
            todo = d + todo
        elif isinstance(d, dict):
            out.append(d)
            if isinstance(d.get("@graph"), list):
                todo = d["@graph"] + todo
    return out


def ld_value(objs: list, key: str, sub: str) -> str:
    """The first non-empty `key` of JSON-LD objects as text, uncleaned ('' when none): a list's
    first item, an object's `sub` (default `name`). Also runs in the sandbox (source copied)."""
    for d in objs:
        v = d.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, dict):
            v = v.get(sub or "name")
        if isinstance(v, (str, int, float)) and str(v).strip():
            return str(v)
    return ""


def title_part(title: str, affixes: tuple = ()) -> str:
    """A `<title>` without the site's name: the `affixes` (lower case) are site names that
    open or close the titles of several pages of one site (`webpage.site_affixes`); a part
    split off at TITLE_SEPARATORS that is one of them is dropped and the rest kept as written.
    Without such a part, the longest part; '' for a title that does not split. Also runs in
    the sandbox."""
    pieces = re.split("(" + TITLE_SEPARATORS + ")", title.strip())
    if len(pieces) < 3:  # no part to strip: the title as written is the `title` signal
        return ""
    if len(pieces) >= 3 and " ".join(pieces[-1].split()).lower() in affixes:
        return "".join(pieces[:-2]).strip()
    if len(pieces) >= 3 and " ".join(pieces[0].split()).lower() in affixes:
        return "".join(pieces[2:]).strip()
    if " ".join(title.split()).lower() in affixes:
        return ""
    parts = [p.strip() for p in re.split(TITLE_SEPARATORS, title) if p.strip()]
    return max(parts, key=len) if parts else ""


def vote(values: list, generic: list) -> str:
    """What one role's signals of a page agree on, in priority order, as the sample's chooser
    takes it without an LLM: the explicit signals' values when any has one, else the generic
    ones'; the value most give wins (case and surrounding punctuation ignored), a tie the
    earliest. Also runs in the sandbox (its source is copied)."""
    pairs = [(v, g) for v, g in zip(values, generic) if v]
    voters = [v for v, g in pairs if not g] or [v for v, g in pairs]
    counts: dict = {}
    first: dict = {}
    for v in voters:
        key = " ".join(v.split()).strip(" .,;:'\"()[]").lower()
        if key:
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, v)
    if not counts:
        return ""
    top = max(counts.values())
    return next(first[k] for k in counts if counts[k] == top)


#: the functions both sides run, appended to the sandbox code from this module's source
SHARED = (iso_date, labelled_date, heading_text, clean_text, walk_ld, ld_value, title_part, vote)

#: The helpers every structure candidate carries into the sandbox (re, json, html, datetime
#: only). The SHARED functions are appended from this module's source.
SANDBOX_HELPERS = r"""import datetime as _dt
import html
import json
import re

MONTHS = {months!r}
MONTH_PATTERN = {pattern!r}
MODIFIED_KEYS = {modified!r}
LD_WRAPPERS = {wrappers!r}
TITLE_SEPARATORS = {separators!r}
PERMALINK_MARKS = {marks!r}
DATE_LABELS = {labels!r}


def _attr(tag, name):
    m = re.search(r"(?is)(?<![\w:-])" + name + r"\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))", tag)
    if not m:
        return None
    for g in m.groups():
        if g is not None:
            return g
    return None


def _visible(text):
    t = re.sub(r"(?is)<(script|style|noscript|template)\b.*?</\1\s*>", " ", text)
    t = re.sub(r"(?s)<!--.*?-->", " ", t)
    return clean_text(t)


def _meta(text, keys):
    for tag in re.findall(r"(?is)<meta\b[^>]*>", text):
        key = _attr(tag, "property") or _attr(tag, "name") or _attr(tag, "itemprop") or ""
        if key.strip().lower() in keys:
            v = clean_text(_attr(tag, "content") or "")
            if v:
                return v
    return ""


def _element(text, name):
    m = re.search(r"(?is)<" + name + r"\b[^>]*>(.*?)</" + name + r"\s*>", text)
    return clean_text(m.group(1)) if m else ""


def _title_clean(text, affixes):
    return title_part(_element(text, "title"), affixes)


def _h1(text):
    found = []
    for m in re.findall(r"(?is)<h1\b[^>]*>(.*?)</h1\s*>", text):
        v = heading_text(clean_text(m))
        if v and v not in found:
            found.append(v)
    return found[0] if len(found) == 1 else ""


def _time(text):
    for tag in re.findall(r"(?is)<time\b[^>]*>", text):
        v = _attr(tag, "datetime")
        if v and v.strip():
            return v.strip()
    return ""


def _ld_objects(text):
    pat = r"(?is)<script\b[^>]*application/ld\+json[^>]*>(.*?)</script\s*>"
    out = []
    for block in re.findall(pat, text):
        try:
            data = json.loads(re.sub(LD_WRAPPERS, "", block).strip().rstrip(";"))
        except ValueError:
            continue
        out += walk_ld(data)
    return out


def _jsonld(text, key, sub):
    return clean_text(ld_value(_ld_objects(text), key, sub))


def _microdata(text, prop):
    pat = r"(?is)<([a-z][a-z0-9]*)\b[^>]*\bitemprop\s*=\s*[\"']?" + prop + r"[\"'\s>]"
    m = re.search(pat, text)
    if not m:
        return ""
    tag = text[m.start():text.find(">", m.start()) + 1]
    v = _attr(tag, "content") or _attr(tag, "datetime")
    if v and v.strip():
        return clean_text(v)
    if re.search(r"(?i)\bitemscope\b", tag):
        return _microdata(text[m.start() + len(tag):], "name")
    inner = re.search(r"(?is)>(.*?)</" + m.group(1) + r"\s*>", text[m.start():])
    return clean_text(inner.group(1)) if inner else ""


def _html_lang(text):
    m = re.search(r"(?is)<html\b[^>]*>", text)
    return (_attr(m.group(0), "lang") or "").strip() if m else ""


def _link_rel(text, rel):
    for tag in re.findall(r"(?is)<link\b[^>]*>", text):
        if (_attr(tag, "rel") or "").strip().lower() == rel:
            return (_attr(tag, "href") or "").strip()
    return ""


def _modified(text):
    v = _meta(text, MODIFIED_KEYS) or _jsonld(text, "dateModified", "")
    return iso_date(v or _microdata(text, "dateModified"))


def _unless_modified(text, v):
    if v and iso_date(v) == _modified(text):
        return ""
    return v


def _text_date(text):
    v = _visible(text)
    return "" if labelled_date(v) else iso_date(v)


def _labelled_date(text):
    return labelled_date(_visible(text))


"""

_EXTRACT = """

def extract(text: str) -> str:
    v = {call}
    return iso_date(v) if {date} else v
"""
_CALLS = {
    "meta": "_meta(text, {arg!r})",
    "jsonld": "_jsonld(text, {arg[0]!r}, {arg[1]!r})",
    "microdata": "_microdata(text, {arg!r})",
    "title": '_element(text, "title")',
    "title_clean": "_title_clean(text, {arg!r})",
    "h1": "_h1(text)",
    "time": "_unless_modified(text, _time(text))",
    "text_date": "_unless_modified(text, _text_date(text))",
    "labelled_date": "_labelled_date(text)",
    "html_lang": "_html_lang(text)",
    "link_rel": "_link_rel(text, {arg!r})",
}


def _call(kind: str, arg) -> str:
    return _CALLS[kind].format(arg=tuple(arg) if isinstance(arg, (list, tuple)) else arg)


def build_code(kind: str, arg, is_date: bool) -> str:
    """The sandbox `extract(text)` module for one signal kind and its argument (for "vote",
    the role's signals as (kind, arg, generic) in priority order)."""
    helpers = (
        SANDBOX_HELPERS.replace("{months!r}", repr(MONTHS))
        .replace("{pattern!r}", repr(MONTH_PATTERN))
        .replace("{modified!r}", repr(MODIFIED_KEYS))
        .replace("{wrappers!r}", repr(LD_WRAPPERS))
        .replace("{separators!r}", repr(TITLE_SEPARATORS))
        .replace("{marks!r}", repr(PERMALINK_MARKS))
        .replace("{labels!r}", repr(DATE_LABELS))
    )
    shared = "\n\n".join(inspect.getsource(f) for f in SHARED)
    if kind == "vote":  # arg: the role's (kind, arg, generic) signals in priority order
        calls = [_call(k, a) for k, a, _ in arg]
        if is_date:
            calls = [f"iso_date({c})" for c in calls]
        call = f"vote([{', '.join(calls)}], {[g for _, _, g in arg]!r})"
    else:
        call = _call(kind, arg)
    return helpers + shared + _EXTRACT.format(call=call, date=is_date)
