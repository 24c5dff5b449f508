"""Tokenize ahead on CPU threads while the accelerator runs packed batches.

End to end, a GPU encoder is bound by tokenization unless tokenization runs beside it. Here
the Rust tokenizer (a private copy of the model's, with truncation and padding off) encodes
chunks of texts on a thread pool (its batch call releases the GIL); each chunk becomes one
flat int32 array of token ids with special tokens, plus the piece lengths and, for texts
longer than the model's window, which text each window belongs to. The main thread cuts a
chunk into batches of at most `token_budget` tokens (no padding: `PackedBert`), queues them on
the device, and copies the pooled vectors back into pinned host memory without waiting, so
the only synchronisation is at the end.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from toolkit.embed.chunks import (  # noqa: F401 - public names, also importable from here
    Chunk,
    join_chunks,
    rust_tokenizer,
    take_pieces,
    token_batches,
    tokenize_chunk,
    windowed_chunk,
)
from toolkit.embed.tokenize_procs import tokenizer_processes
from toolkit.embed.tokens import average_chunks
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)
CHUNK_TEXTS = 4096
MIN_CHUNK_TEXTS = 32


def tokenizer_threads() -> int:
    """Threads of the shared tokenizer pool: all cores but one, at most 32."""
    return max(1, min(32, (os.cpu_count() or 2) - 1))


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def tokenizer_pool() -> ThreadPoolExecutor:
    """One process-wide pool, so concurrent `encode` calls (a server) share the cores."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(tokenizer_threads(), thread_name_prefix="loom-tokenize")
        return _POOL


def _forget_pool() -> None:  # a forked child has none of its parent's threads
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


#: where the packed path tokenizes: "threads", "processes" or "auto" (LOOM_TOKENIZE)
TOKENIZE_MODES = ("auto", "threads", "processes")
#: "auto" uses worker processes from this many cores on, for calls of at least PROCESS_TEXTS
PROCESS_CORES = 8
PROCESS_TEXTS = 256


def use_processes(n_texts: int) -> bool:
    """Tokenize `n_texts` in worker processes (`toolkit.embed.tokenize_procs`)?

    A server's requests are small but many: it asks with n_texts=PROCESS_TEXTS, i.e. by the
    number of cores alone.
    """
    mode = os.environ.get("LOOM_TOKENIZE", "auto")
    if mode not in TOKENIZE_MODES:
        raise LoomError(f"LOOM_TOKENIZE={mode!r}: use one of {TOKENIZE_MODES}")
    if mode == "auto":
        return (os.cpu_count() or 1) >= PROCESS_CORES and n_texts >= PROCESS_TEXTS
    return mode == "processes"


def submit_chunk(
    tokenizer: Any, texts: list[str], first: int, *args: Any, n_texts: int = PROCESS_TEXTS
) -> Future:
    """`tokenize_chunk(tokenizer, texts, first, *args)` on a worker process or pool thread
    (`use_processes(n_texts)`: a call's size decides, a server's requests go by cores)."""
    procs = tokenizer_processes(tokenizer, tokenizer_threads()) if use_processes(n_texts) else None
    if procs is not None:
        return procs.submit(texts, first, *args)
    return tokenizer_pool().submit(tokenize_chunk, tokenizer, texts, first, *args)


def tokenized_chunks(
    tokenizer: Any,
    texts: list[str],
    width: int,
    overlap: int,
    prefix: list[int],
    suffix: list[int],
    truncate: bool,
) -> Iterator[Chunk]:
    """Chunks of `texts` in order; all are submitted to the pool before this returns.

    Chunks are small enough that a single call of a few hundred texts still spreads over
    every worker, and at most CHUNK_TEXTS texts each. Workers are processes or threads
    (`use_processes`); a failed process pool falls back to threads.
    """
    size = min(CHUNK_TEXTS, max(MIN_CHUNK_TEXTS, -(-len(texts) // tokenizer_threads())))
    args = (width, overlap, prefix, suffix, truncate)
    futures = [
        submit_chunk(tokenizer, texts[s : s + size], s, *args, n_texts=len(texts))
        for s in range(0, len(texts), size)
    ]

    def results() -> Iterator[Chunk]:
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    return results()


def run_packed(
    forward: Callable[[Any, Any, int], Any],
    chunks: Iterator[Chunk],
    dim: int,
    device: str,
    token_budget: int,
    max_rows: int,
    on_texts: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled vectors (pieces, dim) float32 and each piece's text index, in text order.

    Batches are cut across chunk boundaries: the last, partly filled batch of a chunk waits
    for the next chunk, so a call split into many small chunks (a server's merged requests)
    still runs full token-budget batches.
    """
    import torch

    cuda = device.startswith("cuda")
    results: list[tuple[Any, np.ndarray]] = []
    carry: Chunk | None = None
    queued = -1  # the highest text index queued so far (for the progress bar)

    def launch(c: Chunk, batches: list[slice]) -> None:
        nonlocal queued
        offsets = np.concatenate([[0], np.cumsum(c.lengths)])
        outs = []
        for sl in batches:
            lo, hi = int(offsets[sl.start]), int(offsets[sl.stop])
            ids = torch.from_numpy(c.flat[lo:hi])
            cu = torch.from_numpy((offsets[sl.start : sl.stop + 1] - lo).astype(np.int32))
            if cuda:
                ids = ids.pin_memory().to(device, non_blocking=True)
                cu = cu.pin_memory().to(device, non_blocking=True)
            outs.append(forward(ids, cu, int(c.lengths[sl].max())))
        if not outs:
            return
        vec = torch.cat(outs)
        if cuda:  # copy back without waiting; one synchronisation at the end
            host = torch.empty(vec.shape, dtype=vec.dtype, pin_memory=True)
            host.copy_(vec, non_blocking=True)
            vec = host
        owner = c.owner[batches[0].start : batches[-1].stop]
        results.append((vec, owner))
        if on_texts is not None:  # queued, not finished: the bar runs ahead a little
            on_texts(int(owner[-1]) - queued)
        queued = int(owner[-1])

    for chunk in chunks:
        c = chunk if carry is None else join_chunks(carry, chunk)
        batches = token_batches(c.lengths, token_budget, max_rows)
        if not batches:
            continue
        last = batches[-1]
        carry = take_pieces(c, last)
        launch(c, batches[:-1])
    if carry is not None and len(carry.lengths):
        launch(carry, token_batches(carry.lengths, token_budget, max_rows))
    if cuda:
        torch.cuda.synchronize(device)
    if not results:
        return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
    vecs = np.concatenate([v.numpy() for v, _ in results]).astype(np.float32, copy=False)
    owner = np.concatenate([o for _, o in results])
    return vecs, owner


# texts tokenized before a call takes the model lock (all of a server's merged call)
TOKENIZE_BEFORE_LOCK = 8192


class PackedForward:
    """An encoder's packed path: the Rust tokenizer on threads, then `PackedBert` batches."""

    def __init__(self, embedder: Any, model: Any, tokenizer: Any) -> None:
        self.embedder = embedder
        self.model = model
        self.tokenizer = tokenizer

    def embed(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        """Raw vectors (len(texts), dim) in input order; long texts windowed and averaged."""
        return self.embed_counted(texts, batch_size, progress, long_text)[0]

    def embed_counted(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """`embed`, and each text's token count from the same tokenization."""
        from tqdm.auto import tqdm

        e = self.embedder
        chunks = tokenized_chunks(
            self.tokenizer,
            texts,
            e.window,
            e.overlap,
            e.prefix_ids,
            e.suffix_ids,
            truncate=long_text == "truncate",
        )
        counts: list[np.ndarray] = []

        def counted(it: Iterator[Chunk]) -> Iterator[Chunk]:
            for c in it:
                counts.append(c.counts)
                yield c

        # tokenized outside the lock, so concurrent calls overlap: a small call entirely
        ready = []
        for c in chunks:
            ready.append(c)
            if int(c.owner[-1]) + 1 >= min(len(texts), TOKENIZE_BEFORE_LOCK):
                break
        bar = tqdm(total=len(texts), desc="embed", unit="text", disable=not progress)
        vecs = self.run(counted(itertools.chain(ready, chunks)), len(texts), batch_size, bar.update)
        bar.close()
        total = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        return vecs, total

    def run(
        self,
        chunks: Iterator[Chunk],
        n_texts: int,
        batch_size: int | None = None,
        on_texts: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Raw vectors (n_texts, dim) of tokenized `chunks`, under the model's lock."""
        import torch

        e = self.embedder
        with e.lock, torch.inference_mode():
            vecs, owner = run_packed(
                self.model,
                chunks,
                e.dim,
                e.device,
                e.token_budget,
                batch_size or e.max_rows,
                on_texts=on_texts,
            )
        return average_chunks(vecs, owner, n_texts)

    def submit_tokenize(self, texts: list[str], long_text: str) -> Future:
        """A Future of one `Chunk` of `texts` (text indices from 0), tokenized now on the
        shared workers: a server calls this as each request arrives, so tokenizing overlaps
        the model's work on earlier requests (`embed_tokenized` runs them together later)."""
        e = self.embedder
        args = (e.window, e.overlap, e.prefix_ids, e.suffix_ids, long_text == "truncate")
        return submit_chunk(self.tokenizer, texts, 0, *args)

    def embed_tokenized(
        self, chunks: list[Chunk], sizes: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw vectors and token counts of several requests' chunks (`submit_tokenize`; chunk
        i holds sizes[i] texts) in one packed run, in order: batches span requests."""
        starts = np.cumsum([0, *sizes[:-1]])
        shifted = [replace(c, owner=c.owner + int(s)) for c, s in zip(chunks, starts)]
        vecs = self.run(iter(shifted), int(sum(sizes)))
        return vecs, np.concatenate([c.counts for c in chunks])


def build_packed(embedder: Any, probe: list[str] | None = None) -> PackedForward | None:
    """The packed path of a sentence-transformers embedder, or None where it does not apply.

    Checked once against the standard forward on a few probe texts: a cosine below 0.999
    on any of them keeps the standard forward (and says so in the log).
    """
    import torch

    from toolkit.embed.packed import PackedBert

    on_gpu = embedder.device.startswith("cuda")
    dtype = torch.float16 if on_gpu else torch.float32
    model = PackedBert.from_sentence_transformer(embedder.model, embedder.device, dtype)
    tokenizer = rust_tokenizer(embedder.tokenizer)
    if model is None or tokenizer is None:
        return None
    packed = PackedForward(embedder, model, tokenizer)
    probe = probe or PROBE_TEXTS
    fast = packed.embed(probe, None, False, "chunk")
    standard = embedder.embed_padded(probe, None, False, "chunk")
    fast /= np.maximum(np.linalg.norm(fast, axis=1, keepdims=True), 1e-12)
    standard /= np.maximum(np.linalg.norm(standard, axis=1, keepdims=True), 1e-12)
    agreement = float((fast * standard).sum(1).min())
    if agreement < 0.999:
        logger.warning(
            "packed forward disagrees with the standard one (cosine %.5f): not used", agreement
        )
        return None
    logger.info(
        "packed forward on %s (cosine %.6f to the standard one)", embedder.device, agreement
    )
    return packed


PROBE_TEXTS = [
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "Packed batches hold texts of different lengths without padding; " * 6,
]
