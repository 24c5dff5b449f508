"""M2-BERT (Monarch Mixer BERT) for the embedding service.

- `model`: `M2BertConfig`, `M2BertModel` and its building blocks (reference names, so the
  released `m2-bert-80M-{2k,8k,32k}-retrieval` checkpoints load as they are);
- `checkpoint`: `load_m2bert`, `save_m2bert`, `load_tokenizer`, `normalize_state_dict`;
- `embedder`: `M2BertEmbedder`, loaded by `get_embedder("m2-bert:/path")`.
"""

from toolkit.encoders.m2bert.checkpoint import (
    load_m2bert,
    load_tokenizer,
    normalize_state_dict,
    save_m2bert,
)
from toolkit.encoders.m2bert.embedder import M2BertEmbedder, load_embedder
from toolkit.encoders.m2bert.model import (
    CACHE_BYTES,
    M2MLP,
    TOKENIZER_FILES,
    WEIGHT_FILES,
    BlockdiagLinear,
    HyenaFilter,
    M2BertConfig,
    M2BertModel,
    M2Embeddings,
    M2Layer,
    MonarchMixerSequenceMixing,
    fft_long_conv,
    short_conv,
)

__all__ = [
    "CACHE_BYTES",
    "TOKENIZER_FILES",
    "WEIGHT_FILES",
    "BlockdiagLinear",
    "HyenaFilter",
    "M2BertConfig",
    "M2BertEmbedder",
    "M2BertModel",
    "M2Embeddings",
    "M2Layer",
    "M2MLP",
    "MonarchMixerSequenceMixing",
    "fft_long_conv",
    "load_embedder",
    "load_m2bert",
    "load_tokenizer",
    "normalize_state_dict",
    "save_m2bert",
    "short_conv",
]
