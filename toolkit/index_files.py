"""The files of a saved `VectorIndex`: written so that a reader never sees a half-saved folder.

A save writes the FAISS index and the ids under new names (`index-<token>.faiss`,
`ids-<token>.npy`, each through a temporary file, fsync and rename), then `meta.json` naming
them with their sizes and sha256, by an atomic rename: the folder holds the old index or the
new one, never a mix, whatever is interrupted. Files no longer named are removed after.
Folders written before (index.faiss, ids.npy and a meta.json without "files") still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import LoomError

META = "meta.json"
FORMAT = 2
BLOCK = 1 << 20
#: Names of the files a save writes (the token is secrets.token_hex(6)); only these, and the
#: files the folder's previous meta.json names, are ever removed from a folder.
OWN_FILE = re.compile(r"^(index-[0-9a-f]{12}\.faiss|ids-[0-9a-f]{12}\.npy)$")
FORMAT1_FILES = ("index.faiss", "ids.npy")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_new(folder: Path, name: str, write: Callable[[Path], None]) -> dict[str, Any]:
    """write(tmp) then fsync and rename to folder/name; its {"name", "size", "sha256"}."""
    tmp = folder / f".{name}.tmp"
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "name": name,
        "size": (folder / name).stat().st_size,
        "sha256": sha256_file(folder / name),
    }


def write_index_files(
    folder: Path,
    meta: dict[str, Any],
    ids: np.ndarray,
    write_index: Callable[[Path], None] | None,
) -> Path:
    """Save `ids` and (when given) the index written by write_index(path); meta.json last."""
    from toolkit.workspace import atomic_write_bytes

    if folder.exists() and not folder.is_dir():
        raise LoomError(f"cannot save the index to {folder}: it is a file; give a folder path")
    previous = None
    if (folder / META).exists():
        try:
            previous = read_meta(folder)
        except LoomError as e:
            raise LoomError(
                f"{folder / META} exists but is not the meta.json of a saved VectorIndex, and "
                f"saving would replace it ({e}): save the index to another folder, or delete "
                "that file first"
            ) from None
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)

    def write_ids(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, ids)

    files = {"ids": write_new(folder, f"ids-{token}.npy", write_ids)}
    if write_index is not None:
        files["index"] = write_new(folder, f"index-{token}.faiss", write_index)
    meta = {**meta, "format": FORMAT, "files": files}
    atomic_write_bytes(folder / META, json.dumps(meta, indent=1).encode())
    keep = {f["name"] for f in files.values()}
    named = set()
    if previous is not None:
        old_files = previous.get("files")
        if isinstance(old_files, dict):
            named = {f.get("name") for f in old_files.values() if isinstance(f, dict)}
        elif old_files is None:  # the layout of format 1
            named = set(FORMAT1_FILES)
    for old in folder.iterdir():
        if old.name not in keep and (old.name in named or OWN_FILE.match(old.name)):
            old.unlink(missing_ok=True)
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    if not (folder / META).exists():
        raise LoomError(f"{folder} is not a saved VectorIndex (no {META})")
    try:
        meta = json.loads((folder / META).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LoomError(f"{folder / META} is corrupt ({e}): save the index again") from None
    missing = [
        k
        for k in ("dim", "metric", "kind", "params")
        if not isinstance(meta, dict) or k not in meta
    ]
    if missing:
        raise LoomError(f"{folder / META} is corrupt (no {missing}): save the index again")
    if not isinstance(meta["params"], dict):
        raise LoomError(f"{folder / META} is corrupt (params is not a dict): save the index again")
    return meta


def checked(folder: Path, entry: dict[str, Any], verify: bool) -> Path:
    """The file of a meta.json entry, after its size (and with verify its sha256) matched."""
    path = folder / entry["name"]
    if not path.exists():
        raise FileNotFoundError(path)
    size = path.stat().st_size
    if size != entry["size"]:
        raise LoomError(
            f"{path} has {size} bytes but was saved with {entry['size']} (cut short or "
            "overwritten): save the index again"
        )
    if verify and sha256_file(path) != entry["sha256"]:
        raise LoomError(
            f"{path} does not match its sha256 in {META} (corrupt): save the index again"
        )
    return path


def read_index_files(
    folder: Path, verify: bool = True
) -> tuple[dict[str, Any], np.ndarray, Path | None]:
    """(meta, ids, the FAISS index file or None) of a saved index, checked against meta.json.

    A save that replaced the files between reading meta.json and opening them is read again.
    """
    for attempt in range(3):
        meta = read_meta(folder)
        files = meta.get("files")
        try:
            if files is None:  # format 1
                ids_path = folder / "ids.npy"
                index_path: Path | None = folder / "index.faiss"
                if not index_path.exists():
                    index_path = None
            else:
                ids_path = checked(folder, files["ids"], verify)
                index_path = checked(folder, files["index"], verify) if "index" in files else None
            ids = load_ids(ids_path)
        except FileNotFoundError as e:
            if files is not None and attempt < 2:
                continue  # a concurrent save: meta.json names new files now
            raise LoomError(
                f"{e.filename or e}: missing file of the saved index {folder}"
            ) from None
        return meta, ids, index_path
    raise AssertionError("unreachable")


def load_ids(path: Path) -> np.ndarray:
    try:
        ids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise LoomError(f"{path} is not a readable ids file ({e}): save the index again") from None
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise LoomError(f"{path} holds {ids.dtype} of shape {ids.shape}, not one id per vector")
    return ids.astype(np.int64, copy=False)
