"""Token ids of many texts as flat arrays: the packed path's unit of work.

A `Chunk` holds consecutive texts tokenized by the Rust tokenizer (`tokenize_chunk`), every
piece's ids concatenated (special tokens in, long texts windowed or truncated), so a batch
is a slice of one array and needs no padding; `token_batches` cuts pieces into token-budget
batches. Light on imports (numpy only): tokenizer worker processes load just this.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.embed.tokens import window_spans


@dataclass(frozen=True)
class Chunk:
    """Token ids of consecutive texts: `flat` holds every piece, `owner` its text's index."""

    flat: np.ndarray  # int32, every piece's ids (special tokens included), concatenated
    lengths: np.ndarray  # int64, one per piece
    owner: np.ndarray  # int64, the (global) text index of each piece
    counts: np.ndarray  # int64, one per text: its tokens before windowing, special tokens in


def join_chunks(a: Chunk, b: Chunk) -> Chunk:
    """`a` then `b` as one chunk (a batch left over from `a` topped up from `b`)."""
    return Chunk(*(np.concatenate([x, y]) for x, y in zip(vars(a).values(), vars(b).values())))


def take_pieces(c: Chunk, pieces: slice) -> Chunk:
    """The pieces `pieces` of `c` (their texts' counts are not kept: they were counted)."""
    offsets = np.concatenate([[0], np.cumsum(c.lengths)])
    lo, hi = int(offsets[pieces.start]), int(offsets[pieces.stop])
    none = np.zeros(0, dtype=np.int64)
    return Chunk(c.flat[lo:hi], c.lengths[pieces], c.owner[pieces], none)


def rust_tokenizer(hf_tokenizer: Any) -> Any:
    """A private copy of a fast tokenizer's Rust backend with truncation and padding off.

    None when the tokenizer has no Rust backend (a slow Python tokenizer).
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None) or getattr(
        hf_tokenizer, "_tokenizer", None
    )
    if backend is None or not hasattr(backend, "to_str"):
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def tokenize_chunk(
    tokenizer: Any,
    texts: list[str],
    first: int,
    width: int,
    overlap: int,
    prefix: list[int],
    suffix: list[int],
    truncate: bool,
) -> Chunk:
    """Token ids of `texts` (global indices from `first`), windowed or truncated to `width`.

    Runs on a pool thread: the Rust batch call releases the GIL; the Python part is kept to
    one list per text (the ids) and a few vectorised numpy calls.
    """
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    ids = [enc.ids for enc in encode(texts, add_special_tokens=False)]
    raw = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    counts = raw + len(prefix) + len(suffix)
    if not truncate and len(raw) and raw.max() > width:
        return windowed_chunk(ids, first, width, overlap, prefix, suffix, counts)
    if truncate and len(raw) and raw.max() > width:
        ids = [i[:width] for i in ids]
        raw = np.minimum(raw, width)
    n, p, q = len(ids), len(prefix), len(suffix)
    lengths = raw + p + q
    flat = np.empty(int(lengths.sum()), dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    body = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(raw.sum()))
    shift = np.repeat(starts + p - np.concatenate([[0], np.cumsum(raw)[:-1]]), raw)
    flat[np.arange(len(body)) + shift] = body
    for j, t in enumerate(prefix):
        flat[starts + j] = t
    for j, t in enumerate(suffix):
        flat[starts + p + raw + j] = t
    owner = np.arange(first, first + n, dtype=np.int64)
    return Chunk(flat=flat, lengths=lengths, owner=owner, counts=counts)


def windowed_chunk(
    ids: list[list[int]],
    first: int,
    width: int,
    overlap: int,
    prefix: list[int],
    suffix: list[int],
    counts: np.ndarray,
) -> Chunk:
    """`tokenize_chunk` where some text is longer than `width`: overlapping windows."""
    pre = np.asarray(prefix, dtype=np.int32)
    post = np.asarray(suffix, dtype=np.int32)
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    owner: list[int] = []
    for i, seq in enumerate(ids):
        for span in window_spans(np.asarray(seq, dtype=np.int32), width, overlap):
            parts.extend((pre, span, post))
            lengths.append(len(span) + len(pre) + len(post))
            owner.append(first + i)
    return Chunk(
        flat=np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32),
        lengths=np.asarray(lengths, dtype=np.int64),
        owner=np.asarray(owner, dtype=np.int64),
        counts=counts,
    )


def token_batches(lengths: np.ndarray, token_budget: int, max_rows: int) -> list[slice]:
    """Consecutive pieces cut into slices of at most `token_budget` tokens and `max_rows` rows."""
    out, start, n = [], 0, len(lengths)
    ends = np.cumsum(lengths)
    while start < n:
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + token_budget, side="right"))
        stop = min(max(stop, start + 1), start + max_rows, n)
        out.append(slice(start, stop))
        start = stop
    return out
