"""CLIP-style encoders for CLIPPINGS: a vision and a text tower in one embedding space.

Any local transformers CLIP checkpoint works (`ClipEncoder.load(folder)`); with no weights
at hand, `ClipEncoder.tiny()` builds a small CLIP initialised locally with a character
tokenizer, to be trained with `linking.clip_train.train_multimodal`.
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

from toolkit.device import resolve_device
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress, resolve_progress

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
                "saved by transformers (CLIPModel.save_pretrained + tokenizer) or by "
                "train_multimodal"
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
    @property
    def fill(self) -> tuple[int, int, int]:
        """The letterbox colour: the normalisation mean, so padding normalises to zero."""
        return tuple(int(round(255 * m)) for m in self.mean)  # type: ignore[return-value]

    def pixels(self, images: Sequence[Any]) -> Any:
        """Images (paths or PIL images) -> normalised float tensor (n, 3, size, size).

        resize="pad" keeps the whole image: the longer side is scaled to the model's size and
        the rest filled with the mean colour (a letterbox); "crop" scales the shorter side
        and cuts the centre square, as CLIP's own preprocessing does."""
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
            img = letterbox(img, s, self.fill) if self.resize == "pad" else centre_crop(img, s)
            arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
            out[i] = (arr - mean) / std
        return torch.from_numpy(out)

    def _features(self, fn: Any, batches: list, progress: bool | None, what: str) -> np.ndarray:
        import torch

        parts = []
        with torch.inference_mode():
            for b in tqdm(batches, desc=f"clip {what}", disable=not resolve_progress(progress)):
                out = fn(b)
                if not isinstance(out, torch.Tensor):  # transformers 5 returns an output object
                    out = out.pooler_output
                parts.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu().numpy())
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32)

    def encode_text(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: bool | None = None,
        *,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Normalised text embeddings (n, dim). progress: a progress bar (None: on in
        notebooks and terminals); show_progress= is the deprecated spelling."""
        progress = deprecated_progress(progress, "show_progress", show_progress, "encode_text")
        texts = list(texts)
        batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

        def fn(b: list[str]) -> Any:
            enc = {k: v.to(self.device) for k, v in self.tokenizer(b).items()}
            return self.model.get_text_features(**enc)

        return self._features(fn, batches, progress, "text")

    def encode_images(
        self,
        images: Sequence[Any],
        batch_size: int = 64,
        progress: bool | None = None,
        *,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Normalised image embeddings (n, dim) of image paths or PIL images (progress: as
        in `encode_text`)."""
        progress = deprecated_progress(progress, "show_progress", show_progress, "encode_images")
        images = list(images)
        batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

        def fn(b: list) -> Any:
            return self.model.get_image_features(pixel_values=self.pixels(b).to(self.device))

        return self._features(fn, batches, progress, "images")


def letterbox(img: Any, size: int, fill: tuple[int, int, int]) -> Any:
    """`img` scaled so its longer side is `size`, centred on a size x size `fill` square."""
    from PIL import Image

    w, h = img.size
    scale = size / max(w, h)
    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = Image.new("RGB", (size, size), fill)
    out.paste(
        img.resize(inner, Image.Resampling.BICUBIC),
        ((size - inner[0]) // 2, (size - inner[1]) // 2),
    )
    return out


def centre_crop(img: Any, size: int) -> Any:
    """`img` scaled so its shorter side is `size`, then the centre size x size square."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC
    )
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def clip_encoder(model: Any, device: str | None) -> ClipEncoder:
    """A ClipEncoder as given, or loaded from a local checkpoint folder."""
    if isinstance(model, ClipEncoder):
        return model
    if model is None:
        raise LoomError(
            "no CLIP weights ship with loom: pass model=ClipEncoder.load('/path/to/clip') for a "
            "local checkpoint, or train one with train_multimodal() (see docs/linking.md)"
        )
    return ClipEncoder.load(model, device)


def image_paths(df: pd.DataFrame, image_col: str, image_root: str | os.PathLike | None) -> list:
    """Per row: a Path (joined to image_root when relative), a PIL image, or None (missing)."""
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
