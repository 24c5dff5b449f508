"""The structure web pages carry: `<title>`, `<h1>`, `<meta property="og:*">` and
`<meta name=...>`, `<time datetime>`, JSON-LD (schema.org `headline`, `datePublished`,
`author.name`), microdata (`itemprop`) and the date a page's text labels as its own ("Last
updated on ...", "Posted on ...").

Each such signal is one *role* (title, published date, author, ...) and becomes one candidate
function (source "structure"): toolkit-written `extract(text)` code built from
`SANDBOX_HELPERS` (standard library only: the sandbox admits nothing else) that runs in the
sandbox and is scored like every other candidate. In this process the same signals are read
with lxml's HTML parser (`page_signals`), which is what decides which candidates a sample
needs and what the sample's value is: where the signals of a page agree that value is used,
where they disagree the majority wins, and where they tie the small LLM is asked to choose
("which of these is the title? answer with the letter", `choose_values`), a question a 135M
model answers far better than a free-form one. Dates are returned as ISO `YYYY-MM-DD`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from extraction.page_code import (
    LD_WRAPPERS,
    MODIFIED_KEYS,
    TITLE_SEPARATORS,
    build_code,
    clean_text,
    heading_text,
    iso_date,
    labelled_date,
    ld_value,
    title_part,
    vote,
    walk_ld,
)

log = logging.getLogger(__name__)

#: role -> words of an attribute name that ask for it (first match wins, in this order)
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "modified": ("modified", "updated", "update"),
    "published": ("published", "publish", "pubdate", "publication", "posted", "issued"),
    "title": ("title", "headline"),
    "author": ("author", "byline", "writer", "authors"),
    "description": ("description", "summary", "abstract", "lede", "teaser"),
    "site": ("site", "publisher", "outlet", "website", "newspaper"),
    "keywords": ("keywords", "tags"),
    "language": ("language", "lang", "locale"),
    "url": ("url", "link", "canonical", "permalink"),
    "image": ("image", "thumbnail", "picture"),
}
DATE_ROLES = ("published", "modified")
#: attribute names that mean a page's publication date without saying "published" (a
#: `date_of_birth` is no page's date)
DATE_NAMES = frozenset({"date", "time", "datetime", "timestamp", "article_date", "post_date"})

#: (signal id, role, kind, argument), in priority order within a role (a tie between
#: signals the LLM cannot break falls to the earliest)
SIGNALS: tuple[tuple[str, str, str, Any], ...] = (
    ("og_title", "title", "meta", ("og:title",)),
    ("jsonld_headline", "title", "jsonld", ("headline", "")),
    ("microdata_headline", "title", "microdata", "headline"),
    ("twitter_title", "title", "meta", ("twitter:title",)),
    ("meta_title", "title", "meta", ("title", "dc.title", "citation_title", "parsely-title")),
    ("h1", "title", "h1", None),
    ("title_clean", "title", "title_clean", None),
    ("title_tag", "title", "title", None),
    (
        "meta_published",
        "published",
        "meta",
        (
            "article:published_time",
            "og:published_time",
            "datepublished",
            "date",
            "pubdate",
            "publishdate",
            "publish-date",
            "publish_date",
            "dc.date",
            "dc.date.issued",
            "dcterms.date",
            "dcterms.created",
            "citation_publication_date",
            "citation_date",
            "sailthru.date",
            "parsely-pub-date",
            "article.published",
        ),
    ),  # fmt: skip
    ("jsonld_date", "published", "jsonld", ("datePublished", "")),
    ("microdata_date", "published", "microdata", "datePublished"),
    ("labelled_date", "published", "labelled_date", None),
    ("time_datetime", "published", "time", None),
    ("text_date", "published", "text_date", None),
    (
        "meta_modified",
        "modified",
        "meta",
        MODIFIED_KEYS,
    ),
    ("jsonld_modified", "modified", "jsonld", ("dateModified", "")),
    ("microdata_modified", "modified", "microdata", "dateModified"),
    (
        "meta_author",
        "author",
        "meta",
        ("author", "article:author", "dc.creator", "citation_author", "parsely-author", "byl"),
    ),  # fmt: skip
    ("jsonld_author", "author", "jsonld", ("author", "name")),
    ("microdata_author", "author", "microdata", "author"),
    ("meta_description", "description", "meta", ("description", "dc.description")),
    ("og_description", "description", "meta", ("og:description",)),
    ("twitter_description", "description", "meta", ("twitter:description",)),
    ("jsonld_description", "description", "jsonld", ("description", "")),
    ("og_site_name", "site", "meta", ("og:site_name", "application-name")),
    ("jsonld_publisher", "site", "jsonld", ("publisher", "name")),
    ("meta_keywords", "keywords", "meta", ("keywords", "news_keywords")),
    ("html_lang", "language", "html_lang", None),
    ("canonical_url", "url", "link_rel", "canonical"),
    ("og_url", "url", "meta", ("og:url",)),
    ("og_image", "image", "meta", ("og:image",)),
)
#: signals that only usually carry their role: they vote only where a page has no explicit one
GENERIC = frozenset(
    {"h1", "title_clean", "title_tag", "labelled_date", "time_datetime", "text_date"}
)
#: per role with several signals, one more: what its signals agree on (`page_code.vote`), the
#: sample chooser's rule without the LLM, so one candidate covers pages that lack a signal
VOTES = tuple(
    (f"{role}_vote", role, "vote", None)
    for role in ROLE_WORDS
    if sum(1 for s in SIGNALS if s[1] == role) > 1
)
SIGNALS = SIGNALS + VOTES
_BY_ID = {s[0]: s for s in SIGNALS}
MODIFIED_SIGNALS = ("meta_modified", "jsonld_modified", "microdata_modified")


def role_of(attribute: str) -> str | None:
    """The web-page role an attribute name asks for (None: no page signal carries it)."""
    key = str(attribute).lower()
    if key in DATE_NAMES:
        return "published"
    words = set(re.split(r"[^a-z0-9]+", key))
    for role, names in ROLE_WORDS.items():
        if words & set(names):
            return role
    return None


def signal_code(signal_id: str, affixes: tuple[str, ...] = ()) -> str:
    """The sandbox `extract(text)` function of one signal (see SIGNALS); `affixes` are the
    site names `title_clean` strips (`site_affixes`)."""
    if signal_id not in _BY_ID:
        raise ValueError(f"unknown page signal {signal_id!r}: use one of {', '.join(_BY_ID)}")
    _, role, kind, arg = _BY_ID[signal_id]
    if kind == "title_clean":
        arg = tuple(affixes)
    if kind == "vote":
        arg = tuple(
            (k, tuple(affixes) if k == "title_clean" else a, sid in GENERIC)
            for sid, r, k, a in SIGNALS
            if r == role and k != "vote"
        )
    return build_code(kind, arg, role in DATE_ROLES)


def _parsed(raw: str):
    """The lxml tree of a page (None for text that is not HTML or does not parse)."""
    if "<" not in raw or not re.search(r"(?i)<(html|head|meta|title|h1|script|time)\b", raw):
        return None
    import lxml.html
    from lxml import etree

    # lxml refuses text that opens with an XML encoding declaration (XHTML pages: DocBook,
    # AsciiDoc, Publican): the text is already decoded, so the declaration goes
    raw = re.sub(r"^\s*<\?xml[^>]*\?>", "", raw)
    try:
        return lxml.html.document_fromstring(raw)
    except (etree.ParserError, ValueError) as e:
        log.debug("not parsed as HTML: %s", e)
        return None


def site_affixes(raws: list[str]) -> tuple[str, ...]:
    """Site names in `<title>`s: a part split off at TITLE_SEPARATORS that opens or closes
    the titles of two or more different pages (`... — Python 3.11 documentation`), lower
    case. One page alone has none (its longest part is taken instead)."""
    seen: dict[str, set[str]] = {}
    for raw in raws:
        root = _parsed(raw)
        els = root.xpath("//title") if root is not None else []
        title = _text(els[0]) if els else ""
        parts = [p.strip() for p in re.split(TITLE_SEPARATORS, title) if p.strip()]
        if len(parts) < 2:
            continue
        for p in {parts[0].lower(), parts[-1].lower()}:
            seen.setdefault(p, set()).add(title)
    return tuple(sorted(p for p, titles in seen.items() if len(titles) >= 2))


# ---------------------------------------------------------------- in-process (lxml) reading
def _text(el) -> str:
    return " ".join(el.text_content().split())


def page_signals(raw: str, affixes: tuple[str, ...] = ()) -> dict[str, str]:
    """signal id -> the value a page declares for it, read with lxml (empty ones left out;
    dates as ISO `YYYY-MM-DD`; `affixes`: site names `title_clean` strips). Text that is not
    HTML has none."""
    root = _parsed(raw)
    if root is None:
        return {}
    metas: list[tuple[str, str]] = []
    for m in root.iter("meta"):
        key = (m.get("property") or m.get("name") or m.get("itemprop") or "").strip().lower()
        val = " ".join((m.get("content") or "").split())
        if key and val:
            metas.append((key, val))
    ld: list[dict] = []
    for s in root.xpath("//script[contains(@type, 'ld+json')]"):
        try:
            block = re.sub(LD_WRAPPERS, "", s.text or "")
            ld += walk_ld(json.loads(block.strip().rstrip(";")))
        except ValueError:
            continue
    out: dict[str, str] = {}
    visible = ""
    for sid, role, kind, arg in SIGNALS:
        v = ""
        if kind == "meta":
            v = next((val for key, val in metas if key in arg), "")
        elif kind == "jsonld":
            v = clean_text(ld_value(ld, arg[0], arg[1]))  # as the sandbox code reads it
        elif kind == "microdata":
            els = root.xpath(f"//*[@itemprop='{arg}']")
            if els:
                el = els[0]
                v = (el.get("content") or el.get("datetime") or "").strip()
                if not v and el.get("itemscope") is not None:
                    names = el.xpath(".//*[@itemprop='name']")
                    v = (names[0].get("content") or _text(names[0])) if names else ""
                v = v or _text(el)
        elif kind in ("title", "title_clean"):
            els = root.xpath("//title")
            v = _text(els[0]) if els else ""
            if kind == "title_clean":
                v = title_part(v, tuple(affixes))
        elif kind == "h1":  # several different <h1>s: sections (or a logo), no headline
            h1s = {heading_text(_text(e)) for e in root.xpath("//h1")} - {""}
            v = h1s.pop() if len(h1s) == 1 else ""
        elif kind == "time":
            els = root.xpath("//time[@datetime]")
            v = next((e.get("datetime").strip() for e in els if e.get("datetime").strip()), "")
        elif kind == "text_date":
            visible = visible or _visible_text(root)
            v = "" if labelled_date(visible) else visible  # a labelled date comes first
        elif kind == "labelled_date":
            visible = visible or _visible_text(root)
            v = labelled_date(visible)
        elif kind == "html_lang":
            v = (root.get("lang") or "").strip()
        elif kind == "link_rel":
            els = root.xpath(f"//link[translate(@rel, 'CANOIL', 'canoil')='{arg}']/@href")
            v = str(els[0]).strip() if els else ""
        if role in DATE_ROLES:
            v = iso_date(v)
        if v:
            out[sid] = v
    modified = next((out[s] for s in MODIFIED_SIGNALS if s in out), "")
    for sid in ("time_datetime", "text_date"):  # a page's "updated" date is not its date
        if modified and out.get(sid) == modified:
            del out[sid]
    for sid, role, _, _ in VOTES:
        mine = [(s, out.get(s, "")) for s, r, k, _ in SIGNALS if r == role and k != "vote"]
        v = vote([v for _, v in mine], [s in GENERIC for s, _ in mine])
        if v:
            out[sid] = v
    return out


def _visible_text(root) -> str:
    import copy

    body = copy.deepcopy(root)
    for el in body.xpath("//script|//style|//noscript|//template"):
        el.drop_tree()
    return _text(body)


def structure_candidates(attribute: str, raws: list[str]) -> list[tuple[str, str]]:
    """(function_id, code) of one structure function per signal of the attribute's role that
    some sample page declares (none for documents that are not web pages)."""
    role = role_of(attribute)
    if role is None:
        return []
    affixes = site_affixes(raws) if role == "title" else ()
    seen: set[str] = set()
    for raw in raws:
        seen |= set(page_signals(raw, affixes))
    return [(f"structure_{sid}", signal_code(sid, affixes)) for sid, r, _, _ in SIGNALS
            if r == role and sid in seen]  # fmt: skip
