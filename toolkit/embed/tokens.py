"""Token helpers shared by every tokenizer-based encoder: ids, special tokens, long-text windows.

A text longer than the model's max length is split into overlapping windows of token ids
(`window_spans`); the windows are embedded like texts and their vectors averaged back into
one vector per text (`average_chunks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens or truncation (long texts are windowed later)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "longer than the maximum" warning: we window
    try:
        return tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(level)


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text's own tokens."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def window_spans(ids: Sequence[int], width: int, overlap: int) -> list[Sequence[int]]:
    """`ids` as one span when it fits in `width`, else windows of `width` sharing `overlap`."""
    if len(ids) <= width:
        return [ids]
    step = max(1, width - overlap)
    return [ids[s : s + width] for s in range(0, len(ids) - overlap, step)]


def average_chunks(vecs: np.ndarray, owner: np.ndarray, n_texts: int) -> np.ndarray:
    """One float32 vector per text: the mean of the rows of `vecs` that text `owner[i]` owns.

    `vecs` is returned as it is when every text has exactly one row (rows in text order).
    """
    if len(vecs) == n_texts:
        return vecs
    out = np.zeros((n_texts, vecs.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vecs)
    counts = np.bincount(owner, minlength=n_texts).astype(np.float32)
    return out / counts[:, None]
