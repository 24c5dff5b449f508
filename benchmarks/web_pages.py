"""Real web pages of several sites for the EVAPORATE benchmark (issue 23): the HTML pages
that Debian's documentation packages ship (docs.python.org, git-scm.com, httpd.apache.org,
postgresql.org, sqlite.org, the Debian handbook and references, gnu.org manuals), made by
different generators (Sphinx, AsciiDoc, the httpd XSLT, DocBook XSL, sqlite's TCL, Publican,
makeinfo, man2html).

    python benchmarks/web_pages.py                 # fetch, select, run, score (default LLM)
    python benchmarks/web_pages.py --propose       # print the gold proposer's reading per page

`apt-get download` fetches the packages into --cache (no root install; `dpkg-deb -x`
unpacks them), a fixed seeded selection of pages per site is copied into one folder, and
`Evaporate().run(folder, attributes=["title", "publish_date"], mode="code+")` runs over it.
The gold values (benchmarks/data/web_pages_gold.json) were read off each page by hand: the
`--propose` reading below (the standard library's `html.parser`, no extractor code) only
pointed at the candidate text, and every entry was checked against the page (docs/extraction.md,
"Real web pages").
"""

from __future__ import annotations

import argparse
import datetime as dt
import html.parser
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402

GOLD = Path(__file__).parent / "data" / "web_pages_gold.json"
ATTRIBUTES = ["title", "publish_date"]
#: file names that are no article: indexes, search pages, tables of contents
SKIP = re.compile(
    r"(?i)(^|/)(index|genindex|search|py-modindex|contents|toc|sitemap|bookindex|ix\d+|"
    r"bi\d+|bk\d+|glossary|copyright|license|about|bugs|download)(\.[a-z]{2})?\.html$"
)


@dataclass(frozen=True)
class Site:
    """One site: the Debian package that ships its pages, where, and which files count."""

    name: str
    generator: str
    package: str
    root: str
    pattern: str
    pages: int


SITES = (
    Site("docs.python.org", "Sphinx", "python3.11-doc", "usr/share/doc/python3.11/html",
         r"^(library|tutorial|howto|reference|using|faq|extending|whatsnew)/[^/]+\.html$", 7),
    Site("git-scm.com", "AsciiDoc", "git-doc", "usr/share/doc/git-doc", r"^[^/]+\.html$", 7),
    Site("httpd.apache.org", "httpd XSLT", "apache2-doc", "usr/share/doc/apache2-doc/manual",
         r"^en/([^/]+/)?[^/]+\.html$", 7),
    Site("postgresql.org", "DocBook XSL", "postgresql-doc-15",
         "usr/share/doc/postgresql-doc-15/html", r"^[^/]+\.html$", 7),
    Site("sqlite.org", "TCL (hand-written)", "sqlite3-doc", "usr/share/doc/sqlite3",
         r"^[^/]+\.html$", 7),
    Site("debian-handbook.info", "Publican", "debian-handbook",
         "usr/share/doc/debian-handbook/html/en-US", r"^[^/]+\.html$", 7),
    Site("Debian Reference", "DocBook XSL", "debian-reference-en", "usr/share/debian-reference",
         r"^[^/]+\.en\.html$", 7),
    Site("Debian Developer's Reference", "Sphinx", "developers-reference",
         "usr/share/developers-reference", r"^[^/]+\.html$", 7),
    Site("gnu.org standards", "makeinfo", "gnu-standards", "usr/share/doc/gnu-standards",
         r"^[^/]+\.html$", 2),
    Site("gnu.org bash", "makeinfo, man2html", "bash-doc", "usr/share/doc/bash",
         r"^[^/]+\.html$", 2),
)  # fmt: skip


def fetch(site: Site, cache: Path) -> tuple[str, Path]:
    """(version, unpacked root) of the site's package: `apt-get download` into `cache`
    once, then `dpkg-deb -x` (neither needs root)."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{site.package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", site.package], cwd=debs, check=True)
        found = sorted(debs.glob(f"{site.package}_*.deb"))
    deb = found[-1]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = cache / "unpacked" / deb.stem
    if not out.is_dir():
        out.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return version, out / site.root


def select(site: Site, root: Path, seed: int) -> list[str]:
    """A fixed seeded choice of the site's article pages (paths under `root`): plain files
    (no links), not indexes or redirects, with some text."""
    paths = []
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or not re.search(site.pattern, rel) or SKIP.search(rel):
            continue
        raw = p.read_text(encoding="utf-8", errors="replace")
        if re.search(r'(?i)http-equiv="?refresh', raw) or len(raw) < 3000:
            continue
        paths.append(rel)
    rng = random.Random(f"{seed}:{site.package}")
    return sorted(rng.sample(paths, min(site.pages, len(paths))))


def page_file(site: Site, rel: str) -> str:
    """The page's file name in the benchmark folder."""
    return f"{site.package}__{rel.replace('/', '__')}"


# ---------------------------------------------------------------- gold proposer (not gold)
class _Reader(html.parser.HTMLParser):
    """The text of `<title>`, each `<h1>` and elements whose class says title, plus the
    visible text (the proposer's view; gold is checked by hand)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.title, self.h1, self.classed, self.text = "", [], [], []
        self._open: list[list] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "style"):
            self.stack.append(tag)
        if tag == "h1" or "title" in (a.get("class") or "").split("_") + [a.get("class")]:
            self._open.append([tag, []])

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        if self._open and self._open[-1][0] == tag:
            name, parts = self._open.pop()
            (self.h1 if name == "h1" else self.classed).append(" ".join("".join(parts).split()))

    def handle_data(self, data):
        if self.stack:
            return
        if self.lasttag == "title" and not self.title:
            self.title = " ".join(data.split())
        for _, parts in self._open:
            parts.append(data)
        self.text.append(data)


def propose(raw: str) -> dict:
    """What a reader should check: title, h1s, title-classed elements and the sentences
    around 'updated'/'modified'/'published' in the visible text."""
    r = _Reader()
    r.feed(raw)
    text = " ".join(" ".join(r.text).split())
    dates = [
        text[max(0, m.start() - 30) : m.end() + 40]
        for m in re.finditer(r"(?i)last[ -]?(updated|modified|changed?)|updated:|published", text)
    ]
    return {"title": r.title, "h1": r.h1[:3], "classed": r.classed[:3], "dates": dates[:4]}


# ---------------------------------------------------------------- scoring
def norm_title(v: object) -> str:
    return " ".join(str(v or "").split()).casefold()


def as_date(v: object) -> dt.date | None:
    """A value read as a calendar date (None when it is none)."""
    from dateutil import parser as dateparser

    s = str(v or "").strip()
    if not s or s.lower() in ("nan", "none", "null"):
        return None
    try:
        return dateparser.parse(s, fuzzy=False).date()
    except (ValueError, OverflowError):
        return None


def score(gold: list[dict], table: dict[str, dict]) -> tuple[list[dict], dict]:
    """Per-site and overall rows: titles right of all, dates right of those pages that state
    one, and dates given where the page states none."""
    rows: dict[str, dict] = {}
    misses = []
    for g in gold:
        got = table.get(g["file"], {})
        r = rows.setdefault(g["site"], dict.fromkeys(
            ("pages", "titles_right", "dated", "dates_right", "date_where_none"), 0))  # fmt: skip
        r["pages"] += 1
        ok_t = norm_title(got.get("title")) == norm_title(g["title"])
        r["titles_right"] += ok_t
        gd, pd_ = (
            (dt.date.fromisoformat(g["date"]) if g["date"] else None),
            as_date(got.get("publish_date")),
        )
        if gd is not None:
            r["dated"] += 1
            r["dates_right"] += pd_ == gd
        elif pd_ is not None:
            r["date_where_none"] += 1
        if not ok_t or (gd is not None and pd_ != gd):
            misses.append({"file": g["file"], "gold": [g["title"], g["date"]],
                           "got": [got.get("title"), got.get("publish_date")]})  # fmt: skip
    out = [{"site": s, **r} for s, r in rows.items()]
    tot = {k: sum(r[k] for r in out) for k in out[0] if k != "site"}
    out.append({"site": "all", **tot})
    summary = {
        "title_accuracy": tot["titles_right"] / tot["pages"],
        "date_accuracy": tot["dates_right"] / max(tot["dated"], 1),
        "misses": misses,
    }
    return out, summary


def build_folder(cache: Path, folder: Path, seed: int) -> list[dict]:
    """Fetch every site, copy the gold file's pages into `folder` (the selection is checked
    against the gold file: a changed package or seed is reported, not silently scored)."""
    gold = json.loads(GOLD.read_text())["pages"]
    folder.mkdir(parents=True, exist_ok=True)
    roots = {}
    for site in SITES:
        version, root = fetch(site, cache)
        roots[site.package] = (version, root)
        chosen = select(site, root, seed)
        listed = [g["path"] for g in gold if g["package"] == site.package]
        if chosen != listed:
            raise SystemExit(
                f"{site.package} {version}: the seeded selection {chosen} differs from the "
                f"gold file's {listed}; re-check the gold by hand (--propose) for this version"
            )
    for g in gold:
        version, root = roots[g["package"]]
        if version != g["version"]:
            raise SystemExit(f"{g['package']}: have {version}, gold is for {g['version']}")
        shutil.copy(root / g["path"], folder / g["file"])
    return gold


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "loom" / "web-pages"))
    ap.add_argument("--llm", default=None, help="LLM spec (default: embedded SmolLM2-135M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--propose", action="store_true", help="print the proposer's reading")
    ap.add_argument("--sample-size", type=int, default=None)
    ap.add_argument("--num-candidates", type=int, default=None)
    ap.add_argument("--keep", default=None, help="keep the folder and workspace here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    cache = Path(args.cache).expanduser()
    if args.propose:
        for site in SITES:
            version, root = fetch(site, cache)
            for rel in select(site, root, args.seed):
                raw = (root / rel).read_text(encoding="utf-8", errors="replace")
                print(json.dumps({"site": site.name, "package": site.package,
                                  "version": version, "path": rel,
                                  "file": page_file(site, rel), **propose(raw)}))  # fmt: skip
        return
    from extraction import Evaporate
    from toolkit.llm import get_llm

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loom-web-"))
    gold = build_folder(cache, work / "pages", args.seed)
    llm = get_llm(args.llm)
    t0 = time.perf_counter()
    res = Evaporate(llm=llm, workspace=work / "ws", progress=not args.quiet).run(
        work / "pages", attributes=ATTRIBUTES, mode="code+",
        sample_size=args.sample_size, num_candidates=args.num_candidates,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    t = res.table.merge(res.documents[["doc_id", "path"]], on="doc_id")
    table = {Path(r["path"]).name: r for r in t.to_dict("records")}
    rows, summary = score(gold, table)
    print_table(rows)
    f = res.functions
    kept = f[f["kept"]].groupby(["attribute", "source"]).size()
    out = {
        "llm": llm.name,
        "cpu_count": os.cpu_count(),
        "command": "python benchmarks/web_pages.py" + " ".join([""] + sys.argv[1:]),
        "packages": {s.package: fetch(s, cache)[0] for s in SITES},
        "documents": len(t),
        "wall_s": round(wall, 1),
        "tokens": int(res.tokens["prompt_tokens"].sum() + res.tokens["completion_tokens"].sum()),
        "kept_by_source": {f"{a}/{s}": int(n) for (a, s), n in kept.items()},
        "kept_functions": f[f["kept"]]["function_id"].tolist(),
        "sample_values": res.report.get("sample_values"),
        "per_site": rows,
        **summary,
    }
    print({k: v for k, v in out.items() if k not in ("misses", "per_site")})
    print(f"wrote {write_results('extraction-web', 'cpu', out)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
