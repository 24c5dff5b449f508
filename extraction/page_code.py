"""The code of the web-page structure candidates (`extraction.webpage`): helpers that read a
page's `<meta>`, `<title>`, `<h1>`, `<time>`, JSON-LD and microdata with the standard library
only (the sandbox admits `re`, `json`, `html`, `datetime` and no parser), and the functions
this process and the sandbox both use (`SHARED`: `iso_date`, `clean_text`, `walk_ld`,
`ld_value`, `title_part`; their source is copied into the sandbox code), so a page reads the same on
either side."""

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


def iso_date(text: str) -> str:
    """The first date written in `text` as ISO `YYYY-MM-DD` ('' when none): ISO 8601 and
    `2024/03/05`, `5 March 2024`, `5. März 2024`, `5 de marzo de 2024`, `March 5, 2024`,
    `Tue, 05 Mar 2024` (RFC 2822). Numeric day/month orders (`05/03/2024`) are ambiguous
    and not read. This exact function also runs in the sandbox (its source is copied)."""
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
    for _, y, mo, d in sorted(found):
        try:
            return _dt.date(y, mo, d).isoformat()
        except ValueError:
            continue
    return ""


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


def title_part(title: str) -> str:
    """The longest part of a `<title>` split at TITLE_SEPARATORS (the headline without the
    site's name; '' when none). Also runs in the sandbox (its source is copied)."""
    parts = [p.strip() for p in re.split(TITLE_SEPARATORS, title) if p.strip()]
    return max(parts, key=len) if parts else ""


#: the functions both sides run, appended to the sandbox code from this module's source
SHARED = (iso_date, clean_text, walk_ld, ld_value, title_part)

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


def _title_clean(text):
    return title_part(_element(text, "title"))


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
    return iso_date(_visible(text))


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
    "title_clean": "_title_clean(text)",
    "h1": '_element(text, "h1")',
    "time": "_unless_modified(text, _time(text))",
    "text_date": "_unless_modified(text, _text_date(text))",
    "html_lang": "_html_lang(text)",
    "link_rel": "_link_rel(text, {arg!r})",
}


def build_code(kind: str, arg, is_date: bool) -> str:
    """The sandbox `extract(text)` module for one signal kind and its argument."""
    helpers = (
        SANDBOX_HELPERS.replace("{months!r}", repr(MONTHS))
        .replace("{pattern!r}", repr(MONTH_PATTERN))
        .replace("{modified!r}", repr(MODIFIED_KEYS))
        .replace("{wrappers!r}", repr(LD_WRAPPERS))
        .replace("{separators!r}", repr(TITLE_SEPARATORS))
    )
    shared = "\n\n".join(inspect.getsource(f) for f in SHARED)
    call = _CALLS[kind].format(arg=tuple(arg) if isinstance(arg, (list, tuple)) else arg)
    return helpers + shared + _EXTRACT.format(call=call, date=is_date)
