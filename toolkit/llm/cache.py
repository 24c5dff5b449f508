"""The on-disk completion cache: hash(model, prompt, params, sample index) -> completion.

`LLM.complete` keys it by the model's name and content fingerprint (a re-trained or replaced
model in the same place misses the old completions) and by every generation parameter that
changes the output. The file is safe to share between processes, and a corrupt one is moved
aside and rebuilt (`toolkit.kvcache`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.kvcache import KVTable
from toolkit.llm.completion import Completion


def cache_root() -> Path:
    """Where loom keeps caches and converted models ($LOOM_CACHE or ~/.cache/loom)."""
    return Path(os.environ.get("LOOM_CACHE", Path.home() / ".cache" / "loom"))


class CompletionCache:
    """SQLite store: hash(model, prompt, params, sample index) -> completion."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._table = KVTable(
            self.path,
            "completions",
            "key TEXT PRIMARY KEY, text TEXT, prompt_tokens INTEGER, completion_tokens INTEGER",
            values=("text", "prompt_tokens", "completion_tokens"),
        )

    @staticmethod
    def key(model: str, prompt: str, params: dict[str, Any]) -> str:
        blob = json.dumps([model, prompt, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, Completion]:
        return {
            k: Completion(text, pt, ct, cached=True)
            for k, (text, pt, ct) in self._table.get(keys).items()
        }

    def put(self, items: dict[str, Completion]) -> None:
        self._table.put(
            (k, (c.text, c.prompt_tokens, c.completion_tokens)) for k, c in items.items()
        )
