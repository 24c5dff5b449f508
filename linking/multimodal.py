"""CLIPPINGS: link records by the image of the record (e.g. a scanned crop) and its text.

A CLIP-style pair of encoders (vision + text, shared embedding space) embeds both; a
record's vector is the weighted mean of its normalised image and text vectors, and the
same merge / dedup / cluster as for text run on it. `train_multimodal` trains both encoders
contrastively (symmetric InfoNCE) on the image-text pairs of the same records, as in the
paper. Any local transformers CLIP checkpoint works (`ClipEncoder.load(folder)`); with no
weights at hand, `ClipEncoder.tiny()` builds a small CLIP initialised locally with a
character tokenizer, to be trained with `train_multimodal`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from linking import core
from linking.keys import as_columns, check_frame, check_has, key_texts
from toolkit.embed import resolve_device
from toolkit.errors import LoomError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_META = "loom_clip.json"


class CharTokenizer:
    """Bytes of UTF-8 as tokens: pad 0, bos 1, bytes 2..257, eos 258 (for untrained CLIPs)."""

    vocab_size = 259
    pad_id, bos_id, eos_id = 0, 1, 258

    def __init__(self, max_length: int = 32) -> None:
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Any]:
        import torch

        ids = torch.zeros((len(texts), self.max_length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(texts):
            body = [b + 2 for b in t.encode("utf-8")][: self.max_length - 2]
            seq = [self.bos_id, *body, self.eos_id]
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class _HFTokenizer:
    def __init__(self, tok: Any, max_length: int) -> None:
        self.tok, self.max_length = tok, max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Any]:
        enc = self.tok(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class ClipEncoder:
    """A CLIP model (transformers CLIPModel) with its tokenizer and image preprocessing."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tokenizer_kind: str = "hf",
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        device: str | None = None,
        resize: str = "pad",
    ) -> None:
        if resize not in ("pad", "crop"):
            raise LoomError(f"resize={resize!r}: use 'pad' (keep the whole image) or 'crop'")
        self.resize = resize
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer_kind = tokenizer_kind
        self.image_size = int(model.config.vision_config.image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.dim = int(model.config.projection_dim)
        self.name = "clip"

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(name={self.name!r}, dim={self.dim}, image_size={self.image_size}, "
            f"tokenizer={self.tokenizer_kind!r}, device={self.device!r})"
        )

    @classmethod
    def tiny(
        cls,
        image_size: int = 48,
        patch_size: int = 8,
        hidden_size: int = 96,
        layers: int = 2,
        heads: int = 4,
        projection_dim: int = 64,
        max_length: int = 32,
        seed: int = 0,
        device: str | None = None,
    ) -> ClipEncoder:
        """A small CLIP initialised locally (no download), for tests or training from scratch."""
        import torch
        from transformers import CLIPConfig, CLIPModel

        torch.manual_seed(seed)
        tok = CharTokenizer(max_length)
        text = {
            "vocab_size": tok.vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": max_length,
            "pad_token_id": tok.pad_id,
            "bos_token_id": tok.bos_id,
            "eos_token_id": tok.eos_id,
        }
        vision = {
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "num_channels": 3,
        }
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
        enc = cls(CLIPModel(config), tok, "char", device=device)
        enc.name = "clip-tiny"
        return enc

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str | None = None, resize: str | None = None
    ) -> ClipEncoder:
        """A local CLIP checkpoint folder (transformers format: config.json, weights,
        tokenizer files), or one saved by `save` / `train_multimodal`. resize: "crop" (CLIP's
        own preprocessing, the default for outside checkpoints) or "pad" (whole image)."""
        from transformers import CLIPModel

        path = Path(path).expanduser()
        if not (path / "config.json").exists():
            raise LoomError(
                f"{path} is not a CLIP checkpoint folder (no config.json): give a local folder "
                "saved by transformers (CLIPModel.save_pretrained + tokenizer) or by train_multimodal"
            )
        try:
            model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one clear message
            raise LoomError(f"cannot load a CLIP model from {path}: {e}") from e
        meta = json.loads((path / _META).read_text()) if (path / _META).exists() else {}
        max_len = int(model.config.text_config.max_position_embeddings)
        if meta.get("tokenizer") == "char":
            tok: Any = CharTokenizer(max_len)
            kind = "char"
        else:
            from transformers import AutoTokenizer

            try:
                tok = _HFTokenizer(
                    AutoTokenizer.from_pretrained(str(path), local_files_only=True), max_len
                )
            except Exception as e:  # noqa: BLE001
                raise LoomError(f"{path} has no usable tokenizer files: {e}") from e
            kind = "hf"
        mean, std = CLIP_MEAN, CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.exists():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        resize = resize or meta.get("resize", "crop")
        enc = cls(model, tok, kind, mean, std, device, resize)
        enc.name = str(path)
        return enc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model (and tokenizer) to a folder that `ClipEncoder.load` reads."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        if self.tokenizer_kind == "hf":
            self.tokenizer.tok.save_pretrained(str(path))
        (path / _META).write_text(
            json.dumps({"tokenizer": self.tokenizer_kind, "resize": self.resize})
        )
        (path / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "image_mean": list(self.mean),
                    "image_std": list(self.std),
                    "size": self.image_size,
                }
            )
        )
        return path

    # inputs -------------------------------------------------------------------------------
    def pixels(self, images: Sequence[Any]) -> Any:
        """Images (paths or PIL images) -> normalised float tensor (n, 3, size, size)."""
        import torch
        from PIL import Image

        s = self.image_size
        out = np.empty((len(images), 3, s, s), dtype=np.float32)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                p = Path(img)
                if not p.exists():
                    raise LoomError(f"image {img!r} does not exist: fix the image path column")
                try:
                    img = Image.open(p)
                    img.load()
                except OSError as e:
                    raise LoomError(f"cannot read image {img!r}: {e}") from e
            img = img.convert("RGB")
            w, h = img.size  # shortest side to s, then a centre crop, as CLIP does
            scale = s / min(w, h)
            img = img.resize(
                (max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BICUBIC
            )
            w, h = img.size
            left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
            arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
            out[i] = (arr - mean) / std
        return torch.from_numpy(out)

    def _features(self, fn: Any, batches: list, show_progress: bool, what: str) -> np.ndarray:
        import torch

        parts = []
        with torch.inference_mode():
            for b in tqdm(batches, desc=f"clip {what}", disable=not show_progress):
                out = fn(b)
                if not isinstance(out, torch.Tensor):  # transformers 5 returns an output object
                    out = out.pooler_output
                parts.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy())
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32)

    def encode_text(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Normalised text embeddings (n, dim)."""
        texts = list(texts)
        batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

        def fn(b: list[str]) -> Any:
            enc = {k: v.to(self.device) for k, v in self.tokenizer(b).items()}
            return self.model.get_text_features(**enc)

        return self._features(fn, batches, show_progress, "text")

    def encode_images(
        self, images: Sequence[Any], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Normalised image embeddings (n, dim) of image paths or PIL images."""
        images = list(images)
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

        def fn(b: list) -> Any:
            return self.model.get_image_features(pixel_values=self.pixels(b).to(self.device))

        return self._features(fn, batches, show_progress, "images")


def _encoder(model: Any, device: str | None) -> ClipEncoder:
    if isinstance(model, ClipEncoder):
        return model
    if model is None:
        raise LoomError(
            "no CLIP weights ship with loom: pass model=ClipEncoder.load('/path/to/clip') for a "
            "local checkpoint, or train one with train_multimodal() (see docs/linking.md)"
        )
    return ClipEncoder.load(model, device)


def _paths(df: pd.DataFrame, image_col: str, image_root: str | os.PathLike | None) -> list:
    out = []
    for v in df[image_col].tolist():
        if (
            v is None
            or (isinstance(v, float) and np.isnan(v))
            or (isinstance(v, str) and not v.strip())
        ):
            out.append(None)
        elif isinstance(v, str | os.PathLike):
            p = Path(v)
            out.append(
                Path(image_root) / p if image_root is not None and not p.is_absolute() else p
            )
        else:
            out.append(v)  # a PIL image in the column
    return out


def record_vectors(
    df: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    image_weight: float = 0.5,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled record vectors (mean of image and text embeddings, weighted) and a validity mask.

    A row with only an image (or only text) uses that part alone; a row with neither is
    invalid (never matched).
    """
    check_frame(df, "df")
    check_has(df, [image_col], "df")
    cols = as_columns(on, "on") or []
    check_has(df, cols, "df")
    if not 0.0 <= image_weight <= 1.0:
        raise LoomError(f"image_weight={image_weight}: give a number between 0 and 1")
    enc = _encoder(model, device)
    paths = _paths(df, image_col, image_root)
    has_img = (
        np.array([p is not None for p in paths]) if image_weight > 0 else np.zeros(len(df), bool)
    )
    if cols and image_weight < 1:
        texts, empty = key_texts(df, cols)
        has_txt = ~empty
    else:
        texts, has_txt = [""] * len(df), np.zeros(len(df), bool)
    vec = np.zeros((len(df), enc.dim), np.float32)
    if has_img.any():
        iv = enc.encode_images(
            [p for p, h in zip(paths, has_img) if h], show_progress=show_progress
        )
        w = image_weight if cols else 1.0
        vec[has_img] += w * iv
    if has_txt.any():
        tv = enc.encode_text([t for t, h in zip(texts, has_txt) if h], show_progress=show_progress)
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
) -> pd.DataFrame:
    """`linking.merge` on pooled image+text record vectors (same output columns)."""
    core._check_k(k)
    core._check_threshold(threshold)
    check_frame(left, "left")
    check_frame(right, "right")
    enc = _encoder(model, device)
    lv, lvalid = record_vectors(left, image_col, on, enc, image_weight, image_root)
    rv, rvalid = record_vectors(right, image_col, on, enc, image_weight, image_root)
    kk = max(k, 5) if one_to_one else k
    pairs = core.search_pairs(lv, rv, lvalid, rvalid, kk, threshold)
    if one_to_one:
        pairs = core.one_to_one(pairs)
    out = core.assemble(left, right, pairs, how, suffixes, with_rank=k > 1)
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
    threshold: float = 0.9,
    image_weight: float = 0.5,
    k: int = 10,
    return_pairs: bool = False,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """`linking.dedup` on pooled image+text record vectors (cluster_id, duplicate columns)."""
    core._check_threshold(threshold)
    vec, valid = record_vectors(df, image_col, on, model, image_weight, image_root, device)
    pairs = core.self_pairs(vec, valid, threshold, k)
    out = core._with_clusters(df, core.components(len(df), pairs))
    return (out, pairs) if return_pairs else out


def cluster(
    df: pd.DataFrame,
    image_col: str,
    on: str | Sequence[str] | None = None,
    model: Any = None,
    method: str = "connected",
    threshold: float = 0.9,
    image_weight: float = 0.5,
    k: int = 10,
    min_cluster_size: int = 2,
    image_root: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """`linking.cluster` on pooled image+text record vectors."""
    if method not in core.CLUSTER_METHODS:
        raise LoomError(f"method={method!r}: use one of {core.CLUSTER_METHODS}")
    if method == "connected":
        return dedup(
            df,
            image_col,
            on,
            model,
            threshold,
            image_weight,
            k,
            image_root=image_root,
            device=device,
        )
    vec, valid = record_vectors(df, image_col, on, model, image_weight, image_root, device)
    labels = np.arange(len(df), dtype=np.int64) + len(df)
    rows = np.flatnonzero(valid)
    if len(rows) >= 2:
        sub = core._cluster_block(vec[rows], method, threshold, k, min_cluster_size, None)
        labels[rows] = np.where(sub >= 0, sub, labels[rows])
    return core._with_clusters(df, core._renumber(labels))


def retrieval_accuracy(enc: ClipEncoder, images: Sequence[Any], texts: Sequence[str]) -> float:
    """Top-1 accuracy of finding each image's own text among all texts (image -> text)."""
    iv = enc.encode_images(images)
    tv = enc.encode_text(texts)
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
    verbose: bool = True,
) -> ClipEncoder:
    """Train the image and text encoders together on the (image, text) pairs of each record
    with the symmetric InfoNCE (CLIP) loss; returns the trained encoder (saved to
    `output_dir` when given). model: a ClipEncoder, a local CLIP folder, or None for
    `ClipEncoder.tiny()`. augment: optional function PIL image -> PIL image applied to
    every training image (noise, blur) so the image encoder learns robust features.
    """
    import torch
    from PIL import Image

    check_frame(records, "records")
    check_has(records, [image_col], "records")
    cols = as_columns(on, "on")
    if cols is None:
        raise LoomError("train_multimodal needs on= the text column(s) paired with each image")
    check_has(records, cols, "records")
    enc = ClipEncoder.tiny(device=device, seed=seed) if model is None else _encoder(model, device)
    texts, empty = key_texts(records, cols)
    paths = _paths(records, image_col, image_root)
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
        bar = tqdm(batches, desc=f"clip train {epoch + 1}/{epochs}", disable=not verbose)
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
