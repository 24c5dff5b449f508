"""The `LLM` interface: caching, token accounting per stage, and input checks."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from toolkit.errors import LoomError
from toolkit.fingerprint import path_fingerprint, text_fingerprint
from toolkit.llm.cache import CompletionCache, cache_root
from toolkit.llm.completion import Completion


class LLM:
    """Base class: caching, token accounting per stage, and input checks.

    Subclasses implement `_generate(prompts, max_tokens, temperature, stop, seed, chat)`;
    one that can hand back answers one by one as they finish overrides `_stream`. Every
    answer is written to the cache as soon as it arrives, so an interrupted call loses at most
    the answers still being generated (`answer_batch` of them).
    """

    name: str = "llm"
    #: prompts given to one `_generate` call (each batch is cached as soon as it returns)
    answer_batch: int = 1
    #: True for a model behind a server URL (fast, paid per token); False for a local one
    is_server: bool = False
    #: True where `score_options` works (a local model whose logits are at hand)
    can_score: bool = False

    def __init__(self, cache: str | os.PathLike | bool | None = None) -> None:
        if cache is False:
            self.cache: CompletionCache | None = None
        else:
            path = cache if isinstance(cache, (str, os.PathLike)) else None
            self.cache = CompletionCache(path or cache_root() / "llm" / "completions.sqlite")
        self.usage: dict[str, dict[str, int]] = {}
        self._stage = "default"
        self._usage_lock = threading.Lock()
        self._observers: list[Callable[[str, str, Completion], None]] = []

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

    @property
    def current_stage(self) -> str:
        """The name the calls made now are counted under (see `stage`)."""
        return self._stage

    @contextlib.contextmanager
    def observe(self, fn: Callable[[str, str, Completion], None]) -> Iterator[None]:
        """Call fn(stage, cache key, completion) for every answer inside this block, as it
        arrives (cached ones included), e.g. to keep a per-answer log of a run."""
        self._observers.append(fn)
        try:
            yield
        finally:
            self._observers.remove(fn)

    def count_tokens(self, text: str) -> int:
        """An estimate of the tokens of `text` (about 4 characters per token); backends that
        hold a tokenizer may count exactly. Used for plans and rate limits, never billing."""
        return max(1, (len(text) + 3) // 4)

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
        *,
        on_answer: Callable[[Completion], None] | None = None,
    ) -> list[Completion]:
        """Complete each prompt `n` times; returns len(prompts) * n completions, prompt-major.

        chat=True sends each prompt as one user message (chat template); chat=False continues
        the raw text. Sample i of a prompt uses seed `seed + i`, so results are reproducible
        and cacheable even at temperature > 0. on_answer(completion) is called for every
        answer as soon as it is ready (cached ones first), e.g. to move a progress bar.
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
        results: dict[int, Completion] = {}

        def arrived(j: int, c: Completion) -> None:
            results[j] = c
            self._count([c])
            for fn in list(self._observers):
                fn(self._stage, keys[j], c)
            if on_answer is not None:
                on_answer(c)

        for j, k in enumerate(keys):
            if k in found:
                arrived(j, found[k])
        if todo:
            by_seed: dict[int, list[int]] = {}
            for j in todo:
                by_seed.setdefault(jobs[j][1], []).append(j)
            for i, idx in sorted(by_seed.items()):
                texts = [jobs[j][0] for j in idx]
                for pos, c in self._stream(texts, max_tokens, temperature, stop, seed + i, chat):
                    j = idx[pos]
                    cut = _cut_stop(c.text, stop)
                    if cut != c.text:
                        c.text, c.finish_reason = cut, "stop"
                    if self.cache:  # saved now: an interruption loses only answers in flight
                        self.cache.put({keys[j]: c})
                    arrived(j, c)
        return [results[j] for j in range(len(jobs))]

    def score_options(self, prompt: str, options: Sequence[str], chat: bool = True) -> list[float]:
        """The log-likelihood of each option as the whole answer to `prompt` (constrained
        decoding over a finite set: the argmax is the option the model would emit if it could
        only emit these; `toolkit.llm.constrain`). Cached and counted like `complete`: the
        prompt's tokens and the tokens fed (the options' trie) under the current stage."""
        options = list(options)
        if not self.can_score:
            raise LoomError(
                f"{self!r} cannot score options: only a local model (transformers or "
                "llama.cpp) exposes its logits; a server URL keeps free-form generation"
            )
        if (
            not isinstance(prompt, str)
            or not options
            or not all(isinstance(o, str) and o for o in options)
        ):
            raise LoomError("score_options needs a prompt string and non-empty option strings")
        model = f"{self.name}@{self.fingerprint}" if self.cache else self.name
        key = CompletionCache.key(model, prompt, {"score_options": options, "chat": chat})
        c = (self.cache.get([key]) if self.cache else {}).get(key)
        if c is None:
            scores, ptok, fed = self._score(prompt, options, chat)
            c = Completion(json.dumps(scores), ptok, fed, finish_reason="stop")
            if self.cache:
                self.cache.put({key: c})
        self._count([c])
        for fn in list(self._observers):
            fn(self._stage, key, c)
        return [float(x) for x in json.loads(c.text)]

    def _score(self, prompt: str, options: list[str], chat: bool) -> tuple[list[float], int, int]:
        """(scores, prompt tokens, tokens fed): backends with `can_score` implement it."""
        raise NotImplementedError

    def _stream(
        self,
        prompts: list[str],
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int,
        chat: bool,
    ) -> Iterator[tuple[int, Completion]]:
        """(position, completion) pairs as answers finish: `_generate` over `answer_batch`
        prompts at a time."""
        step = max(1, int(self.answer_batch))
        for s in range(0, len(prompts), step):
            comps = self._generate(prompts[s : s + step], max_tokens, temperature, stop, seed, chat)
            if len(comps) != len(prompts[s : s + step]):
                raise LoomError(
                    f"{self!r} returned {len(comps)} completions for "
                    f"{len(prompts[s : s + step])} prompts"
                )
            yield from enumerate(comps, start=s)

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
