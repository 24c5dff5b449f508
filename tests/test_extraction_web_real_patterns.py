"""Issue 23, real web pages: the patterns that documentation sites' generators write
(benchmarks/web_pages.py measures them on Debian's packaged pages of docs.python.org,
git-scm.com, sqlite.org, postgresql.org, ...). Each page here is a small hand-written page
that reproduces one pattern; none needs apt or the packages."""

from __future__ import annotations

from extraction.chooser import choose_values
from extraction.page_code import iso_date, labelled_date
from extraction.sandbox import Sandbox
from extraction.structure import find_labels
from extraction.webpage import (
    SIGNALS,
    page_signals,
    signal_code,
    site_affixes,
    structure_candidates,
)

#: XHTML as DocBook XSL / AsciiDoc / Publican write it: an XML declaration with an encoding
XHTML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en"><head>
<meta name="generator" content="AsciiDoc 10.2.0" /><title>git-tag(1)</title></head>
<body><div id="header"><h1>git-tag(1) Manual Page</h1></div>
<p>Create, list, delete or verify a tag object.</p>
<div id="footer"><div id="footer-text">Last updated 2024-05-31 00:35:55 UTC</div></div>
</body></html>"""


def sphinx(headline: str, anchor: str, body: str = "") -> str:
    """A Sphinx page: `<title>` = headline + the project's suffix, a headerlink `¶` in the
    h1, the build's "Last updated on" footer."""
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8" />
<title>{headline} &#8212; Widgets 2.4 documentation</title></head><body>
<section id="{anchor}"><h1>{headline}<a class="headerlink" href="#{anchor}"
title="Permalink to this heading">¶</a></h1><p>{body}</p></section>
<div class="footer">&copy; Copyright 2001-2024. Last updated on October 07, 2024.
Created using Sphinx 5.3.0.</div></body></html>"""


SPHINX = [
    sphinx(
        "cgi — Common Gateway Interface support",
        "cgi",
        "Widgets 1.0 was released on June 27, 2009.",
    ),  # fmt: skip
    sphinx("Logging", "logging"),
    sphinx("What’s New In Widgets 2.4", "whatsnew"),
]

#: sqlite.org's pattern: several numbered <h1> sections, the headline only in <title> (and a
#: styled div), dates in the body before the "This page last modified on" footer
SECTIONS = """<html><head><title>The Gadget Table Mechanism</title></head><body>
<div class=fancy_title>The Gadget Table Mechanism</div>
<h1 id="intro"><span>1. </span>Introduction</h1><p>First shipped on 2015-10-14.</p>
<h1 id="methods"><span>2. </span>Methods</h1><p>Changed on 2018-06-04.</p>
<p>This page last modified on 2022-12-05 12:38:46 UTC</p></body></html>"""

#: man2html: the man page's date as `Updated: 2022 September 19`, then the conversion time
MAN = """<HTML><HEAD><TITLE>Man page of GADGET</TITLE></HEAD><BODY><H1>GADGET</H1>
Section: User Commands (1)<BR>Updated: 2022 September 19<BR><A HREF="#index">Index</A>
<P>NAME gadget - make gadgets</P><HR>This document was created by man2html.<BR>
Time: 12:06:21 GMT, January 02, 2023</BODY></HTML>"""


def test_xhtml_with_an_encoding_declaration_is_read() -> None:
    """lxml refuses decoded text that opens with `<?xml ... encoding=...?>`: every DocBook,
    AsciiDoc and Publican page had no signals at all (git-scm.com, postgresql.org pages)."""
    sig = page_signals(XHTML)
    assert sig["h1"] == "git-tag(1) Manual Page"
    assert sig["title_tag"] == "git-tag(1)"
    assert sig["labelled_date"] == "2024-05-31"


def test_a_headings_permalink_mark_is_not_part_of_it() -> None:
    assert page_signals(SPHINX[1])["h1"] == "Logging"


def test_the_sites_shared_title_suffix_is_stripped() -> None:
    """`<headline> — Widgets 2.4 documentation`: the longest part is the site's name (or a
    piece of a headline that holds a dash); the suffix that several pages share is."""
    assert site_affixes(SPHINX) == ("widgets 2.4 documentation",)
    affixes = site_affixes(SPHINX)
    cleaned = [page_signals(r, affixes)["title_clean"] for r in SPHINX]
    assert cleaned == ["cgi — Common Gateway Interface support", "Logging",
                       "What’s New In Widgets 2.4"]  # fmt: skip
    assert page_signals(SPHINX[1])["title_clean"] == "Widgets 2.4 documentation"  # alone
    titles, _ = choose_values(SPHINX, "title", [""] * 3)
    assert titles == cleaned


def test_a_labelled_date_beats_the_first_date_in_the_text() -> None:
    """A footer's "This page last modified on ..." / "Last updated on ..." is the page's own
    date; the first date in the text is one the text talks about ("released on ...")."""
    dates, _ = choose_values([SECTIONS, SPHINX[0], XHTML], "publish_date", [""] * 3)
    assert dates == ["2022-12-05", "2024-10-07", "2024-05-31"]
    assert "text_date" not in page_signals(SECTIONS)
    assert labelled_date("Posted on 5 March 2024. Updated: 9 March 2024") == "2024-03-05"
    assert labelled_date("published by the Free Software Foundation, 1991") == ""


def test_man_page_dates_and_their_label() -> None:
    assert iso_date("Updated: 2022 September 19") == "2022-09-19"
    dates, _ = choose_values([MAN], "publish_date", [""])
    assert dates == ["2022-09-19"]  # not the conversion time at the end


def test_several_different_h1s_are_no_headline() -> None:
    sig = page_signals(SECTIONS)
    assert "h1" not in sig
    titles, _ = choose_values([SECTIONS], "title", [""])
    assert titles == ["The Gadget Table Mechanism"]


def test_one_title_is_one_vote_against_the_h1() -> None:
    """`<title>git-tag(1)</title>` read twice (as written and without a site part that it
    does not have) outvoted the page's h1; the tie now goes to the h1 (the earlier signal)
    when no LLM is there to choose."""
    titles, _ = choose_values([XHTML, MAN], "title", ["", ""])
    assert titles == ["git-tag(1) Manual Page", "GADGET"]


def test_sandbox_functions_read_these_pages_as_lxml_does() -> None:
    """The structure functions (source copied into the sandbox, standard library only) give
    on these pages what this process's lxml reading gives, the site suffix included."""
    raws = [XHTML, *SPHINX, SECTIONS, MAN]
    affixes = site_affixes(raws)
    codes = {sid: signal_code(sid, affixes) for sid, *_ in SIGNALS}
    out, failed = Sandbox(n_workers=1).run(codes, raws)
    assert not failed
    for i, raw in enumerate(raws):
        found = page_signals(raw, affixes)
        for sid in codes:
            assert (out[sid][i] or "") == found.get(sid, ""), (i, sid)
    assert out["title_clean"][1] == "cgi — Common Gateway Interface support"


def test_one_candidate_covers_pages_that_lack_a_signal() -> None:
    """Four sample pages of a run over 60 (git, Sphinx, Publican): the <title> reads wrong on
    three, the h1 is missing on one, so neither alone was kept and pages without an h1 got no
    title. `structure_title_vote` (what the page's signals agree on) is right on all."""
    publican = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>13.8. Emulating Windows: Wine</title>
</head><body><h2 class="title">13.8. Emulating Windows: Wine</h2></body></html>"""
    raws = [XHTML, MAN, SPHINX[1], publican]
    codes = dict(structure_candidates("title", raws))
    assert "structure_title_vote" in codes
    out, failed = Sandbox(n_workers=1).run({"vote": codes["structure_title_vote"]}, raws)
    assert not failed
    want = ["git-tag(1) Manual Page", "GADGET", "Logging", "13.8. Emulating Windows: Wine"]
    assert [v or "" for v in out["vote"]] == want
    dates = dict(structure_candidates("publish_date", [SECTIONS]))["structure_published_vote"]
    out, _ = Sandbox(n_workers=1).run({"d": dates}, [SECTIONS, MAN])
    assert out["d"] == ["2022-12-05", "2022-09-19"]


def test_an_attribute_inside_a_tag_is_no_label_line() -> None:
    """Sphinx writes `<a href="..."\n   title="previous chapter">8. Intro</a>`: taken as a
    `title=` line, its text overruled every page signal as the sample's title."""
    raw = '<a href="l10n.html"\n   title="previous chapter">8. Intro</a>\n<p>City: Hull</p>'
    assert find_labels(raw) == [("City", "line")]
