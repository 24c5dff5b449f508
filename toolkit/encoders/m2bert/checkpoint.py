"""M2-BERT checkpoints: read and write the released `m2-bert-80M-*-retrieval` folder layout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from toolkit.device import resolve_device
from toolkit.encoders.m2bert.model import WEIGHT_FILES, M2BertConfig, M2BertModel
from toolkit.errors import LoomError

# Keys a checkpoint may hold that the encoder does not use (training heads, bookkeeping).
_IGNORED_PREFIXES = ("classifier.", "cls.", "dropout.", "pooler.Wqkv", "pooler.dense1")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        f = path / name
        if not f.is_file():
            continue
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(f))
            sd = torch.load(str(f), map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "state" in sd:  # a composer checkpoint
                sd = sd["state"]["model"]
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one clear message
            raise LoomError(
                f"cannot read the weights in {f} ({type(e).__name__}: {str(e)[:200]}): the file "
                "is damaged or not a PyTorch/safetensors checkpoint; download it again"
            ) from e
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise LoomError(f"{f} holds no state dict of tensors: it is not an M2-BERT checkpoint")
        return sd
    raise LoomError(
        f"{path} has no weights: put the checkpoint's {' or '.join(WEIGHT_FILES[:2])} next to "
        "its config.json"
    )


def normalize_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes (module., model., bert.) and drop heads; returns (state, dropped)."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in sd.items():
        k = key
        for prefix in ("module.", "model.", "bert."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.startswith(_IGNORED_PREFIXES):
            dropped.append(key)
            continue
        out[k] = value
    return out, dropped


def load_m2bert(path: str | os.PathLike, device: str = "cpu") -> M2BertModel:
    """Build M2BertModel from a checkpoint folder; every model weight must be in the file."""
    path = Path(path)
    device = resolve_device(device)
    cfg = M2BertConfig.from_dir(path)
    sd, _ = normalize_state_dict(_read_weights(path))
    if not any(".filter_fn." in k for k in sd):
        raise LoomError(
            f"{path} is not an M2-BERT checkpoint: its weights have no Monarch Mixer filters "
            "(encoder.layer.N.attention.filter_fn); an attention BERT / sentence-transformers "
            "folder loads with get_embedder('/path') instead"
        )
    model = M2BertModel(cfg)
    own = model.state_dict()
    # recomputable buffers may be absent from a checkpoint (the reference deletes pos_emb.t)
    optional = {k for k in own if k.endswith(("pos_emb.t", "position_ids", "modulation.deltas"))}
    missing = [k for k in own if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise LoomError(
            f"{path}: weights do not match its config.json ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}): check that "
            "config.json belongs to these weights (num_hidden_layers, bidirectional, "
            "residual_long_conv, use_glu_mlp, use_monarch_mlp)"
        )
    bad = [
        (k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if v.shape != own[k].shape
    ]
    if bad:
        raise LoomError(f"{path}: weight shapes differ from config.json, e.g. {bad[:3]}")
    model.load_state_dict(sd, strict=False)
    return model.to(device).eval()


def save_m2bert(model: M2BertModel, path: str | os.PathLike, prefix: str = "bert.") -> Path:
    """Write config.json + model.safetensors in the released checkpoints' layout."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    sd = {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(path / "model.safetensors"))
    return path


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer shipped in the checkpoint folder (tokenizer.json or vocab.txt)."""
    from transformers import AutoTokenizer, BertTokenizerFast

    path = Path(path)
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(path))
    if (path / "vocab.txt").is_file():
        return BertTokenizerFast.from_pretrained(str(path), do_lower_case=True)
    raise LoomError(
        f"{path} has no tokenizer: the released M2-BERT models use bert-base-uncased's "
        "tokenizer; copy its vocab.txt (or tokenizer.json) into the checkpoint folder "
        "(the default MiniLM package ships the same uncased vocab.txt)"
    )
