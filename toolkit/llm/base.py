"""The `LLM` interface: caching, token accounting per stage, and input checks."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from toolkit.errors import LoomError
from toolkit.fingerprint import path_fingerprint, text_fingerprint
from toolkit.llm.cache import CompletionCache, cache_root
from toolkit.llm.completion import Completion


class LLM:
    """Base class: caching, token accounting per stage, and input checks.

    Subclasses implement `_generate(prompts, max_tokens, temperature, stop, seed, chat)`.
    """

    name: str = "llm"

    def __init__(self, cache: str | os.PathLike | bool | None = None) -> None:
        if cache is False:
            self.cache: CompletionCache | None = None
        else:
            path = cache if isinstance(cache, (str, os.PathLike)) else None
            self.cache = CompletionCache(path or cache_root() / "llm" / "completions.sqlite")
        self.usage: dict[str, dict[str, int]] = {}
        self._stage = "default"
        self._usage_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def fingerprint(self) -> str:
        """A content hash of the model: of its file or folder (`self.path`: weights,
        tokenizer, config), remembered per process while unchanged; for a server, of the
        class and name (the URL and model id)."""
        path = getattr(self, "path", None)
        if path is not None and Path(path).exists():
            return path_fingerprint(path)
        return text_fingerprint(type(self).__name__, self.name)

    def set_cache(self, path: str | os.PathLike | None) -> None:
        """Use the completion cache at `path` (None turns caching off)."""
        self.cache = CompletionCache(path) if path else None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the tokens of the calls inside this block under `name`."""
        old, self._stage = self._stage, name
        try:
            yield
        finally:
            self._stage = old

    def reset_usage(self) -> None:
        self.usage = {}

    def total_tokens(self) -> int:
        return sum(u["prompt_tokens"] + u["completion_tokens"] for u in self.usage.values())

    def _count(self, comps: Sequence[Completion]) -> None:
        with self._usage_lock:
            u = self.usage.setdefault(
                self._stage,
                {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0},
            )
            for c in comps:
                u["calls"] += 1
                u["cached_calls"] += int(c.cached)
                u["prompt_tokens"] += c.prompt_tokens
                u["completion_tokens"] += c.completion_tokens

    def complete(
        self,
        prompts: Sequence[str] | str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        n: int = 1,
        seed: int = 0,
        chat: bool = True,
    ) -> list[Completion]:
        """Complete each prompt `n` times; returns len(prompts) * n completions, prompt-major.

        chat=True sends each prompt as one user message (chat template); chat=False continues
        the raw text. Sample i of a prompt uses seed `seed + i`, so results are reproducible
        and cacheable even at temperature > 0.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise LoomError("LLM prompts must be strings")
        if max_tokens < 1 or n < 1:
            raise LoomError(f"max_tokens ({max_tokens}) and n ({n}) must be >= 1")
        if temperature < 0:
            raise LoomError(f"temperature must be >= 0, got {temperature}")
        stop = list(stop or [])
        jobs = [(p, i) for p in prompts for i in range(n)]
        model = f"{self.name}@{self.fingerprint}" if self.cache else self.name
        keys = [
            CompletionCache.key(
                model,
                p,
                {
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "stop": stop,
                    "seed": seed + i if temperature > 0 else 0,
                    "chat": chat,
                },
            )
            for p, i in jobs
        ]
        found = self.cache.get(keys) if self.cache else {}
        todo = [j for j, k in enumerate(keys) if k not in found]
        results: dict[int, Completion] = {j: found[k] for j, k in enumerate(keys) if k in found}
        if todo:
            by_seed: dict[int, list[int]] = {}
            for j in todo:
                by_seed.setdefault(jobs[j][1], []).append(j)
            for i, idx in sorted(by_seed.items()):
                comps = self._generate(
                    [jobs[j][0] for j in idx], max_tokens, temperature, stop, seed + i, chat
                )
                for j, c in zip(idx, comps, strict=True):
                    cut = _cut_stop(c.text, stop)
                    if cut != c.text:
                        c.text, c.finish_reason = cut, "stop"
                    results[j] = c
                if self.cache:
                    self.cache.put({keys[j]: results[j] for j in idx})
        out = [results[j] for j in range(len(jobs))]
        self._count(out)
        return out

    def _generate(
        self,
        prompts: list[str],
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int,
        chat: bool,
    ) -> list[Completion]:
        raise NotImplementedError


def _cut_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and i >= 0:
            cut = min(cut, i)
    return text[:cut]
