"""`get_llm(spec)`: one shared LLM client per spec and options, per process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from toolkit.errors import LoomError
from toolkit.llm.base import LLM
from toolkit.llm.local import (
    LlamaCppLLM,
    TransformersLLM,
    convert_gguf,
    default_gguf_path,
    llama_cpp_available,
)
from toolkit.llm.openai_client import OpenAILLM

_LLMS: dict[tuple, LLM] = {}
_LLMS_LOCK = threading.Lock()


def get_llm(spec: str | None = None, **kwargs: Any) -> LLM:
    """The LLM for `spec` (cached per process).

    None / "default": the embedded SmolLM2-135M-Instruct (llama-cpp-python when installed,
    else transformers on the dequantized GGUF); "default:transformers" / "default:llamacpp"
    force a backend. "http(s)://host:port/v1" or "...#model": an OpenAI-compatible server
    (API key from $LOOM_LLM_API_KEY or $OPENAI_API_KEY). A directory: a Hugging Face model.
    A .gguf file: llama-cpp-python when installed, else transformers.
    """
    key = (spec, tuple(sorted(kwargs.items())))
    with _LLMS_LOCK:
        if key not in _LLMS:
            _LLMS[key] = _load_llm(spec, **kwargs)
        return _LLMS[key]


def _load_llm(spec: str | None, **kwargs: Any) -> LLM:
    spec = (spec or "default").strip()
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return OpenAILLM(url, model=model or kwargs.pop("model", None), **kwargs)
    if spec.startswith("default"):
        backend = spec.partition(":")[2] or (
            "llamacpp" if llama_cpp_available() else "transformers"
        )
        gguf = default_gguf_path()
        return _gguf_llm(gguf, backend, **kwargs)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return _gguf_llm(path, "llamacpp" if llama_cpp_available() else "transformers", **kwargs)
    if path.is_dir():
        return TransformersLLM(path, **kwargs)
    raise LoomError(
        f"unknown LLM {spec!r}: give an http(s)://host:port/v1[#model] URL, a Hugging Face model "
        "directory, a .gguf file, or leave it out for the embedded default"
    )


def _gguf_llm(path: Path, backend: str, **kwargs: Any) -> LLM:
    if not path.exists():
        raise LoomError(f"GGUF file {path} does not exist")
    if backend == "llamacpp":
        if not llama_cpp_available():
            raise LoomError("llama-cpp-python is not installed: pip install 'loom[llamacpp]'")
        return LlamaCppLLM(path, **kwargs)
    if backend == "transformers":
        llm = TransformersLLM(convert_gguf(path), **kwargs)
        llm.name = f"transformers:{path.name}"
        return llm
    raise LoomError(f"unknown LLM backend {backend!r}: use llamacpp or transformers")
