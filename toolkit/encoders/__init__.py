"""Efficient long-context encoders for the embedding service.

- `toolkit.encoders.m2bert` (modules model, checkpoint, embedder): M2-BERT (Monarch Mixer);
  loads the released `m2-bert-80M-{2k,8k,32k}-retrieval` checkpoint format;
  `get_embedder("m2-bert:/path")`.
- `toolkit.encoders.linear` (modules model, convert, embedder): converts a softmax-attention
  sentence encoder to linear attention (Hedgehog / BASED feature maps);
  `convert_to_linear(...)` and `get_embedder("linear:/path")`.
Submodules import torch; they are loaded only when used.
"""

from typing import Any

_EXPORTS = {
    "M2BertConfig": "m2bert",
    "M2BertModel": "m2bert",
    "M2BertEmbedder": "m2bert",
    "LinearAttentionEmbedder": "linear",
    "convert_to_linear": "linear",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"toolkit.encoders.{_EXPORTS[name]}"), name)
