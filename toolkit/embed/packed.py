"""A packed (unpadded) forward for BERT-family sentence encoders.

What GPU embedding services (Text Embeddings Inference, Infinity) do for BERT encoders: the
tokens of every text in a batch are concatenated into one (T, hidden) tensor, so no matrix
product touches a pad token; attention runs per text through variable-length flash attention
over `cu_seqlens` (the texts' cumulative lengths); pooling reduces each text's segment. The
layers are plain PyTorch over the Hugging Face model's own weights, cast once to fp16/bf16,
with the query/key/value projections fused into one matrix product.

`PackedBert.from_sentence_transformer` returns None (with the reason logged) for anything it
does not implement exactly (another architecture, relative positions, another activation or
pooling); the caller then keeps the standard sentence-transformers forward. Off CUDA (or
where varlen flash attention is missing) attention runs padded per batch through
`scaled_dot_product_attention` with a key mask, which is how the CPU tests check that the
packed layers equal the padded model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kernels.bert_ops import embed_layernorm, layer_norm, segment_ids, segment_mean
from kernels.bert_ops import packed_positions as positions
from kernels.common import HAS_TRITON

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max")
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class Layer:
    """One encoder layer's weights, the attention and feed-forward output biases folded away.

    `out_w` and `down_w` are stored transposed for `addmm`, which adds the residual inside
    the matrix product; their biases live in the LayerNorm before them (see `fold_biases`).
    """

    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    out_w: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor]
    up_w: torch.Tensor
    up_b: torch.Tensor
    down_w: torch.Tensor
    norm2: tuple[torch.Tensor, torch.Tensor]


def bert_weights(state: dict[str, torch.Tensor], n_layers: int) -> tuple[dict, list[dict]]:
    """float32 copies of a BertModel's weights: the embeddings and one dict per layer."""

    def get(name: str) -> torch.Tensor:
        return state[name].detach().float().clone()

    emb = {
        "word": get("embeddings.word_embeddings.weight"),
        "position": get("embeddings.position_embeddings.weight"),
        "type0": get("embeddings.token_type_embeddings.weight")[0],
        "norm_w": get("embeddings.LayerNorm.weight"),
        "norm_b": get("embeddings.LayerNorm.bias"),
    }
    layers = []
    for i in range(n_layers):
        p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention."
        qkv = [a + f"self.{x}" for x in ("query", "key", "value")]
        layers.append(
            {
                "qkv_w": torch.cat([get(q + ".weight") for q in qkv]),
                "qkv_b": torch.cat([get(q + ".bias") for q in qkv]),
                "out_w": get(a + "output.dense.weight"),
                "out_b": get(a + "output.dense.bias"),
                "norm1_w": get(a + "output.LayerNorm.weight"),
                "norm1_b": get(a + "output.LayerNorm.bias"),
                "up_w": get(p + "intermediate.dense.weight"),
                "up_b": get(p + "intermediate.dense.bias"),
                "down_w": get(p + "output.dense.weight"),
                "down_b": get(p + "output.dense.bias"),
                "norm2_w": get(p + "output.LayerNorm.weight"),
                "norm2_b": get(p + "output.LayerNorm.bias"),
            }
        )
    return emb, layers


def fold_biases(emb: dict, layers: list[dict]) -> None:
    """Move each output projection's bias into the LayerNorm before it (exact, in float32).

    A layer computes LN(att @ Wo^T + bo + x). With x' = x + bo (the previous LayerNorm's
    shift raised by bo) that is LN(att @ Wo^T + x'), one `addmm` with the residual inside;
    x' also feeds the QKV projection, so its bias drops by Wqkv @ bo. Likewise the
    feed-forward's bd moves into the first LayerNorm and the up projection's bias. The
    last layer's output LayerNorm is left as it is, so the hidden states come out unchanged.
    """
    previous = (emb, "norm_b")
    for layer in layers:
        holder, key = previous
        holder[key] = holder[key] + layer["out_b"]
        layer["qkv_b"] = layer["qkv_b"] - layer["qkv_w"] @ layer["out_b"]
        layer["norm1_b"] = layer["norm1_b"] + layer["down_b"]
        layer["up_b"] = layer["up_b"] - layer["up_w"] @ layer["down_b"]
        previous = (layer, "norm2_b")


def pooling_mode(pooling_module: Any) -> str | None:
    """The pooling a sentence-transformers Pooling module applies, if it is one of POOLINGS."""
    mode = getattr(pooling_module, "pooling_mode", None)
    if isinstance(mode, str):
        return mode if mode in POOLINGS else None
    flags = {
        "mean": getattr(pooling_module, "pooling_mode_mean_tokens", False),
        "cls": getattr(pooling_module, "pooling_mode_cls_token", False),
        "max": getattr(pooling_module, "pooling_mode_max_tokens", False),
    }
    others = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
    on = [k for k, v in flags.items() if v]
    if len(on) != 1 or any(getattr(pooling_module, o, False) for o in others):
        return None
    return on[0]


def flash_varlen() -> Any:
    """torch's public variable-length flash attention, or its aten op, or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn
    except ImportError:
        op = getattr(torch.ops.aten, "_flash_attention_forward", None)
        if op is None:
            return None

        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k):  # noqa: ANN001, ANN202
            return op(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, False, False)[0]

        return varlen_attn


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int
) -> torch.Tensor:
    """Attention per text through padded SDPA: (T, heads, d) in, (T, heads, d) out."""
    total, heads, dim = q.shape
    n = len(cu_seqlens) - 1
    seg = segment_ids(cu_seqlens, total)
    pos = positions(cu_seqlens, total)
    mask = torch.zeros(n, max_len, dtype=torch.bool, device=q.device)
    mask[seg, pos] = True

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(n, max_len, heads, dim)
        out[seg, pos] = x
        return out.transpose(1, 2)  # (n, heads, L, d)

    att = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=mask[:, None, None, :])
    return att.transpose(1, 2)[seg, pos]


class PackedBert:
    """A BERT encoder's forward over packed tokens, ending in the sentence pooling.

    Build it with `from_sentence_transformer`; call it with int ids (T,), int32 cu_seqlens
    (B + 1,) and the longest text's length; it returns float32 pooled vectors (B, hidden).
    """

    def __init__(
        self,
        embeddings: dict[str, torch.Tensor],
        layers: list[Layer],
        heads: int,
        eps: float,
        activation: str,
        pooling: str,
        use_flash: bool,
        normalize: bool = False,
    ) -> None:
        self.embeddings = embeddings
        self.layers = layers
        self.heads = heads
        self.eps = eps
        self.act = _ACTIVATIONS[activation]
        self.pooling = pooling
        self.normalize = normalize
        self.attention = flash_varlen() if use_flash else None
        # cuBLASLt's GELU epilogue (tanh form; the agreement check in `build_packed` guards it)
        self.fused_gelu = use_flash and activation == "gelu" and hasattr(torch, "_addmm_activation")
        # the glue (embeddings, LayerNorms, mean pooling) in one Triton pass each on CUDA
        self.fused_glue = use_flash and HAS_TRITON
        self.hidden = int(embeddings["word"].shape[1])

    @classmethod
    def from_sentence_transformer(
        cls, model: Any, device: str, dtype: torch.dtype = torch.float16
    ) -> PackedBert | None:
        """The packed forward of a [BertModel, Pooling(, Normalize)] model, or None."""
        modules = list(model)
        if len(modules) < 2 or len(modules) > 3:
            return cls._skip(f"{len(modules)} modules (expected Transformer, Pooling[, Normalize])")
        if len(modules) == 3 and type(modules[2]).__name__ != "Normalize":
            return cls._skip(f"third module is {type(modules[2]).__name__}")
        auto = getattr(modules[0], "auto_model", None)
        config = getattr(auto, "config", None)
        if config is None or getattr(config, "model_type", None) != "bert":
            return cls._skip(f"model type {getattr(config, 'model_type', None)!r} is not 'bert'")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return cls._skip("relative position embeddings")
        if config.hidden_act not in _ACTIVATIONS:
            return cls._skip(f"activation {config.hidden_act!r}")
        pooling = pooling_mode(modules[1])
        if pooling is None:
            return cls._skip("a pooling other than mean, cls or max")
        try:
            emb, raw = bert_weights(auto.state_dict(), config.num_hidden_layers)
        except KeyError as e:
            return cls._skip(f"weight {e} not found")
        fold_biases(emb, raw)

        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype).contiguous()

        embeddings = {k: put(v) for k, v in emb.items()}
        layers = [
            Layer(
                qkv_w=put(r["qkv_w"]),
                qkv_b=put(r["qkv_b"]),
                out_w=put(r["out_w"]).t(),
                norm1=(put(r["norm1_w"]), put(r["norm1_b"])),
                up_w=put(r["up_w"]),
                up_b=put(r["up_b"]),
                down_w=put(r["down_w"]).t(),
                norm2=(put(r["norm2_w"]), put(r["norm2_b"])),
            )
            for r in raw
        ]
        use_flash = device.startswith("cuda") and dtype in (torch.float16, torch.bfloat16)
        return cls(
            embeddings,
            layers,
            heads=int(config.num_attention_heads),
            eps=float(config.layer_norm_eps),
            activation=config.hidden_act,
            pooling=pooling,
            use_flash=use_flash and flash_varlen() is not None,
            normalize=len(modules) == 3,
        )

    @staticmethod
    def _skip(reason: str) -> None:
        logger.info("packed forward not used: %s; the standard forward runs", reason)
        return None

    def _up(self, x: torch.Tensor, layer: Layer) -> torch.Tensor:
        """The feed-forward's first half; on CUDA bias and GELU run in the product's epilogue."""
        if self.fused_gelu:
            return torch._addmm_activation(layer.up_b, x, layer.up_w.t(), use_gelu=True)
        return self.act(F.linear(x, layer.up_w, layer.up_b))

    @property
    def glue_backend(self) -> str:
        """kernels.bert_ops backend of the glue: Triton when `fused_glue`, else PyTorch."""
        return "auto" if self.fused_glue else "reference"

    def _norm(self, x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return layer_norm(x, wb[0], wb[1], self.eps, backend=self.glue_backend)

    def _attend(self, qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
        total = qkv.shape[0]
        q, k, v = qkv.view(total, 3, self.heads, -1).unbind(1)
        if self.attention is not None:
            out = self.attention(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)
        else:
            out = padded_attention(q, k, v, cu_seqlens, max_len)
        return out.reshape(total, self.hidden)

    def tokens(self, ids: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
        """Last hidden states (T, hidden) of the packed texts."""
        e = self.embeddings
        args = (e["word"], e["position"], e["type0"], e["norm_w"], e["norm_b"], self.eps)
        x = embed_layernorm(ids, cu_seqlens, max_len, *args, backend=self.glue_backend)
        for layer in self.layers:
            att = self._attend(F.linear(x, layer.qkv_w, layer.qkv_b), cu_seqlens, max_len)
            x = self._norm(torch.addmm(x, att, layer.out_w), layer.norm1)
            x = self._norm(torch.addmm(x, self._up(x, layer), layer.down_w), layer.norm2)
        return x

    def __call__(self, ids: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> torch.Tensor:
        """Pooled float32 sentence vectors (B, hidden), unit length if the model normalises."""
        x = self.tokens(ids, cu_seqlens, max_len)
        if self.pooling == "mean":  # the unit length comes out of the pooling pass
            return segment_mean(x, cu_seqlens, self.normalize, backend=self.glue_backend)
        out = self.pool(x, cu_seqlens)
        return F.normalize(out, dim=1) if self.normalize else out

    def pool(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        """Each text's pooled float32 vector from its packed token states."""
        n = len(cu_seqlens) - 1
        if self.pooling == "cls":
            return x[cu_seqlens[:-1].long()].float()
        if self.pooling == "mean":
            return segment_mean(x, cu_seqlens, backend=self.glue_backend)
        seg = segment_ids(cu_seqlens, x.shape[0])
        out = torch.full((n, self.hidden), float("-inf"), device=x.device)
        return out.scatter_reduce(0, seg[:, None].expand_as(x), x.float(), "amax")
