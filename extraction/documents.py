"""Load a folder of semi-structured documents (HTML, text, Markdown, JSON, PDF, DOCX, XLSX)
into a table.

A file is read by its extension or, when the extension is unknown or missing (README,
METADATA, notes.log), by its content: UTF-8 text without binary bytes is read.

`documents.text` is what extraction functions read (HTML keeps its markup, JSON is the file,
PDF is its text layer or the OCR of a scanned page, DOCX its paragraphs and table rows, XLSX
its sheets' rows: `extraction.readers`); `readable(text, fmt)` is the cleaned text shown to
the LLM. A part of a file that could not be read (a scanned page without OCR) is listed in
`skipped` as `path#page=N` with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from extraction.readers import READERS
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress

FORMATS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "text",
    ".json": "json",
    ".pdf": "pdf",
    ".docx": "docx",
    ".xlsx": "xlsx",
    ".csv": "text",
    ".tsv": "text",
    ".xml": "html",
}
MAX_BYTES = 5_000_000


def _decode(data: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-8 (with BOM), else cp1252, else latin-1 (never fails)."""
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _looks_binary(data: bytes) -> bool:
    head = data[:4096]
    if b"\x00" in head:
        return True
    ctrl = sum(1 for b in head if b < 9 or 13 < b < 32)
    return len(head) > 0 and ctrl / len(head) > 0.1


def sniff_format(data: bytes) -> str | None:
    """The format of a file with an unknown (or no) extension, from its content: pdf, html,
    json or text when it is UTF-8 text without binary bytes; None otherwise."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if not data or _looks_binary(data):
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    head = text.lstrip()[:512].lower()
    if head.startswith(("<!doctype html", "<html", "<?xml")) or re.match(
        r"<(head|body|div|table|p)\b", head
    ):
        return "html"
    if head[:1] in ("{", "["):
        try:
            json.loads(text)
            return "json"
        except json.JSONDecodeError:
            pass
    return "text"


def sniff_file(path: Path, max_bytes: int = MAX_BYTES) -> str | None:
    """`sniff_format` of a file whose extension says nothing; an empty or too large file is
    "text" (the size checks then report it), an unreadable one None."""
    try:
        if not 0 < path.stat().st_size <= max_bytes:
            return "text"
        return sniff_format(path.read_bytes())
    except OSError:
        return None


def load_folder(
    folder: str | Path,
    max_bytes: int = MAX_BYTES,
    progress: bool = False,
    show_progress: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All readable documents under `folder` (recursively) and the skipped files with reasons.

    Returns (documents: doc_id, path, format, encoding, text; skipped: path, reason).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.exists():
        raise LoomError(f"document folder {folder} does not exist")
    if not folder.is_dir():
        raise LoomError(f"{folder} is not a folder: give a folder of documents")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows, skipped = [], []
    progress = deprecated_progress(progress, "show_progress", show_progress, "load_folder")
    for path in tqdm(files, desc="load documents", disable=not progress):
        rel = str(path.relative_to(folder))
        fmt = FORMATS.get(path.suffix.lower()) or sniff_file(path, max_bytes)
        if fmt is None:
            kind = path.suffix or "(no extension)"
            skipped.append((rel, f"unsupported file type {kind}: not UTF-8 text"))
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            skipped.append((rel, "vanished while the folder was read"))
            continue
        if size > max_bytes:
            skipped.append((rel, f"too large ({size} bytes > max_bytes={max_bytes})"))
            continue
        if size == 0:
            skipped.append((rel, "empty file"))
            continue
        enc = "utf-8"
        try:
            if fmt in READERS:
                text, parts = READERS[fmt](path)
                skipped.extend((f"{rel}#{p.replace(' ', '=')}", why) for p, why in parts)
                if not text.strip():
                    what = "PDF has no text layer" if fmt == "pdf" else f"no text in the {fmt} file"
                    skipped.append((rel, what + (" (see its pages above)" if parts else "")))
                    continue
            else:
                data = path.read_bytes()
                if _looks_binary(data):
                    skipped.append((rel, "binary content in a text file"))
                    continue
                text, enc = _decode(data)
                if fmt == "json":
                    try:
                        text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
                    except json.JSONDecodeError as e:
                        skipped.append((rel, f"invalid JSON: {e}"))
                        continue
        except FileNotFoundError:
            skipped.append((rel, "vanished while the folder was read"))
            continue
        except Exception as e:  # noqa: BLE001 - corrupt files of any kind are reported, not fatal
            skipped.append((rel, f"unreadable: {type(e).__name__}: {e}"[:200]))
            continue
        rows.append((rel, fmt, enc, text))
    docs = pd.DataFrame(rows, columns=["path", "format", "encoding", "text"])
    docs.insert(0, "doc_id", [f"d{i:06d}" for i in range(len(docs))])
    return docs, pd.DataFrame(skipped, columns=["path", "reason"])


_BLOCK = re.compile(r"(?is)<(script|style)\b.*?</\1>")
_BREAK = re.compile(r"(?i)<\s*(br|/p|/div|/tr|/li|/h\d|/dd|/dt|/title|/table|/dl)\b[^>]*>")
_CELL = re.compile(r"(?i)<\s*/t[hd]\s*>")
_TAG = re.compile(r"<[^>]+>")


def readable(text: str, fmt: str) -> str:
    """Text for the LLM: HTML without markup (rows and cells kept as lines and ' | ')."""
    if fmt == "html":
        import html

        t = _BLOCK.sub(" ", text)
        t = _CELL.sub(" | ", t)
        t = _BREAK.sub("\n", t)
        t = html.unescape(_TAG.sub(" ", t))
        lines = [re.sub(r"[ \t]+", " ", ln).strip(" |") for ln in t.splitlines()]
        return "\n".join(ln for ln in lines if ln)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunks(text: str, size: int = 1500, overlap: int = 200) -> list[tuple[int, str]]:
    """Overlapping character chunks (start offset, text) cut at line breaks where possible."""
    if len(text) <= size:
        return [(0, text)]
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nl = text.rfind("\n", start + size // 2, end)
            end = nl if nl > 0 else end
        out.append((start, text[start:end]))
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return out
