"""Linear-attention conversion of a pretrained softmax sentence encoder (Hedgehog / BASED).

- `model`: `LinearAttentionLayer`, `LinearBert` and the converted folder format
  (`save_linear`, `load_linear`);
- `convert`: `convert_to_linear`, attention distillation plus an optional fine-tune;
- `embedder`: `LinearAttentionEmbedder`, loaded by `get_embedder("linear:/path")`;
- `positions`: reading the teacher's position table past its length (long inputs).
"""

from toolkit.encoders.linear.convert import convert_to_linear
from toolkit.encoders.linear.embedder import LinearAttentionEmbedder, load_embedder
from toolkit.encoders.linear.model import (
    CONFIG_NAME,
    FEATURE_MAPS,
    WEIGHTS_NAME,
    LinearAttentionLayer,
    LinearBert,
    load_linear,
    pool,
    save_linear,
)
from toolkit.encoders.linear.positions import POSITION_MODES

__all__ = [
    "CONFIG_NAME",
    "FEATURE_MAPS",
    "POSITION_MODES",
    "WEIGHTS_NAME",
    "LinearAttentionEmbedder",
    "LinearAttentionLayer",
    "LinearBert",
    "convert_to_linear",
    "load_embedder",
    "load_linear",
    "pool",
    "save_linear",
]
