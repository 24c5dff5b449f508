"""Linear-attention layers and the converted-encoder folder format (save / load).

`LinearAttentionLayer` replaces one BERT layer's softmax attention by linear attention
through `kernels.linear_attention`: out_i = phi(q_i) S / phi(q_i).z, with
S = sum_j phi(k_j) v_j^T, with learned feature maps phi (Hedgehog or BASED's Taylor map) and
an optional sliding window of exact softmax attention mixed in by a per-head gate.
`LinearBert` runs a HF BERT encoder layer by layer with these layers. A converted encoder is
a folder holding the original model files plus `linear_attention.json` and
`feature_maps.safetensors`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import kernels
from kernels.reference import hedgehog_feature_map, taylor_feature_map
from toolkit.encoders.linear.positions import check_positions, embed_long, position_embeddings
from toolkit.errors import LoomError

CONFIG_NAME = "linear_attention.json"
WEIGHTS_NAME = "feature_maps.safetensors"
FEATURE_MAPS = ("hedgehog", "taylor")
POOLING_MODES = ("mean", "cls")
# kernels that take key_mask leave padded keys out in one batched call
_KEY_MASK = all(
    "key_mask" in inspect.signature(f).parameters
    for f in (kernels.linear_attention, kernels.sliding_window_attention)
)


class LinearAttentionLayer(nn.Module):
    """Feature map (and optional sliding-window gate) replacing one layer's softmax attention."""

    def __init__(
        self,
        heads: int,
        head_dim: int,
        feature_map: str = "hedgehog",
        feature_dim: int | None = None,
        window: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if feature_map not in FEATURE_MAPS:
            raise LoomError(f"feature_map={feature_map!r}: use one of {FEATURE_MAPS}")
        self.heads, self.head_dim = heads, head_dim
        self.feature_map = feature_map
        g = torch.Generator().manual_seed(seed)
        if feature_map == "hedgehog":
            f = feature_dim or head_dim
            w = torch.randn(heads, head_dim, f, generator=g) * 0.01
            w[:, : min(f, head_dim), : min(f, head_dim)] += torch.eye(min(f, head_dim))
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(torch.zeros(heads, f))
        else:
            f = feature_dim or 16
            q, _ = torch.linalg.qr(torch.randn(heads, head_dim, head_dim, generator=g))
            # orthonormal projection to f dims, scaled so phi(q).phi(k) ~ exp(q.k / sqrt(d))
            self.weight = nn.Parameter(q[:, :, :f] * (f / head_dim) ** 0.25)
            self.bias = None
        self.feature_dim = f
        self.window = int(window) if window else None
        self.gate = nn.Parameter(torch.zeros(heads)) if self.window else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x) for x (B, H, N, d)."""
        if self.feature_map == "hedgehog":
            return hedgehog_feature_map(x, self.weight, self.bias)
        return taylor_feature_map(torch.einsum("bhnd,hdf->bhnf", x, self.weight.to(x.dtype)))

    def attention_weights(
        self, q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Explicit (B, H, N, N) weights, for distillation on short texts."""
        fq, fk = self.features(q.float()), self.features(k.float())
        a = torch.einsum("bhif,bhjf->bhij", fq, fk) * key_mask[:, None, None, :]
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        if self.window is None:
            return a
        n = q.shape[2]
        idx = torch.arange(n, device=q.device)
        band = (idx[:, None] - idx[None, :]).abs() < self.window
        s = torch.einsum("bhid,bhjd->bhij", q.float(), k.float()) / math.sqrt(q.shape[-1])
        ok = band[None, None] & key_mask[:, None, None, :].bool()
        w = torch.softmax(s.masked_fill(~ok, float("-inf")), dim=-1).nan_to_num(0.0)
        gate = torch.sigmoid(self.gate)[None, :, None, None]
        return gate * w + (1 - gate) * a

    def _one(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if key_mask is None else {"key_mask": key_mask}
        if self.feature_map == "hedgehog":
            out = kernels.linear_attention(
                q, k, v, "hedgehog", hedgehog_weight=self.weight, hedgehog_bias=self.bias, **extra
            )
        else:
            w = self.weight.to(q.dtype)
            qp = torch.einsum("bhnd,hdf->bhnf", q, w)
            kp = torch.einsum("bhnd,hdf->bhnf", k, w)
            out = kernels.linear_attention(qp, kp, v, "taylor", **extra)
        if self.window is None:
            return out
        local = kernels.sliding_window_attention(q, k, v, self.window, causal=False, **extra)
        gate = torch.sigmoid(self.gate).to(out.dtype)[None, :, None, None]
        return gate * local + (1 - gate) * out

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        explicit: bool = False,
    ) -> torch.Tensor:
        """q, k, v (B, H, N, d) -> (B, H, N, d); mask (B, N) marks real tokens (None: all).

        explicit=True multiplies the (B, H, N, N) weights by v: quadratic, for training on
        short padded batches. Otherwise the kernels run in linear time; padded keys are left
        out through their key_mask, or (older kernels) each padded row runs on its own length.
        """
        if explicit:
            m = torch.ones(q.shape[0], q.shape[2], device=q.device) if mask is None else mask
            w = self.attention_weights(q, k, m.float())
            return torch.einsum("bhij,bhjd->bhid", w, v.float()).to(v.dtype)
        if mask is None or bool(mask.all()):
            return self._one(q, k, v)
        if _KEY_MASK:
            return self._one(q, k, v, mask)
        out = torch.zeros_like(v)
        for r, n in enumerate(mask.sum(1).tolist()):
            n = int(n)
            out[r : r + 1, :, :n] = self._one(
                q[r : r + 1, :, :n], k[r : r + 1, :, :n], v[r : r + 1, :, :n]
            )
        return out


class LinearBert(nn.Module):
    """A HF BERT encoder run layer by layer with linear attention in place of softmax."""

    def __init__(
        self,
        bert: nn.Module,
        layers: nn.ModuleList,
        pooling: str = "mean",
        *,
        positions: str = "none",
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:  # anything else was pooled as "mean" without a word
            raise LoomError(f"pooling={pooling!r}: use one of {POOLING_MODES}")
        self.bert = bert
        self.layers = layers
        self.pooling = pooling
        cfg = bert.config
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.table_length = int(bert.embeddings.position_embeddings.weight.shape[0])
        self.positions = positions
        # the longest input, special tokens included (`toolkit.encoders.linear.positions`)
        self.max_length = check_positions(positions, max_positions, self.table_length)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def qkv(self, layer: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sa = layer.attention.self
        return self._split(sa.query(h)), self._split(sa.key(h)), self._split(sa.value(h))

    def embed_tokens(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token + position embeddings (B, N, hidden); mask (B, N) marks real tokens (None: all).

        Inputs within the teacher's position table take the teacher's own path; longer ones
        read the table as `positions` says, up to `max_length` tokens, and beyond it raise.
        """
        n = ids.shape[1]
        if n > self.max_length:
            more = (
                "convert with positions='interpolate' and a larger max_positions="
                if self.positions == "none"
                else "convert with a larger max_positions="
            )
            raise LoomError(
                f"input of {n} tokens is longer than this encoder's {self.max_length} positions: "
                f"split it (the embedder's encode(long_text='chunk') does) or {more}"
            )
        if n <= self.table_length:
            return self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        lengths = ids.new_full((ids.shape[0],), n) if mask is None else mask.sum(1)
        table = self.bert.embeddings.position_embeddings.weight
        return embed_long(
            self.bert.embeddings, ids, position_embeddings(table, lengths, n, self.positions)
        )

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor, explicit: bool = False) -> torch.Tensor:
        """Last hidden states (B, N, hidden) with linear attention in every layer."""
        h = self.embed_tokens(ids, mask)
        if not explicit and bool(mask.all()):
            mask = None  # one host sync per forward, not one per layer
        for layer, lin in zip(self.bert.encoder.layer, self.layers):
            q, k, v = self.qkv(layer, h)
            ctx = lin(q, k, v, mask, explicit).transpose(1, 2).reshape(h.shape)
            att = layer.attention.output
            h = att.LayerNorm(att.dense(ctx.to(h.dtype)) + h)
            h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(h)) + h)
        return h

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, explicit: bool = False
    ) -> torch.Tensor:
        """Sentence embeddings (B, hidden), pooled as the original model pools (not normalised)."""
        return pool(self.hidden(ids, mask, explicit), mask, self.pooling)


def pool(h: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "cls":
        return h[:, 0]
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)


def save_linear(student: LinearBert, tokenizer: Any, path: Path, meta: dict[str, Any]) -> Path:
    """Write the base model, tokenizer, feature maps and linear_attention.json to `path`."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    student.bert.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    state = {k: v.detach().cpu().contiguous() for k, v in student.layers.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME))
    (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
    return path


def read_meta(meta_file: Path) -> dict[str, Any]:
    """`linear_attention.json`, checked: an object with a feature_map."""
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LoomError(f"{meta_file} is not valid JSON ({e}): convert the model again") from e
    if not isinstance(meta, dict) or "feature_map" not in meta:
        raise LoomError(
            f"{meta_file} has no feature_map: it is not written by convert_to_linear; "
            "convert the model again"
        )
    return meta


def load_linear(path: str | os.PathLike, device: str = "cpu") -> tuple[LinearBert, Any, dict]:
    """(LinearBert, tokenizer, meta) from a folder written by `convert_to_linear`."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    meta_file = path / CONFIG_NAME
    if not meta_file.is_file():
        raise LoomError(
            f"{path} has no {CONFIG_NAME}: it is not a converted encoder; make one with "
            "toolkit.embed.convert_to_linear(model, texts=...)"
        )
    meta = read_meta(meta_file)
    if not (path / WEIGHTS_NAME).is_file():
        raise LoomError(f"{path} has no {WEIGHTS_NAME}: copy the whole converted folder")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler's load report is noise here
    try:
        bert = AutoModel.from_pretrained(str(path))
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise LoomError(
            f"{path}: cannot load the base model or tokenizer next to {CONFIG_NAME} "
            f"({str(e)[:200]}): copy the whole converted folder"
        ) from e
    finally:
        hf_logging.set_verbosity(level)
    cfg = bert.config
    heads = cfg.num_attention_heads
    layers = nn.ModuleList(
        LinearAttentionLayer(
            heads,
            cfg.hidden_size // heads,
            meta["feature_map"],
            meta.get("feature_dim"),
            meta.get("window"),
        )
        for _ in range(cfg.num_hidden_layers)
    )
    try:
        state = load_file(str(path / WEIGHTS_NAME))
        missing, unexpected = layers.load_state_dict(state, strict=False)
    except Exception as e:  # noqa: BLE001 - damaged file or other shapes: one clear message
        raise LoomError(
            f"{path / WEIGHTS_NAME} does not match {CONFIG_NAME} ({str(e)[:300]}): the "
            "folder's files come from different conversions; convert again"
        ) from e
    if missing or unexpected:
        raise LoomError(
            f"{path / WEIGHTS_NAME} does not match {CONFIG_NAME}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; convert again"
        )
    model = LinearBert(
        bert,
        layers,
        meta.get("pooling", "mean"),
        positions=meta.get("positions", "none"),  # folders from before format 2: the cap
        max_positions=meta.get("max_positions"),
    )
    model = model.to(device).eval()
    return model, tok, meta
