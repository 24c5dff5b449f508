"""`get_embedder("linear:/path")`: a converted linear-attention encoder behind the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from toolkit.device import resolve_device
from toolkit.embed.registry import model_folder
from toolkit.embed.transformer import TransformerEmbedder
from toolkit.encoders.linear.model import CONFIG_NAME, load_linear
from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

MIN_LENGTH = 3  # [CLS], one token, [SEP]


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
        saved = self.meta.get("max_length", limit)
        if not is_whole_number(saved) or saved < MIN_LENGTH:
            raise LoomError(
                f"{path}: {CONFIG_NAME} has max_length={saved!r}, not a number of tokens: "
                "convert the model again (or remove the key to use the position limit)"
            )
        # at least [CLS] + one token + [SEP]; 2.5 was read as 2 and "abc" was a ValueError
        if max_length is not None and (
            not is_whole_number(max_length) or not MIN_LENGTH <= max_length <= limit
        ):
            raise LoomError(
                f"max_length={max_length!r}: this encoder reads at most {limit} tokens; give "
                f"a whole number {MIN_LENGTH}..{limit} or None (longer texts are chunked by "
                "encode(long_text='chunk'))"
            )
        self.max_length = int(min(max_length or saved, limit))
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
