"""The on-disk embedding cache: raw vectors keyed by (model key, text hash) in one SQLite file.

An embedder's model key (`Embedder.cache_key`) holds the content fingerprint of its model, so
vectors of a model re-trained into the same folder are never served for the new one. The file
is safe to share between processes, and a corrupt one is moved aside and rebuilt
(`toolkit.kvcache`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.errors import LoomError
from toolkit.kvcache import KVTable

log = logging.getLogger(__name__)
FILE_NAME = "embeddings.sqlite"


class EmbeddingCache:
    """On-disk cache of raw vectors keyed by (model key, text hash), in one SQLite file.

    path: the SQLite file, or a folder (also one without a suffix) that gets `embeddings.sqlite`.
    """

    def __init__(self, path: str | os.PathLike, model_key: str) -> None:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / FILE_NAME
        self.path = path
        self.model_key = model_key
        self._table = KVTable(
            path,
            "vectors",
            "model TEXT, key TEXT, vec BLOB, PRIMARY KEY (model, key)",
            values=("vec",),
            scope=("model", model_key),
        )

    @staticmethod
    def key(text: str, mode: str) -> str:
        return hashlib.sha1(f"{mode}\x00{text}".encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """{key: float32 vector} for the keys in the cache."""
        _check_keys(keys)
        return {
            k: np.frombuffer(vec, dtype=np.float32)
            for k, (vec,) in self._table.get(keys).items()
            if isinstance(vec, bytes) and len(vec) % 4 == 0
        }

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store one (n, dim) row per key; rows with NaN or inf are not stored (a model that
        produced them once is asked again next time, not served the bad vector forever)."""
        keys = _check_keys(keys)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(keys):
            raise LoomError(
                f"EmbeddingCache.put got {len(keys)} keys and vectors of shape {vecs.shape}: "
                "give a 2-D array (n, dim) with one row per key"
            )
        finite = np.isfinite(vecs).all(axis=1)
        if not finite.all():
            log.warning(
                "embedding cache %s: %d of %d vectors hold NaN or inf; not caching them",
                self.path,
                int((~finite).sum()),
                len(keys),
            )
        self._table.put(
            (k, (np.ascontiguousarray(v).tobytes(),)) for k, v, ok in zip(keys, vecs, finite) if ok
        )


def _check_keys(keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str | bytes):
        raise LoomError("EmbeddingCache takes a list of keys, not one string: wrap it as [key]")
    return list(keys)
