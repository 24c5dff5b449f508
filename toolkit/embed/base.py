"""The `Embedder` interface: input checks, the embedding cache, normalisation, progress.

Subclasses implement `_embed` (raw vectors for validated texts); `encode` adds the rest.
`fingerprint` names what makes the vectors (a content hash of a local model's files, or the
server and model id of a remote one); the embedding cache is keyed by it, so a model
re-trained into the same folder never gets the vectors of the old one.
This module imports no encoder: `toolkit.embed.registry` maps model names to them.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.embed.cache import EmbeddingCache
from toolkit.embed.tokens import token_ids
from toolkit.errors import LoomError
from toolkit.fingerprint import path_fingerprint, text_fingerprint
from toolkit.progress import deprecated_progress, resolve_progress
from toolkit.validate import is_whole_number

log = logging.getLogger(__name__)

LONG_TEXT_MODES = ("chunk", "truncate")


def check_texts(texts: Iterable[str] | str) -> list[str]:
    """`texts` as a list of str; a LoomError names the first missing or non-str entry."""
    if isinstance(texts, str):
        raise LoomError("encode() takes a list of texts, not one string: wrap it as [text]")
    if hasattr(texts, "tolist"):
        texts = texts.tolist()
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            if t is None or (isinstance(t, float) and math.isnan(t)):
                raise LoomError(
                    f"text {i} is missing (None/NaN): drop or fill empty rows before embedding "
                    "(e.g. df[col].fillna(''))"
                )
            fix = (
                "decode it, e.g. t.decode('utf-8')"
                if isinstance(t, bytes)
                else "convert it with str()"
            )
            raise LoomError(f"text {i} is of type {type(t).__name__}, not str: {fix}")
    return texts


def check_token_budget(token_budget: Any, hint: str = "") -> Any:
    """`token_budget` (None: the caller's default) if it is a positive whole number; `hint`
    adds the encoder's own note to the error."""
    if token_budget is not None and (not is_whole_number(token_budget) or token_budget < 1):
        raise LoomError(
            f"token_budget={token_budget!r}: give a positive number of tokens per batch{hint}, "
            "or None for the default"
        )
    return token_budget


def check_overlap(overlap: Any, window: int) -> int:
    """`overlap` as an int if long-text windows of `window` tokens can share it: a negative
    overlap would skip tokens between windows, one near the window width would embed a long
    text once per token."""
    if not is_whole_number(overlap) or not 0 <= overlap < window:
        raise LoomError(
            f"overlap={overlap!r}: give the tokens long-text windows share, from 0 to "
            f"{window - 1} (the window is {window} tokens)"
        )
    return int(overlap)


class Embedder(ABC):
    """Turns texts into float32 vectors; subclasses implement `_embed` (raw vectors)."""

    name: str
    dim: int
    max_length: int
    device: str

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
            f"max_length={self.max_length}, device={self.device!r})"
        )

    @property
    def fingerprint(self) -> str:
        """A content hash of what makes this embedder's vectors.

        A local model (`self.path`, a file or folder): the hash of its files' bytes (weights,
        tokenizer, config), remembered per process while the files are unchanged. Otherwise
        (a server): the hash of the class and name, i.e. the server URL and model id.
        """
        path = getattr(self, "path", None)
        if path is not None and Path(path).exists():
            return path_fingerprint(path)
        return text_fingerprint(type(self).__name__, self.name)

    def cache_key(self) -> str:
        """The embedding cache's model key: class, fingerprint and max length (long texts are
        split or cut at max_length tokens, so it changes the vectors)."""
        return f"{type(self).__name__}@{self.fingerprint}/max_length={self.max_length}"

    def encode(
        self,
        texts: Iterable[str],
        batch_size: int | None = None,
        normalize: bool = True,
        progress: bool | None = None,
        long_text: str = "chunk",
        cache: Any = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed `texts` in input order; returns float32 (n, dim).

        progress: a progress bar (None: on in notebooks and terminals); `show_progress=` is
        the deprecated spelling. long_text: "chunk" splits texts longer than the model's max
        length into overlapping windows and averages them; "truncate" keeps the first
        max_length tokens. cache: a folder, a Workspace or an EmbeddingCache; texts seen
        before are not re-embedded.
        """
        progress = deprecated_progress(progress, "show_progress", show_progress, "Embedder.encode")
        texts = self._inputs(texts, batch_size, long_text)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bar = resolve_progress(progress)
        store = self._cache(cache)
        if store is None:
            out = self._embed(texts, batch_size, bar, long_text)
        else:
            keys = [store.key(t, long_text) for t in texts]
            hit = self._checked(store, store.get(list(dict.fromkeys(keys))))
            missing = list(dict.fromkeys(k for k in keys if k not in hit))
            if missing:
                first = {k: t for k, t in zip(keys, texts)}
                new = self._embed([first[k] for k in missing], batch_size, bar, long_text)
                store.put(missing, new)
                hit.update(zip(missing, new))
            out = np.stack([hit[k] for k in keys])
        return finish_vectors(out, normalize)

    def encode_counted(
        self,
        texts: Iterable[str],
        batch_size: int | None = None,
        normalize: bool = True,
        long_text: str = "chunk",
    ) -> tuple[np.ndarray, np.ndarray]:
        """`encode` (no cache, no progress bar) and each text's token count (`token_counts`).

        Encoders that tokenize on the way (the packed GPU path) count from that same
        tokenization; a server's usage figures cost no second pass over the texts.
        """
        texts = self._inputs(texts, batch_size, long_text)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        out, counts = self._embed_counted(texts, batch_size, long_text)
        return finish_vectors(out, normalize), counts

    def submit_tokenize(self, texts: Sequence[str], long_text: str = "chunk") -> Any:
        """Start tokenizing `texts` ahead of `encode_tokenized` (a Future of its tokens), or
        None where this embedder tokenizes inside its forward (the default): callers then
        use `encode_counted(texts)`."""
        self._inputs(texts, None, long_text)
        return None

    def _inputs(self, texts: Iterable[str], batch_size: int | None, long_text: str) -> list[str]:
        """`texts` checked (`check_texts`), with the options every encode call takes."""
        if long_text not in LONG_TEXT_MODES:
            raise LoomError(f"long_text={long_text!r}: use one of {LONG_TEXT_MODES}")
        if batch_size is not None and (not is_whole_number(batch_size) or batch_size < 1):
            raise LoomError(f"batch_size={batch_size!r}: use a positive whole number or None")
        return check_texts(texts)

    def _embed_counted(
        self, texts: list[str], batch_size: int | None, long_text: str
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._embed(texts, batch_size, False, long_text), self.token_counts(texts)

    def _cache(self, cache: Any) -> EmbeddingCache | None:
        if cache is None or isinstance(cache, EmbeddingCache):
            return cache
        if hasattr(cache, "cache_dir"):  # a Workspace
            cache = Path(cache.cache_dir) / "embeddings"
        return EmbeddingCache(cache, self.cache_key())

    def _checked(self, store: EmbeddingCache, hit: dict[str, np.ndarray]) -> dict:
        """The cached vectors of the right length (others are embedded again, with a warning)."""
        if not hit:
            return hit
        dim = self.dim
        bad = [k for k, v in hit.items() if v.shape != (dim,)]
        if bad:
            log.warning(
                "embedding cache %s: %d vectors do not have dimension %d; embedding them again",
                store.path,
                len(bad),
                dim,
            )
            for k in bad:
                del hit[k]
        return hit

    @abstractmethod
    def _embed(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        """Raw (unnormalised) vectors for non-empty, validated texts, in input order."""

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Number of model tokens in `texts` (word count where the model has no tokenizer)."""
        return int(self.token_counts(texts).sum())

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's model tokens, int64 (ids + 2 special tokens; words without a tokenizer)."""
        tok = getattr(self, "tokenizer", None)
        if tok is None:
            return np.asarray([len(t.split()) for t in texts], dtype=np.int64)
        return np.asarray([len(ids) + 2 for ids in token_ids(tok, list(texts))], dtype=np.int64)


def finish_vectors(out: Any, normalize: bool) -> np.ndarray:
    """float32 vectors, unit length when `normalize` (zero vectors stay zero)."""
    out = np.asarray(out, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out
