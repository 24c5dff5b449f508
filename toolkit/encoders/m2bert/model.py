"""M2-BERT (Monarch Mixer BERT): configuration, building blocks and the backbone model.

Sequence mixing is a gated, bidirectional long convolution whose filters are implicit
(positional features -> MLP with sine activations -> exponential decay), computed with an
FFT, plus a short depthwise convolution; dimension mixing is a GLU MLP whose matrices are
block-diagonal (Monarch) factors. The module and parameter names match the reference
implementation (HazyResearch/m2, `bert/src/bert_layers.py`) so the released
`m2-bert-80M-{2k,8k,32k}-retrieval` checkpoints load as they are.

Behaviour kept from the released retrieval models: the sentence embedding is the BERT
pooler on the first ([CLS]) position, tanh(dense(h[:, 0])); the mixer never looks at the
attention mask, so every text is padded to `long_conv_l_max` tokens (2k/8k/32k) exactly as
the reference inference code does, and the output depends on that padding.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.common import use_triton
from kernels.m2_mlp import bias_residual_layer_norm, blockdiag_mm, glu_gelu
from toolkit.encoders.m2bert.mixer import (  # noqa: F401 - public names, kept importable here
    CACHE_BYTES,
    HyenaFilter,
    MonarchMixerSequenceMixing,
    fft_long_conv,
    short_conv,
    weights_key,
)
from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "pytorch_model.pt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclass
class M2BertConfig:
    """The config.json fields M2-BERT reads (reference `BertConfig` names and defaults)."""

    vocab_size: int = 30528
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    max_position_embeddings: int = 32768
    long_conv_l_max: int | None = None
    type_vocab_size: int = 2
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12
    use_positional_encodings: bool = True
    monarch_mixer_sequence_mixing: bool = True
    residual_long_conv: bool = True
    bidirectional: bool = True
    hyena_w: float = 10.0
    hyena_w_mod: float = 1.0
    hyena_emb_dim: int = 5
    hyena_filter_order: int = 128
    hyena_training_additions: bool = False
    use_glu_mlp: bool = True
    use_monarch_mlp: bool = True
    monarch_mlp_nblocks: int = 4
    pool_all: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.long_conv_l_max is None:
            self.long_conv_l_max = self.max_position_embeddings

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> M2BertConfig:
        """Build from a config.json dict; keys M2-BERT does not read are kept in `extra`."""
        if not isinstance(d, dict):
            raise LoomError(
                f"config.json holds a {type(d).__name__}, not an object of settings: it is not "
                "an M2-BERT config"
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        for f in fields(cls):
            if f.name in known:
                check_field(f.name, str(f.type), known[f.name])
        cfg = cls(**known, extra={k: v for k, v in d.items() if k not in names})
        if not cfg.monarch_mixer_sequence_mixing:
            raise LoomError(
                "config.json has monarch_mixer_sequence_mixing=false: that is an attention "
                "BERT, not M2-BERT; load it as a sentence-transformers folder instead"
            )
        if cfg.hyena_emb_dim < 3 or cfg.hyena_emb_dim % 2 == 0:
            raise LoomError(f"config.json hyena_emb_dim={cfg.hyena_emb_dim}: must be odd and >= 3")
        return cfg

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> M2BertConfig:
        """Read `path/config.json`."""
        p = Path(path) / "config.json"
        if not p.is_file():
            raise LoomError(
                f"{path} has no config.json: an M2-BERT checkpoint folder holds config.json, "
                f"weights ({' or '.join(WEIGHT_FILES[:2])}) and a bert-base-uncased tokenizer"
            )
        try:
            d = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise LoomError(
                f"{p} is not valid JSON ({e}): restore the checkpoint's config.json"
            ) from e
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **d, "model_type": "m2_bert"}


def check_field(name: str, kind: str, value: Any) -> None:
    """A LoomError naming a config.json value of the wrong type (or a size below 1)."""
    if value is None and kind.endswith("| None"):
        return
    if kind.startswith("int"):
        ok = is_whole_number(value) and value >= (0 if name == "pad_token_id" else 1)
        want = "a whole number" + ("" if name == "pad_token_id" else " >= 1")
    elif kind == "float":
        ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif kind == "bool":
        ok, want = isinstance(value, bool), "true or false"
    else:
        return
    if not ok:
        raise LoomError(
            f"config.json {name}={value!r}: give {want}; check that config.json belongs to "
            "these weights"
        )


# ---------------------------------------------------------------- building blocks


class BlockdiagLinear(nn.Module):
    """Linear layer with a block-diagonal (one Monarch factor) weight, reference layout."""

    def __init__(self, in_features: int, out_features: int, nblocks: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        in_blk = math.ceil(in_features / nblocks)
        out_blk = math.ceil(out_features / nblocks)
        self.in_ext = in_blk * nblocks
        self.weight = nn.Parameter(torch.empty(nblocks, out_blk, in_blk))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_blk))
        self._blocks: tuple[tuple, list[torch.Tensor]] | None = None

    def blocks_t(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """The blocks transposed, (in_blk, out_blk) each, in `dtype`; kept until the weights
        change (`kernels.blockdiag_mm` input)."""
        key = weights_key(self, dtype)
        if self._blocks is None or self._blocks[0] != key:
            self._blocks = (key, [w.t().to(dtype).contiguous() for w in self.weight.detach()])
        return self._blocks[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.in_ext:
            x = F.pad(x, (0, self.in_ext - x.shape[-1]))
        out = kernels.blockdiag_matmul(x, self.weight.to(x.dtype))[..., : self.out_features]
        return out if self.bias is None else out + self.bias.to(out.dtype)


class M2MLP(nn.Module):
    """GLU (or plain) MLP with block-diagonal weights and post-LayerNorm residual."""

    #: inference runs `fused_forward` where it applies; False keeps the reference order
    fused = True

    def __init__(self, cfg: M2BertConfig) -> None:
        super().__init__()
        d, inter = cfg.hidden_size, cfg.intermediate_size
        self.glu = cfg.use_glu_mlp
        self.inter = inter

        def lin(i: int, o: int, bias: bool) -> nn.Module:
            if cfg.use_monarch_mlp:
                return BlockdiagLinear(i, o, cfg.monarch_mlp_nblocks, bias=bias)
            return nn.Linear(i, o, bias=bias)

        self.gated_layers = lin(d, inter * 2 if self.glu else inter, False)
        self.wo = lin(inter, d, True)
        self.layernorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.fused_ok(h):
            return self.fused_forward(h)
        x = self.gated_layers(h)
        if self.glu:
            x = F.gelu(x[..., : self.inter]) * x[..., self.inter :]
        else:
            x = F.gelu(x)
        return self.layernorm(self.wo(x) + h)

    def fused_ok(self, h: torch.Tensor) -> bool:
        """Inference on CUDA (or Triton's interpreter) with whole Monarch blocks: `fused_forward`."""
        blocks = (self.gated_layers, self.wo)
        return (
            self.fused
            and not (torch.is_grad_enabled() or self.training)
            and self.glu
            and all(isinstance(m, BlockdiagLinear) for m in blocks)
            and all(m.in_ext == m.in_features for m in blocks)
            and self.gated_layers.out_features == 2 * self.inter
            and use_triton("auto", h)
        )

    def fused_forward(self, h: torch.Tensor) -> torch.Tensor:
        """The same MLP with `kernels.m2_mlp`: no layout copies, glue in two passes."""
        autocast = h.is_cuda and torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda") if autocast else h.dtype
        d = h.shape[-1]
        flat = h.reshape(-1, d)
        x = blockdiag_mm(flat.to(dtype), self.gated_layers.blocks_t(dtype))
        x = glu_gelu(x[:, : 2 * self.inter])
        x = blockdiag_mm(x, self.wo.blocks_t(dtype))[:, :d]
        ln = self.layernorm
        y = bias_residual_layer_norm(
            x, self.wo.bias, flat, ln.weight, ln.bias, ln.eps,
            out_dtype=torch.float32 if autocast else h.dtype,
        )  # fmt: skip
        return y.reshape(h.shape)


class M2Layer(nn.Module):
    def __init__(self, cfg: M2BertConfig) -> None:
        super().__init__()
        self.attention = MonarchMixerSequenceMixing(cfg)
        self.mlp = M2MLP(cfg)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(h))


class M2Embeddings(nn.Module):
    def __init__(self, cfg: M2BertConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_token_id)
        self.use_positional_encodings = cfg.use_positional_encodings
        if self.use_positional_encodings:
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, d)
            self.register_buffer(
                "position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1))
            )
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        if self.use_positional_encodings:
            x = x + self.position_embeddings(self.position_ids[:, : input_ids.shape[1]])
        return self.LayerNorm(x)


class M2BertModel(nn.Module):
    """The M2-BERT backbone plus pooler; `state_dict()` keys match the reference `BertModel`."""

    def __init__(self, cfg: M2BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = M2Embeddings(cfg)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(M2Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence_output (B, L, H), pooled_output (B, H)); the mask only matters for pool_all."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder.layer:
            h = layer(h)
        if self.config.pool_all:
            m = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(
                h.dtype
            )
            first = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        else:
            first = h[:, 0]
        return h, torch.tanh(self.pooler.dense(first))
