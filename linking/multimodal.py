"""CLIPPINGS: link records by the image of the record (e.g. a scanned crop) and its text.

A CLIP-style pair of encoders (vision + text, shared embedding space; `linking.clip`)
embeds both; a record's vector is the weighted mean of its normalised image and text
vectors, and the same search, assembly and grouping stages as for text run on it.
`train_multimodal` (`linking.clip_train`) trains both encoders contrastively on the
image-text pairs of the same records, as in the paper.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linking.checks import check_how, check_k, check_link_options, check_method, check_threshold
from linking.clip import CLIP_MEAN, CLIP_STD, CharTokenizer, ClipEncoder, clip_encoder, image_paths
from linking.clip_train import retrieval_accuracy, train_multimodal
from linking.clustering import check_cluster_options, cluster_labels
from linking.config import DEFAULT_DEDUP_THRESHOLD, LinkConfig
from linking.duplicates import components, with_clusters
from linking.keys import as_columns, check_frame, check_has, key_texts
from linking.matching import assemble
from linking.search import match_pairs, self_pairs
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress, resolve_progress

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CharTokenizer",
    "ClipEncoder",
    "cluster",
    "dedup",
    "merge",
    "record_vectors",
    "retrieval_accuracy",
    "train_multimodal",
]


def check_image_threshold(threshold: Any, what: str, none_ok: bool) -> None:
    """Image records have no threshold chosen from the data: a number (or, to link, None)."""
    check_threshold(threshold)
    if isinstance(threshold, str) or (threshold is None and not none_ok):
        keep = " or None (every row keeps its nearest match)" if none_ok else ""
        raise LoomError(
            f"{what}(threshold={threshold!r}): image + text records are cut at a cosine that "
            f"you give, e.g. 0.85{keep}; tune it with linking.tune_threshold"
        )


def record_vectors(
    df: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    image_weight: float = 0.5,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool | None = None,
    *,
    show_progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled record vectors (mean of image and text embeddings, weighted) and a validity mask.

    A row with only an image (or only text) uses that part alone; a row with neither is
    invalid (never matched). progress: progress bars (None: on in notebooks and terminals);
    show_progress= is the deprecated spelling.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "record_vectors")
    check_frame(df, "df")
    check_has(df, [image_col], "df")
    cols = as_columns(on, "on") or []
    check_has(df, cols, "df")
    if not 0.0 <= image_weight <= 1.0:
        raise LoomError(f"image_weight={image_weight}: give a number between 0 and 1")
    enc = clip_encoder(model, device)
    paths = image_paths(df, image_col, image_root)
    has_img = (
        np.array([p is not None for p in paths]) if image_weight > 0 else np.zeros(len(df), bool)
    )
    if cols and image_weight < 1:
        texts, empty = key_texts(df, cols)
        has_txt = ~empty
    else:
        texts, has_txt = [""] * len(df), np.zeros(len(df), bool)
    vec = np.zeros((len(df), enc.dim), np.float32)
    progress = resolve_progress(progress)
    if has_img.any():
        iv = enc.encode_images([p for p, h in zip(paths, has_img) if h], progress=progress)
        w = image_weight if cols else 1.0
        vec[has_img] += w * iv
    if has_txt.any():
        tv = enc.encode_text([t for t, h in zip(texts, has_txt) if h], progress=progress)
        vec[has_txt] += (1.0 - image_weight) * tv
    valid = has_img | has_txt
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.where(norms > 0, vec / np.maximum(norms, 1e-12), 0).astype(np.float32)
    return vec, valid


def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    image_weight: float = 0.5,
    k: int = 1,
    threshold: float | None = None,
    how: str = "left",
    one_to_one: bool = False,
    suffixes: tuple[str, str] = ("_left", "_right"),
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """`linking.merge` on pooled image+text record vectors (same output columns).

    device: where the CLIP encoder runs; progress: as in `record_vectors`.
    """
    check_k(k)
    check_image_threshold(threshold, "merge", none_ok=True)
    check_frame(left, "left")
    check_frame(right, "right")
    check_how(how)  # before any image is read (a cardinality here is plain merge's how=)
    cfg = LinkConfig(k=k, threshold=threshold, one_to_one=one_to_one, progress=progress)
    check_link_options(cfg)  # one_to_one keeps one match per row: k=1
    enc = clip_encoder(model, device)
    lv, lvalid = record_vectors(
        left, image_col, on, enc, image_weight, image_root, None, cfg.progress
    )
    rv, rvalid = record_vectors(
        right, image_col, on, enc, image_weight, image_root, None, cfg.progress
    )
    pairs = match_pairs(lv, rv, lvalid, rvalid, cfg)
    out = assemble(left, right, pairs, how, suffixes, with_rank=k > 1)
    out.attrs["linking"] = {
        "left_rows": len(left),
        "right_rows": len(right),
        "left_empty_keys": int((~lvalid).sum()),
        "right_empty_keys": int((~rvalid).sum()),
        "pairs": len(pairs),
    }
    return out


def dedup(
    df: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    image_weight: float = 0.5,
    k: int = 10,
    return_pairs: bool = False,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """`linking.dedup` on pooled image+text record vectors (cluster_id, duplicate columns)."""
    check_image_threshold(threshold, "dedup", none_ok=False)
    cfg = LinkConfig(k=k, threshold=threshold, progress=progress)
    vec, valid = record_vectors(
        df, image_col, on, model, image_weight, image_root, device, cfg.progress
    )
    pairs = self_pairs(vec, valid, cfg)
    out = with_clusters(df, components(len(df), pairs))
    return (out, pairs) if return_pairs else out


def cluster(
    df: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    method: str = "connected",
    threshold: float = DEFAULT_DEDUP_THRESHOLD,
    image_weight: float = 0.5,
    k: int = 10,
    min_cluster_size: int = 2,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """`linking.cluster` on pooled image+text record vectors."""
    check_method(method)
    if method == "connected":
        return dedup(
            df, image_col, on, model, threshold, image_weight, k, image_root=image_root,
            device=device, progress=progress,
        )  # fmt: skip
    check_cluster_options(method, threshold, min_cluster_size)
    check_k(k)
    cfg = LinkConfig(k=k, threshold=threshold, progress=progress)
    vec, valid = record_vectors(
        df, image_col, on, model, image_weight, image_root, device, cfg.progress
    )
    return with_clusters(df, cluster_labels(vec, valid, None, method, cfg, min_cluster_size))
