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

import codecs
import hashlib
import json
import os
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


#: byte-order marks of the UTF-16/32 text Windows tools write ("Unicode" in Notepad); UTF-32
#: first, as its little-endian mark starts with UTF-16's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _bom_text(data: bytes) -> tuple[str, str] | None:
    """Text and encoding of UTF-16/32 data that starts with its byte-order mark, else None."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(enc), enc
            except UnicodeDecodeError:
                return None
    return None


def _decode(data: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-16/32 with a BOM, UTF-8 (with BOM), else cp1252, else latin-1
    (never fails)."""
    bom = _bom_text(data)
    if bom is not None:
        return bom
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _looks_binary(data: bytes) -> bool:
    head = data[:4096]
    for bom, enc in _BOMS:  # UTF-16/32 text: its ASCII has zero bytes, its characters do not
        if head.startswith(bom):
            head = head[len(bom) :].decode(enc, errors="replace").encode("utf-8")
            break
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
    bom = _bom_text(data)
    try:
        text = bom[0] if bom is not None else data.decode("utf-8-sig")
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
        raise LoomError(
            f"document folder {folder} does not exist: give the path of a folder of documents"
        )
    if not folder.is_dir():
        raise LoomError(
            f"{folder} is not a folder: give the folder that holds it (documents are read "
            "from a folder, recursively)"
        )
    files, skipped = _walk(folder)
    rows = []
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
                if "\x00" in text:  # a UTF-16/32 mark on bytes that are not such text
                    skipped.append((rel, "binary content in a text file"))
                    continue
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


def _walk(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The regular files under `folder` to read, in path order, and what is not read, with
    why: hidden files and folders, links to folders, links to files outside `folder`, broken
    or looping links, and pipes, sockets and devices (never dropped without a word)."""
    root = folder.resolve()
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for top, dirs, names in os.walk(folder):
        here = Path(top)
        for d in sorted(dirs):
            path, rel = here / d, (here / d).relative_to(folder).as_posix()
            if path.is_symlink():
                skipped.append((f"{rel}/", "link to a folder: not followed (links to folders "
                                "are not walked: copy the folder here to include it)"))  # fmt: skip
            elif d.startswith("."):
                n = sum(len(f) for _, _, f in os.walk(path))
                skipped.append((f"{rel}/", f"hidden folder ({n} file{'s' * (n != 1)}): not read (rename it "
                                "without the leading '.' to include it)"))  # fmt: skip
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in names:
            path = here / name
            why = _not_a_document(path, root)
            if why:
                skipped.append((path.relative_to(folder).as_posix(), why))
            else:
                files.append(path)
    return sorted(files), sorted(skipped)


def _not_a_document(path: Path, root: Path) -> str:
    """Why the directory entry `path` is not read as a document ('' when it is)."""
    if path.name.startswith("."):
        return "hidden file: not read (rename it without the leading '.' to include it)"
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return "broken link: its target does not exist or the link loops"
        if not target.is_relative_to(root):
            return (
                f"link to {target}, outside the document folder: not read (copy the file "
                "into the folder to include it)"
            )
    if not path.is_file():
        return "not a regular file (a pipe, socket or device): not read"
    return ""


def fingerprint(docs: pd.DataFrame) -> str:
    """Hash of every document's path and text: a run resumes only over the documents it
    started on (an edited, added or renamed file starts a new run)."""
    h = hashlib.sha256()
    for path, text in zip(docs["path"], docs["text"]):
        h.update(f"{len(path)}:{path}{len(text)}:".encode("utf-8", "surrogatepass"))
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


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
    overlap = min(overlap, size // 4)  # a small size (max_chars=100) still moves on, not 1 by 1
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
