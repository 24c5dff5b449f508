"""Linear-attention conversion of a pretrained softmax sentence encoder (Hedgehog / BASED).

`convert_to_linear` keeps every weight of a BERT-style sentence-transformers encoder (the
default MiniLM) and replaces each layer's softmax attention by linear attention through
`kernels.linear_attention`: out_i = phi(q_i) S / phi(q_i).z, with S = sum_j phi(k_j) v_j^T,
so time and memory grow linearly with the text length. Only the feature maps phi (and,
with a sliding window, one mixing gate per head) are trained:

1. attention distillation (Hedgehog's recipe): on the user's own texts, each layer's
   linear attention weights phi(q_i).phi(k_j) / sum_j' phi(q_i).phi(k_j') are fitted to
   the softmax attention weights of the original model by cross-entropy;
2. optionally a short end-to-end fine-tune of the same parameters so the converted
   encoder's sentence embeddings match the original's (cosine loss).

The result is a folder (the original model files plus `linear_attention.json` and
`feature_maps.safetensors`) that `get_embedder("linear:/path")` loads.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.reference import hedgehog_feature_map, taylor_feature_map
from toolkit.embed import (
    TransformerEmbedder,
    _special_tokens,
    _token_ids,
    get_embedder,
    resolve_device,
)
from toolkit.errors import LoomError

CONFIG_NAME = "linear_attention.json"
WEIGHTS_NAME = "feature_maps.safetensors"
FEATURE_MAPS = ("hedgehog", "taylor")
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

    def __init__(self, bert: nn.Module, layers: nn.ModuleList, pooling: str = "mean") -> None:
        super().__init__()
        self.bert = bert
        self.layers = layers
        self.pooling = pooling
        cfg = bert.config
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def qkv(self, layer: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sa = layer.attention.self
        return self._split(sa.query(h)), self._split(sa.key(h)), self._split(sa.value(h))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor, explicit: bool = False) -> torch.Tensor:
        """Last hidden states (B, N, hidden) with linear attention in every layer."""
        if not explicit and bool(mask.all()):
            mask = None  # one host sync per forward, not one per layer
        h = self.embed_tokens(ids)
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


def _pooling_mode(st: Any) -> tuple[str, bool]:
    """('mean' | 'cls', normalize) read from a SentenceTransformer's modules."""
    mode, normalize = "mean", False
    for module in st:
        name = type(module).__name__
        if name == "Pooling":
            m = getattr(module, "pooling_mode", None)
            if m is None:  # sentence-transformers < 5
                m = module.get_pooling_mode_str()
            m = m[0] if isinstance(m, list | tuple) and len(m) == 1 else m
            if m not in ("mean", "cls"):
                raise LoomError(
                    f"pooling mode {m!r} is not supported for conversion: use mean or cls"
                )
            mode = m
        elif name == "Normalize":
            normalize = True
    return mode, normalize


def _check_texts(texts: Any) -> list[str]:
    if texts is None or isinstance(texts, str):
        raise LoomError(
            "convert_to_linear needs texts=[...]: a list of your own texts (a few hundred "
            "is enough) on which the attention maps are distilled"
        )
    texts = [t for t in list(texts) if isinstance(t, str) and t.strip()]
    if len(texts) < 4:
        raise LoomError(f"texts: got {len(texts)} non-empty texts; give at least 4 (ideally 100+)")
    return texts


def convert_to_linear(
    model: Any = None,
    feature_map: str = "hedgehog",
    texts: Any = None,
    steps: int = 300,
    device: str | None = None,
    window: int | None = None,
    out: str | os.PathLike | None = None,
    feature_dim: int | None = None,
    finetune_steps: int = 300,
    batch_size: int = 16,
    train_length: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Convert a softmax sentence encoder to linear attention; returns the saved folder.

    model: None (default MiniLM), a local sentence-transformers folder, or an Embedder from
    `get_embedder`. feature_map: "hedgehog" (learned softmax features) or "taylor" (BASED's
    2nd-order Taylor map on a learned projection to feature_dim, default 16). window: add
    exact softmax attention over |i-j| < window, mixed in by a learned per-head gate.
    steps: attention-distillation steps (batches of `batch_size` texts of at most
    `train_length` tokens); finetune_steps: extra steps matching the original embeddings.
    out: the folder to write (default ./linear-<model>-<feature_map>).
    """
    from tqdm.auto import tqdm

    if feature_map not in FEATURE_MAPS:
        raise LoomError(f"feature_map={feature_map!r}: use one of {FEATURE_MAPS}")
    if steps < 0 or finetune_steps < 0:
        raise LoomError("steps and finetune_steps must be >= 0")
    if window is not None and window < 1:
        raise LoomError(f"window={window}: use a positive number of tokens or None")
    texts = _check_texts(texts)
    emb = model if isinstance(model, TransformerEmbedder) else get_embedder(model, device)
    if not isinstance(emb, TransformerEmbedder):
        raise LoomError(
            f"{emb.name}: only a local sentence-transformers (BERT-style) encoder can be "
            "converted, not a server or an already efficient encoder"
        )
    st = emb.model
    bert = st[0].auto_model
    if not all(hasattr(layer, "attention") for layer in getattr(bert.encoder, "layer", [])):
        raise LoomError(f"{emb.name}: not a BERT-style encoder (no encoder.layer[i].attention)")
    dev = emb.device
    tok = emb.tokenizer
    pooling, normalize = _pooling_mode(st)
    cfg = bert.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    layers = nn.ModuleList(
        LinearAttentionLayer(heads, head_dim, feature_map, feature_dim, window, seed=seed + i)
        for i in range(cfg.num_hidden_layers)
    ).to(dev)
    student = LinearBert(bert, layers, pooling)
    out_dir = Path(out) if out else Path.cwd() / f"linear-{Path(emb.name).name}-{feature_map}"
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise LoomError(f"{out_dir} exists and is not empty: give another out= or overwrite=True")

    prefix, suffix = _special_tokens(tok)
    width = train_length - len(prefix) - len(suffix)
    ids_all = [prefix + ids[:width] + suffix for ids in _token_ids(tok, texts)]
    rng = random.Random(seed)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        rows = rng.sample(ids_all, min(batch_size, len(ids_all)))
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(dev), mask.to(dev)

    was_training = bert.training
    grads = [p.requires_grad for p in bert.parameters()]
    bert.eval()
    for p in bert.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(layers.parameters(), lr=lr)
    history: dict[str, list[float]] = {"distill": [], "finetune": []}
    started = time.perf_counter()
    try:
        bar = tqdm(range(steps), desc=f"distill {feature_map}", disable=not show_progress)
        for _ in bar:
            ids, mask = batch()
            loss = _distill_loss(student, ids, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history["distill"].append(loss.item())
            bar.set_postfix(loss=f"{history['distill'][-1]:.3f}")
        if finetune_steps:
            opt = torch.optim.Adam(layers.parameters(), lr=lr / 10)
            bar = tqdm(range(finetune_steps), desc="fine-tune", disable=not show_progress)
            for _ in bar:
                ids, mask = batch()
                with torch.no_grad():
                    target = pool(
                        bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask, pooling
                    )
                pred = student(ids, mask, explicit=True)
                loss = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                history["finetune"].append(loss.item())
                bar.set_postfix(loss=f"{history['finetune'][-1]:.4f}")
    finally:
        for p, g in zip(bert.parameters(), grads):
            p.requires_grad_(g)
        bert.train(was_training)

    meta = {
        "format": 1,
        "source": emb.name,
        "feature_map": feature_map,
        "feature_dim": layers[0].feature_dim,
        "window": window,
        "pooling": pooling,
        "normalize": normalize,
        "max_length": int(cfg.max_position_embeddings),
        "train": {
            "texts": len(texts),
            "steps": steps,
            "finetune_steps": finetune_steps,
            "batch_size": batch_size,
            "train_length": train_length,
            "lr": lr,
            "seed": seed,
            "seconds": round(time.perf_counter() - started, 1),
            "distill_loss_first": history["distill"][:1],
            "distill_loss_last": float(np.mean(history["distill"][-10:]))
            if history["distill"]
            else None,
            "finetune_loss_last": float(np.mean(history["finetune"][-10:]))
            if history["finetune"]
            else None,
        },
    }
    save_linear(student, tok, out_dir, meta)
    return out_dir


def _distill_loss(student: LinearBert, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of CE(softmax attention, linear attention), on the teacher's q, k."""
    bert = student.bert
    with torch.no_grad():
        hs = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    keym = mask.float()
    rows = keym[:, None, :, None]
    total = ids.new_zeros((), dtype=torch.float32)
    for i, (layer, lin) in enumerate(zip(bert.encoder.layer, student.layers)):
        with torch.no_grad():
            q, k, _ = student.qkv(layer, hs[i])
            s = torch.einsum("bhid,bhjd->bhij", q.float(), k.float()) / math.sqrt(q.shape[-1])
            s = s.masked_fill(keym[:, None, None, :] == 0, float("-inf"))
            target = torch.softmax(s, dim=-1)
        pred = lin.attention_weights(q, k, keym)
        ce = -(target * torch.log(pred.clamp_min(1e-9))).sum(-1, keepdim=True)
        total = total + (ce * rows).sum() / (rows.sum() * q.shape[1])
    return total / len(student.layers)


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
    meta = json.loads(meta_file.read_text())
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler's load report is noise here
    try:
        bert = AutoModel.from_pretrained(str(path))
    finally:
        hf_logging.set_verbosity(level)
    tok = AutoTokenizer.from_pretrained(str(path))
    cfg = bert.config
    heads = cfg.num_attention_heads
    layers = nn.ModuleList(
        LinearAttentionLayer(
            heads,
            cfg.hidden_size // heads,
            meta["feature_map"],
            meta["feature_dim"],
            meta.get("window"),
        )
        for _ in range(cfg.num_hidden_layers)
    )
    state = load_file(str(path / WEIGHTS_NAME))
    missing, unexpected = layers.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LoomError(
            f"{path / WEIGHTS_NAME} does not match {CONFIG_NAME}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model = LinearBert(bert, layers, meta.get("pooling", "mean")).to(device).eval()
    return model, tok, meta


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
        self.model, self.tokenizer, self.meta = load_linear(path, self.device)
        self.name = f"linear:{path}"
        cfg = self.model.bert.config
        limit = int(cfg.max_position_embeddings)
        self.max_length = min(int(max_length or self.meta.get("max_length", limit)), limit)
        self.dim = int(cfg.hidden_size)
        self.normalize_output = bool(self.meta.get("normalize", True))
        on_gpu = self.device.startswith("cuda")
        self.token_budget = token_budget or (131072 if on_gpu else 8192)
        self.max_rows = 1024 if on_gpu else 128
        self.overlap = overlap
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        self._n_special = len(self._prefix) + len(self._suffix)
        self._autocast = torch.float16 if on_gpu else None
        self._lock = threading.Lock()

    @torch.inference_mode()
    def forward_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, dim) float32 for padded ids and their mask."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self._autocast is not None:
            with torch.autocast("cuda", dtype=self._autocast):
                return self.model(ids, mask).float()
        return self.model(ids, mask).float()
