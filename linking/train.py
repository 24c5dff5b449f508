"""Contrastive fine-tuning of the linking encoder on user-labelled matches.

MultipleNegativesRankingLoss from sentence-transformers: every other positive in a batch
is a negative (in-batch negatives), as in LinkTransformer. The base model comes from the
shared embedding service (a private copy is trained), and the result is a local
sentence-transformers folder usable as `model=` everywhere and by `get_embedder(path)`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from linking.keys import as_columns, check_has, key_texts
from toolkit.embed import forget_embedder, get_embedder
from toolkit.errors import LoomError
from toolkit.index import VectorIndex
from toolkit.progress import deprecated_progress, resolve_progress

logger = logging.getLogger(__name__)


def skipped(count: int, total: int, why: str) -> None:
    """Say how many training rows or pairs were left out, and why (never silently)."""
    if count:
        logger.warning("train: %d of %d rows/pairs left out: %s", count, total, why)


def _pairs_from_input(
    pairs: Any,
    columns: Sequence[str] | None,
    cluster_col: str | None,
    on: Any,
) -> tuple[list[str], list[str], list[Any]]:
    """(anchor texts, positive texts, group ids) from pairs or from rows with cluster ids."""
    if isinstance(pairs, pd.DataFrame):
        if cluster_col is not None:
            check_has(pairs, [cluster_col], "pairs")
            cols = as_columns(on, "on") or ["text"]
            check_has(pairs, cols, "pairs")
            texts, empty = key_texts(pairs, cols)
            groups: dict[Any, list[str]] = {}
            ids = pairs[cluster_col].tolist()
            for t, e, g in zip(texts, empty, ids):
                if not e and not pd.isna(g):
                    groups.setdefault(g, []).append(t)
            skipped(int(sum(pd.isna(g) for g in ids)), len(ids), f"no {cluster_col!r} (NaN)")
            skipped(
                int(sum(e and not pd.isna(g) for e, g in zip(empty, ids))), len(ids), "empty text"
            )
            a, b, gid = [], [], []
            for g, members in groups.items():
                members = list(dict.fromkeys(members))
                for i in range(len(members)):
                    for j in range(i + 1, len(members)):
                        a.append(members[i])
                        b.append(members[j])
                        gid.append(g)
            return a, b, gid
        cols = list(columns) if columns is not None else list(pairs.columns)
        if len(cols) != 2:
            raise LoomError(
                f"pairs has columns {list(map(str, pairs.columns))}: give columns=(a, b) naming "
                "the two text columns of each matching pair, or cluster_col= for cluster ids"
            )
        check_has(pairs, cols, "pairs")
        ta, ea = key_texts(pairs, [cols[0]])
        tb, eb = key_texts(pairs, [cols[1]])
        keep = ~(ea | eb)
        skipped(int((~keep).sum()), len(keep), "an empty text")
        a = [t for t, k in zip(ta, keep) if k]
        b = [t for t, k in zip(tb, keep) if k]
        return a, b, list(range(len(a)))
    try:
        items = [tuple(p) for p in pairs]
    except TypeError as e:
        raise LoomError("pairs must be a DataFrame or a list of (text_a, text_b) tuples") from e
    if any(len(p) != 2 or not all(isinstance(x, str) for x in p) for p in items):
        raise LoomError("every pair must be two strings (text_a, text_b)")
    kept = [p for p in items if p[0].strip() and p[1].strip()]
    skipped(len(items) - len(kept), len(items), "an empty text")
    items = kept
    return [p[0] for p in items], [p[1] for p in items], list(range(len(items)))


def retrieval_eval(
    embedder: Any,
    anchors: list[str],
    positives: list[str],
    groups: list[Any] | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Top-1 accuracy and MRR of retrieving, for each anchor, a text of its own group
    (its positive, or any member of its cluster) among all positives."""
    if not anchors:
        return {"top1": float("nan"), "mrr": float("nan"), "n": 0}
    groups = list(range(len(anchors))) if groups is None else list(groups)
    qa = embedder.encode(anchors)
    distinct = list(dict.fromkeys(positives))
    first_group: dict[str, Any] = {}
    for p, g in zip(positives, groups):
        first_group.setdefault(p, g)
    codes = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    dgroup = np.array([codes[first_group[p]] for p in distinct])
    vi = VectorIndex(embedder.dim, "cosine", device=device).add(embedder.encode(distinct))
    k = min(10, len(distinct))
    _, ids = vi.search(qa, k)
    target = np.array([codes[g] for g in groups])[:, None]
    hit = (ids >= 0) & (dgroup[np.maximum(ids, 0)] == target)
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    mrr = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)
    return {"top1": float((rank == 1).mean()), "mrr": float(mrr.mean()), "n": len(anchors)}


class _Wrapped:
    """A SentenceTransformer being trained, seen through the Embedder interface for eval."""

    def __init__(self, st: Any) -> None:
        self.st = st
        get_dim = getattr(st, "get_embedding_dimension", None) or (
            st.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        return self.st.encode(
            texts,
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32)


def _to(features: dict, device: str) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def _batches(groups: list[Any], texts: list[str], batch_size: int, rng: random.Random) -> list:
    """Shuffled batches with no group (or text) twice in one batch: no false negatives.

    Pairs that clash with a batch wait for a later one (passes over the waiting pairs until
    none can be placed), so every pair is used unless all that remain share one group/text."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    while order:
        pending: list[int] = []
        current: list[int] = []
        seen: set = set()
        placed = False
        for i in order:
            key = (groups[i],)
            if key in seen or texts[i] in seen:
                pending.append(i)
                continue
            current.append(i)
            seen.update({key, texts[i]})
            if len(current) == batch_size:
                batches.append(current)
                current, seen, placed = [], set(), True
        if len(current) > 1:
            batches.append(current)
            placed = True
        else:
            pending = current + pending
        if not placed:
            break
        order = pending
    return batches


def train(
    pairs: Any,
    base_model: str | os.PathLike | None = None,
    epochs: int = 1,
    output_dir: str | os.PathLike | None = None,
    columns: Sequence[str] | None = None,
    cluster_col: str | None = None,
    on: str | Sequence[str] | None = None,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    eval_fraction: float = 0.2,
    eval_pairs: Any = None,
    device: str | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool | None = None,
    *,
    verbose: bool | None = None,
) -> Path:
    """Fine-tune a sentence encoder on matching pairs; returns the saved model folder.

    pairs: a DataFrame with two text columns (or `columns=(a, b)`), a list of (a, b)
    string tuples, or rows with a cluster id (`cluster_col=`, texts from `on=`, default
    "text") from which all same-cluster pairs are built. `eval_fraction` of the pairs (or
    `eval_pairs`) is held out; retrieval top-1 accuracy / MRR on it is logged (INFO) before
    and after training and saved in `<output_dir>/linking_train.json`. progress: a progress
    bar (None: on in notebooks and terminals); verbose= is the deprecated spelling.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )

    progress = resolve_progress(deprecated_progress(progress, "verbose", verbose, "train"))
    if not isinstance(epochs, int) or epochs < 1:
        raise LoomError(f"epochs={epochs!r}: give a positive integer")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
        raise LoomError(
            f"batch_size={batch_size!r}: give an integer >= 2 (in-batch negatives need other pairs)"
        )
    if not isinstance(eval_fraction, int | float) or not 0.0 <= eval_fraction < 1.0:
        raise LoomError(
            f"eval_fraction={eval_fraction!r}: give the share of pairs held out for the "
            "before/after score, a number in [0, 1) (0 holds none out)"
        )
    a, b, gid = _pairs_from_input(pairs, columns, cluster_col, on)
    if len(a) < 2:
        raise LoomError(f"train needs at least 2 matching pairs, got {len(a)}")
    rng = random.Random(seed)
    if eval_pairs is not None:
        ea, eb, eg = _pairs_from_input(eval_pairs, columns, cluster_col, on)
        ta, tb, tg = a, b, gid
    else:
        groups = list(dict.fromkeys(gid))
        rng.shuffle(groups)
        n_eval = int(round(len(groups) * eval_fraction)) if len(groups) >= 10 else 0
        held = set(groups[:n_eval])
        ea = [x for x, g in zip(a, gid) if g in held]
        eb = [x for x, g in zip(b, gid) if g in held]
        eg = [g for g in gid if g in held]
        ta = [x for x, g in zip(a, gid) if g not in held]
        tb = [x for x, g in zip(b, gid) if g not in held]
        tg = [g for g in gid if g not in held]
    out = (
        Path(output_dir) if output_dir else Path(f"linking-model-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    if out.exists() and any(out.iterdir()) and not (out / "linking_train.json").exists():
        raise LoomError(
            f"output_dir {out} exists and is not a model trained by linking.train: "
            "give an empty or new folder"
        )
    left_out = len(ta) - sum(map(len, _batches(tg, ta, batch_size, random.Random(seed))))
    if len(ta) - left_out < 2:
        raise LoomError(
            f"the {len(ta)} training pairs ({len(ea)} more held out for evaluation) cannot form "
            "a batch: each pair of a batch needs its own cluster and anchor text (the others "
            "are its negatives); give pairs of at least two clusters, or a lower eval_fraction"
        )
    if left_out:
        logger.warning(
            "%d of %d training pairs share their cluster or anchor text with all the other "
            "pairs left to place: they are left out of every epoch",
            left_out, len(ta),
        )  # fmt: skip
    torch.manual_seed(seed)
    base = get_embedder(base_model, device)
    st = getattr(base, "model", None)
    if st is None or not hasattr(st, "tokenize"):
        raise LoomError(
            f"base_model {base.name!r} is not a local sentence-transformers model: "
            "fine-tuning needs one (e.g. the default or a folder)"
        )
    st = copy.deepcopy(st)  # never train the shared, cached model in place
    dev = base.device
    st.to(dev)
    wrapped = _Wrapped(st)
    st.eval()
    before = retrieval_eval(wrapped, ea, eb, eg)
    _log_eval("before", before)
    loss_fn = MultipleNegativesRankingLoss(st)
    opt = torch.optim.AdamW(st.parameters(), lr=learning_rate)
    step, losses = 0, []
    st.train()
    for epoch in range(epochs):
        batches = _batches(tg, ta, batch_size, rng)
        bar = tqdm(
            batches, desc=f"train epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress
        )
        for idx in bar:
            fa = _to(st.tokenize([ta[i] for i in idx]), dev)
            fb = _to(st.tokenize([tb[i] for i in idx]), dev)
            loss = loss_fn([fa, fb], None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        if max_steps is not None and step >= max_steps:
            break
    st.eval()
    after = retrieval_eval(wrapped, ea, eb, eg)
    _log_eval("after", after)
    out.mkdir(parents=True, exist_ok=True)
    st.save(str(out))
    report = {
        "base_model": base.name,
        "train_pairs": len(ta),
        "eval_pairs": len(ea),
        "epochs": epochs,
        "steps": step,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "final_loss": losses[-1] if losses else None,
        "before": before,
        "after": after,
    }
    (out / "linking_train.json").write_text(json.dumps(report, indent=1))
    forget_embedder(out)  # a stale cached embedder of this folder (re-training into it)
    return out


def _log_eval(when: str, metrics: dict[str, float]) -> None:
    if metrics["n"]:
        logger.info(
            "held-out (%d pairs) %s: top1 %.3f MRR %.3f",
            metrics["n"], when, metrics["top1"], metrics["mrr"],
        )  # fmt: skip
