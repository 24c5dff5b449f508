"""`get_embedder("m2-bert:/path")`: an M2-BERT checkpoint behind the embedding service."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.device import resolve_device
from toolkit.embed.base import Embedder, check_overlap, check_token_budget
from toolkit.embed.registry import model_folder
from toolkit.embed.tokens import average_chunks, token_ids, window_spans
from toolkit.encoders.graphs import GraphedForward
from toolkit.encoders.m2bert.checkpoint import load_m2bert, load_tokenizer
from toolkit.encoders.m2bert.mixer import module_caches, weights_key
from toolkit.errors import LoomError

log = logging.getLogger(__name__)

#: dtype= values: the forward's autocast dtype on CUDA (names or torch dtypes)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: Any, on_gpu: bool) -> torch.dtype:
    """The compute dtype for `dtype=` (None: bfloat16 on a GPU, float32 on the CPU)."""
    if dtype is None:
        return torch.bfloat16 if on_gpu else torch.float32
    found = DTYPES.get(dtype) if isinstance(dtype, str) else None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        found = dtype
    if found is None:
        raise LoomError(f"dtype={dtype!r}: use one of {sorted(DTYPES)} or None for the default")
    return found


class M2BertEmbedder(Embedder):
    """`get_embedder("m2-bert:/path")`: every text padded to long_conv_l_max, [CLS] pooler output."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        token_budget: int | None = None,
        overlap: int = 32,
        dtype: str | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        on_gpu = self.device.startswith("cuda")
        # the cheap options are checked before the (possibly large) checkpoint is read
        check_token_budget(token_budget, " (every text takes long_conv_l_max of them)")
        want = resolve_dtype(dtype, on_gpu)
        path = Path(path)
        self.path = path
        self.model = load_m2bert(path, self.device)
        self.tokenizer = load_tokenizer(path)
        cfg = self.model.config
        self.config = cfg
        self.name = f"m2-bert:{path}"
        self.dim = cfg.hidden_size
        self.pad_length = int(cfg.long_conv_l_max)
        self.max_length = min(self.pad_length, cfg.max_position_embeddings)
        if cfg.use_positional_encodings and self.pad_length > cfg.max_position_embeddings:
            raise LoomError(
                f"{path}: config.json long_conv_l_max={self.pad_length} exceeds "
                f"max_position_embeddings={cfg.max_position_embeddings}: every text is padded "
                "to long_conv_l_max, so the position table must be at least that long; check "
                "that config.json belongs to these weights"
            )
        self.overlap = check_overlap(overlap, self.max_length - 2)  # [CLS] window [SEP]
        self.token_budget = int(token_budget or (65536 if on_gpu else 8192))
        if want != torch.float32 and not on_gpu:
            log.warning(
                "dtype=%r: autocast runs on CUDA only; %s runs in float32 on %s",
                dtype,
                self.name,
                self.device,
            )
        self._autocast = None if want == torch.float32 else want
        self._cls = self.tokenizer.cls_token_id
        self._sep = self.tokenizer.sep_token_id
        self._pad = self.tokenizer.pad_token_id or 0
        if max(self._cls, self._sep) >= cfg.vocab_size:
            raise LoomError(
                f"{path}: tokenizer ids exceed vocab_size={cfg.vocab_size}: the tokenizer does "
                "not belong to this checkpoint"
            )
        self._lock = threading.Lock()
        # every batch has the same shape (texts padded to pad_length; a short last batch is
        # padded to a power of two of rows): one CUDA graph per row count (graphs.py). Off
        # unless asked for: on the H200 the replay took 0.87-0.97x the eager forward's speed
        # (GPU-bound; benchmarks/results/encoders-m2-graphs-NVIDIA-H200.jsonl)
        self.cuda_graphs = bool(cuda_graphs) and on_gpu
        self.graphs = GraphedForward(
            self._forward, lambda: weights_key(self.model), keep=lambda: module_caches(self.model)
        )

    def _pieces(self, texts: list[str], long_text: str) -> tuple[list[list[int]], np.ndarray]:
        width = self.max_length - 2
        pieces: list[list[int]] = []
        owner: list[int] = []
        for i, seq in enumerate(token_ids(self.tokenizer, texts)):
            if len(seq) > width and long_text == "truncate":
                # the reference tokenizes the whole text, then keeps the first max_length ids
                pieces.append(([self._cls] + list(seq))[: self.max_length])
                owner.append(i)
                continue
            for span in window_spans(seq, width, self.overlap):
                pieces.append([self._cls, *span, self._sep])
                owner.append(i)
        return pieces, np.asarray(owner)

    @torch.inference_mode()
    def forward_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (B, H) float32 for token ids already padded to pad_length.

        On CUDA with cuda_graphs=True, replayed from a CUDA graph captured for this batch's
        row count; fewer rows than a full batch are padded to a power of two."""
        self.check_ids(ids)
        ids = ids.to(self.device)
        if not (self.cuda_graphs and ids.is_cuda):
            return self._forward(ids)
        rows = ids.shape[0]
        full = self.batch_rows()
        bucket = rows if rows >= full else min(1 << (rows - 1).bit_length(), full)
        if bucket > rows:
            ids = torch.cat([ids, ids.new_full((bucket - rows, ids.shape[1]), self._pad)])
        return self.graphs(ids)[:rows]

    def check_ids(self, ids: torch.Tensor) -> None:
        """A LoomError unless `ids` is (B, pad_length) of ids in the vocabulary (the output of
        a shorter row would silently depend on its padding: the mixer reads every position)."""
        if ids.dim() != 2 or ids.shape[1] != self.pad_length:
            raise LoomError(
                f"ids of shape {tuple(ids.shape)}: give (rows, {self.pad_length}) token ids, "
                f"padded with {self._pad} to pad_length={self.pad_length} (encode() does this)"
            )
        if ids.is_floating_point() or ids.is_complex():
            raise LoomError(f"ids of dtype {ids.dtype}: give integer token ids")
        if not ids.is_cuda and ids.numel():  # no host sync for ids already on the GPU
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise LoomError(
                    f"ids range from {lo} to {hi}: token ids must lie in 0.."
                    f"{self.config.vocab_size - 1} (this checkpoint's vocab_size)"
                )

    def batch_rows(self) -> int:
        """Texts per model call: token_budget // pad_length (at least 1)."""
        return max(1, self.token_budget // self.pad_length)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self._autocast is not None and self.device.startswith("cuda"):
            # no autocast weight cache: PyTorch's rule for a forward captured in a CUDA graph
            with torch.autocast("cuda", dtype=self._autocast, cache_enabled=False):
                return self.model(ids)[1].float()
        return self.model(ids)[1].float()

    def _embed(
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        pieces, owner = self._pieces(texts, long_text)
        rows = batch_size or self.batch_rows()
        vecs = np.empty((len(pieces), self.dim), dtype=np.float32)
        bar = tqdm(total=len(pieces), desc="embed m2-bert", unit="text", disable=not progress)
        with self._lock:
            for start in range(0, len(pieces), rows):
                part = pieces[start : start + rows]
                ids = torch.full((len(part), self.pad_length), self._pad, dtype=torch.long)
                for r, p in enumerate(part):
                    ids[r, : len(p)] = torch.as_tensor(p)
                vecs[start : start + len(part)] = self.forward_ids(ids).cpu().numpy()
                bar.update(len(part))
        bar.close()
        return average_chunks(vecs, owner, len(texts))


def load_embedder(name: str, device: str, **kwargs: Any) -> M2BertEmbedder:
    """The `toolkit.embed` registry's loader for "m2-bert:/path" names."""
    return M2BertEmbedder(model_folder(name, "m2-bert:"), device=device, **kwargs)
