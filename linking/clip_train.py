"""Training a CLIP encoder pair contrastively on the (image, text) pairs of the same records.

Symmetric InfoNCE (the CLIP loss), as in the CLIPPINGS paper; `retrieval_accuracy` checks
how well images find their own text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from linking.clip import ClipEncoder, clip_encoder, image_paths
from linking.keys import as_columns, check_frame, check_has, key_texts
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress, resolve_progress


def retrieval_accuracy(enc: ClipEncoder, images: Sequence[Any], texts: Sequence[str]) -> float:
    """Top-1 accuracy of finding each image's own text among all texts (image -> text)."""
    iv = enc.encode_images(images, progress=False)
    tv = enc.encode_text(texts, progress=False)
    return float((np.argmax(iv @ tv.T, axis=1) == np.arange(len(texts))).mean())


def train_multimodal(
    records: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str],
    model: Any = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    max_steps: int | None = None,
    output_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    augment: Any = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    *,
    verbose: bool | None = None,
) -> ClipEncoder:
    """Train the image and text encoders together on the (image, text) pairs of each record
    with the symmetric InfoNCE (CLIP) loss; returns the trained encoder (saved to
    `output_dir` when given). model: a ClipEncoder, a local CLIP folder, or None for
    `ClipEncoder.tiny()`. augment: optional function PIL image -> PIL image applied to
    every training image (noise, blur) so the image encoder learns robust features.
    progress: a progress bar (None: on in notebooks and terminals); verbose= is the
    deprecated spelling.
    """
    progress = resolve_progress(
        deprecated_progress(progress, "verbose", verbose, "train_multimodal")
    )
    import torch
    from PIL import Image

    check_frame(records, "records")
    check_has(records, [image_col], "records")
    cols = as_columns(on, "on")
    if cols is None:
        raise LoomError("train_multimodal needs on= the text column(s) paired with each image")
    check_has(records, cols, "records")
    enc = (
        ClipEncoder.tiny(device=device, seed=seed) if model is None else clip_encoder(model, device)
    )
    texts, empty = key_texts(records, cols)
    paths = image_paths(records, image_col, image_root)
    keep = [i for i in range(len(records)) if paths[i] is not None and not empty[i]]
    if len(keep) < 2:
        raise LoomError("train_multimodal needs at least 2 records with both an image and text")
    images = []
    for i in keep:
        p = paths[i]
        img = p if isinstance(p, Image.Image) else Image.open(p)
        images.append(img.convert("RGB"))
    texts = [texts[i] for i in keep]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model_ = enc.model
    opt = torch.optim.AdamW(model_.parameters(), lr=learning_rate, weight_decay=0.01)
    model_.train()
    step, losses = 0, []
    bs = min(batch_size, len(keep))
    for epoch in range(epochs):
        order = rng.permutation(len(keep))
        batches = [order[i : i + bs] for i in range(0, len(order) - 1, bs)]
        bar = tqdm(batches, desc=f"clip train {epoch + 1}/{epochs}", disable=not progress)
        for idx in bar:
            if len(idx) < 2:
                continue
            imgs = [augment(images[i]) if augment else images[i] for i in idx]
            tok = {k: v.to(enc.device) for k, v in enc.tokenizer([texts[i] for i in idx]).items()}
            out = model_(**tok, pixel_values=enc.pixels(imgs).to(enc.device), return_loss=True)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        if max_steps is not None and step >= max_steps:
            break
    model_.eval()
    enc.train_report = {
        "steps": step,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }
    if output_dir is not None:
        enc.save(output_dir)
        enc.name = str(output_dir)
    return enc
