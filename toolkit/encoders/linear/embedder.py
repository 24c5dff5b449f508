"""`get_embedder("linear:/path")`: a converted linear-attention encoder behind the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from toolkit.device import resolve_device
from toolkit.embed.registry import model_folder
from toolkit.embed.transformer import TransformerEmbedder
from toolkit.encoders.linear.model import load_linear
from toolkit.errors import LoomError


class LinearAttentionEmbedder(TransformerEmbedder):
    """`get_embedder("linear:/path")`: a converted encoder, length-sorted token-budget batches."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        token_budget: int | None = None,
        overlap: int = 32,
        max_length: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.path = Path(path)  # the converted model folder: `fingerprint` hashes its files
        self.model, self.tokenizer, self.meta = load_linear(path, self.device)
        self.name = f"linear:{path}"
        cfg = self.model.bert.config
        limit = self.model.max_length  # the teacher's table, or max_positions after conversion
        if max_length is not None and not 1 < int(max_length) <= limit:
            raise LoomError(
                f"max_length={max_length}: this encoder reads at most {limit} tokens; give "
                f"2..{limit} or None (longer texts are chunked by encode(long_text='chunk'))"
            )
        self.max_length = min(int(max_length or self.meta.get("max_length", limit)), limit)
        self.dim = int(cfg.hidden_size)
        self.normalize_output = bool(self.meta.get("normalize", True))
        self._setup_batching(token_budget, overlap)

    @torch.inference_mode()
    def forward_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, dim) float32 for padded ids and their mask."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self._autocast is not None:
            with torch.autocast("cuda", dtype=self._autocast):
                return self.model(ids, mask).float()
        return self.model(ids, mask).float()


def load_embedder(name: str, device: str, **kwargs: Any) -> LinearAttentionEmbedder:
    """The `toolkit.embed` registry's loader for "linear:/path" names."""
    return LinearAttentionEmbedder(model_folder(name, "linear:"), device=device, **kwargs)
