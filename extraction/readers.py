"""Readers of binary document formats: PDF (text layer, scanned pages through OCR), DOCX
and XLSX, each through its maintained library (pypdf, pytesseract + Tesseract, python-docx,
openpyxl).

A reader returns the document's text and the parts it could not read as (part, reason):
a scanned PDF page when no OCR engine is installed, an image-only page without any image.
`extraction.documents.load_folder` lists those parts in `skipped`, so nothing is dropped
without a word.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: how the cells of a table row are joined in the text
CELL_SEP = " | "
_GAP = re.compile(r"[ \t]{3,}")  # a column gap in a PDF page laid out as text
OCR_HINT = (
    "install OCR to read it: pip install pytesseract and apt-get install tesseract-ocr "
    "(make setup does both where it can)"
)


def row_line(cells: list[str]) -> str:
    """One table row as a line: `Label: value` for a two-cell row whose first cell is a short
    label (so it reads like the key-value lines `extraction.structure` finds labels in),
    else the cells joined by ` | `."""
    cells = [c.strip() for c in cells]
    if len(cells) == 2 and all(cells) and len(cells[0]) <= 30 and ":" not in cells[0]:
        if re.match(r"^[A-Za-z][\w .\-/()]*$", cells[0]):
            return f"{cells[0]}: {cells[1]}"
    return CELL_SEP.join(cells)


def _page_text(page) -> str:
    """A page's text layer laid out as on the page, a table's columns kept apart: rows of
    cells separated by wide gaps become table rows (`row_line`)."""
    try:
        laid = page.extract_text(extraction_mode="layout") or ""
    except Exception:  # noqa: BLE001 - layout mode fails on some fonts: the plain text then
        return (page.extract_text() or "").strip()
    lines = [ln.strip() for ln in laid.splitlines()]
    return "\n".join(row_line(_GAP.split(ln)) if _GAP.search(ln) else ln for ln in lines if ln)


@functools.cache
def _tesseract_version(path: str) -> str:
    import pytesseract

    return str(pytesseract.get_tesseract_version())


def ocr_problem() -> str | None:
    """Why scanned pages cannot be read here (None when Tesseract and pytesseract work)."""
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return f"no OCR: the pytesseract package is missing; {OCR_HINT}"
    exe = shutil.which("tesseract")
    if exe is None:
        return f"no OCR: the tesseract program is not on PATH; {OCR_HINT}"
    try:
        _tesseract_version(exe)
    except Exception as e:  # noqa: BLE001 - a broken install is reported like a missing one
        return f"no OCR: tesseract at {exe} does not run ({e}); {OCR_HINT}"
    return None


def _ocr_images(images) -> str:
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = shutil.which("tesseract") or "tesseract"
    return "\n".join(pytesseract.image_to_string(img).strip() for img in images).strip()


def read_pdf(path: Path, ocr: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """The text layer of every page; a page without one is read by OCR from its images when
    Tesseract is installed, else listed as skipped with the reason. Pages are separated by a
    form feed, as `pdftotext` does."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    pages, skipped = [], []
    problem = ocr_problem() if ocr else "OCR turned off"
    for n, page in enumerate(reader.pages, start=1):
        text = _page_text(page)
        if not text:
            images = [im.image for im in page.images if im.image is not None]
            if not images:
                skipped.append((f"page {n}", "no text layer and no image on the page"))
            elif problem:
                skipped.append((f"page {n}", f"scanned page (no text layer): {problem}"))
            else:
                text = _ocr_images(images)
                if not text:
                    skipped.append((f"page {n}", "scanned page: OCR found no text"))
                else:
                    log.info("%s page %d read by OCR (%d characters)", path.name, n, len(text))
        pages.append(text)
    return "\n\f\n".join(pages).strip(), skipped


def read_docx(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """Paragraphs and tables in document order; a table row becomes a line (`row_line`)."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    doc = docx.Document(str(path))
    lines = []
    for block in doc.iter_inner_content():
        if isinstance(block, Paragraph):
            lines.append(block.text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = list(dict.fromkeys(c.text.strip() for c in row.cells))  # merged cells
                lines.append(row_line(cells))
            lines.append("")
    return "\n".join(lines).strip(), []


def read_xlsx(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """Every sheet as `## Sheet: name` and its rows as lines (`row_line`; computed values,
    not formulas); empty rows and trailing empty cells are left out."""
    import openpyxl

    wb = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    out = []
    try:
        for ws in wb.worksheets:
            out.append(f"## Sheet: {ws.title}")
            for row in ws.iter_rows(values_only=True):
                cells = ["" if v is None else str(v) for v in row]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    out.append(row_line(cells))
            out.append("")
    finally:
        wb.close()
    return "\n".join(out).strip(), []


#: format -> reader, for the formats that are not text files
READERS: dict[str, Callable[[Path], tuple[str, list[tuple[str, str]]]]] = {
    "pdf": read_pdf,
    "docx": read_docx,
    "xlsx": read_xlsx,
}
