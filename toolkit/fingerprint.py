"""Content fingerprints of model files and folders: what caches key on besides a model's name.

`path_fingerprint(path)` hashes the bytes of a file, or of every file of a folder with its
relative path, so a model re-trained into the same folder gets a new fingerprint. Hashes are
remembered per process by each file's (path, size, mtime, inode, ctime), so asking again for
an unchanged folder costs only a `stat` per file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from toolkit.errors import LoomError

#: Bytes read at a time while hashing.
BLOCK = 1 << 20
#: Hex digits kept of a fingerprint (sha256: 64).
DIGITS = 32

_FILE_HASHES: dict[tuple, str] = {}
_LOCK = threading.Lock()


def _stamp(p: Path) -> tuple:
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (remembered per process while the file is unchanged)."""
    p = Path(path)
    stamp = _stamp(p)
    with _LOCK:
        known = _FILE_HASHES.get(stamp)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    digest = h.hexdigest()
    with _LOCK:
        _FILE_HASHES[stamp] = digest
    return digest


def model_files(folder: Path) -> list[Path]:
    """Every regular file under `folder` in a fixed order, hidden files and folders left out
    (lock files and `.cache` folders change without the model changing)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def path_fingerprint(path: str | os.PathLike) -> str:
    """A content hash of a model file or folder (weights, tokenizer, config: every file)."""
    p = Path(path).expanduser()
    if p.is_file():
        return file_digest(p)[:DIGITS]
    if not p.is_dir():
        raise LoomError(f"cannot fingerprint {p}: no such file or folder")
    h = hashlib.sha256()
    for f in model_files(p):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(b"\x00")
        h.update(file_digest(f).encode())
        h.update(b"\x00")
    return h.hexdigest()[:DIGITS]


def text_fingerprint(*parts: object) -> str:
    """A hash of the given parts (e.g. a server URL and model id) in the fingerprint format."""
    blob = "\x00".join(str(p) for p in parts)
    return hashlib.sha256(blob.encode()).hexdigest()[:DIGITS]
