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

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.embed.base import check_texts
from toolkit.embed.registry import get_embedder
from toolkit.embed.tokens import special_tokens, token_ids
from toolkit.embed.transformer import TransformerEmbedder
from toolkit.encoders.linear.model import (
    FEATURE_MAPS,
    LinearAttentionLayer,
    LinearBert,
    pool,
    save_linear,
)
from toolkit.encoders.linear.positions import POSITION_MODES
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress, resolve_progress
from toolkit.validate import is_whole_number

DEFAULT_MAX_POSITIONS = 4096  # longest input of a converted encoder, unless max_positions=


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
    # a non-str entry (None, bytes, a number) is named, as encode() does; before, such entries
    # were dropped without a word and a list of bytes read as "0 non-empty texts"
    texts = [t for t in check_texts(texts) if t.strip()]
    if len(texts) < 4:
        raise LoomError(f"texts: got {len(texts)} non-empty texts; give at least 4 (ideally 100+)")
    return texts


def _check_options(**opts: Any) -> None:
    """A LoomError naming the first option of the wrong type or range (before any work)."""
    minimum = {"steps": 0, "finetune_steps": 0, "batch_size": 1, "train_length": 3}
    for key, low in minimum.items():
        value = opts[key]
        if not is_whole_number(value) or value < low:
            raise LoomError(f"{key}={value!r}: give a whole number >= {low}")
    for key in ("feature_dim", "window"):
        value = opts[key]
        if value is not None and (not is_whole_number(value) or value < 1):
            raise LoomError(f"{key}={value!r}: give a positive whole number or None")
    lr = opts["lr"]
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise LoomError(f"lr={lr!r}: give a positive learning rate, e.g. 1e-2")
    if not is_whole_number(opts["seed"]):
        raise LoomError(f"seed={opts['seed']!r}: give a whole number")
    out = opts["out"]
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise LoomError(f"out={str(out)!r} is not a folder: give a new or empty folder")


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
    progress: bool | None = None,
    show_progress: bool | None = None,
    *,
    positions: str = "interpolate",
    max_positions: int | None = None,
) -> Path:
    """Convert a softmax sentence encoder to linear attention; returns the saved folder.

    model: None (default MiniLM), a local sentence-transformers folder, or an Embedder from
    `get_embedder`. feature_map: "hedgehog" (learned softmax features) or "taylor" (BASED's
    2nd-order Taylor map on a learned projection to feature_dim, default 16). window: add
    exact softmax attention over |i-j| < window, mixed in by a learned per-head gate.
    steps: attention-distillation steps (batches of `batch_size` texts of at most
    `train_length` tokens); finetune_steps: extra steps matching the original embeddings.
    out: the folder to write (default ./linear-<model>-<feature_map>).
    positions: how inputs longer than the teacher's position table (512 for MiniLM) are
    read: "interpolate" (default; a text of n > 512 tokens reads the table at p * 511/(n-1),
    shorter texts exactly as the teacher), "tile" (row p mod 512) or "none" (the teacher's
    cap). max_positions: the longest input in tokens (default 4096; with "none", the
    table's length); `get_embedder("linear:...").encode` chunks longer texts (long_text=).
    progress: progress bars (None: on in notebooks and terminals); `show_progress=` is the
    deprecated spelling.
    """
    from tqdm.auto import tqdm

    progress = deprecated_progress(progress, "show_progress", show_progress, "convert_to_linear")
    bar_on = resolve_progress(progress)

    if feature_map not in FEATURE_MAPS:
        raise LoomError(f"feature_map={feature_map!r}: use one of {FEATURE_MAPS}")
    _check_options(
        steps=steps,
        finetune_steps=finetune_steps,
        batch_size=batch_size,
        train_length=train_length,
        feature_dim=feature_dim,
        window=window,
        lr=lr,
        seed=seed,
        out=out,
    )
    if positions not in POSITION_MODES:
        raise LoomError(f"positions={positions!r}: use one of {POSITION_MODES}")
    if max_positions is None and positions != "none":
        max_positions = DEFAULT_MAX_POSITIONS
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
    student = LinearBert(bert, layers, pooling, positions=positions, max_positions=max_positions)
    if train_length > student.table_length:
        raise LoomError(
            f"train_length={train_length}: distillation runs the teacher, which reads at most "
            f"{student.table_length} tokens; use train_length <= {student.table_length}"
        )
    out_dir = Path(out) if out else Path.cwd() / f"linear-{Path(emb.name).name}-{feature_map}"
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise LoomError(f"{out_dir} exists and is not empty: give another out= or overwrite=True")

    prefix, suffix = special_tokens(tok)
    width = train_length - len(prefix) - len(suffix)
    if width < 1:
        raise LoomError(
            f"train_length={train_length}: leaves no room for text after the "
            f"{len(prefix) + len(suffix)} special tokens; use a larger train_length"
        )
    ids_all = [prefix + ids[:width] + suffix for ids in token_ids(tok, texts)]
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
        bar = tqdm(range(steps), desc=f"distill {feature_map}", disable=not bar_on)
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
            bar = tqdm(range(finetune_steps), desc="fine-tune", disable=not bar_on)
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
        "format": 2,
        "source": emb.name,
        "feature_map": feature_map,
        "feature_dim": layers[0].feature_dim,
        "window": window,
        "pooling": pooling,
        "normalize": normalize,
        "max_length": student.max_length,
        "positions": positions,
        "max_positions": student.max_length,
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
