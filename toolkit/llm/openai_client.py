"""A client for any OpenAI-compatible chat/completions endpoint."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from toolkit.errors import LoomError
from toolkit.http_client import HTTPRefused, Unreachable, request_json
from toolkit.llm.base import LLM
from toolkit.llm.completion import Completion
from toolkit.llm.ratelimit import RateLimiter


class OpenAILLM(LLM):
    """A client for any OpenAI-compatible chat/completions endpoint (vLLM, llama.cpp, Ollama...).

    Transient failures (connection errors, 429, 5xx) are retried with exponential backoff;
    after `retries` attempts a LoomError names the URL. requests_per_minute and
    tokens_per_minute (None: no limit) hold the client under a server's published limits
    (`toolkit.llm.ratelimit`): a request waits until both allow it.
    """

    is_server = True

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 300.0,
        concurrency: int = 8,
        cache: str | os.PathLike | bool | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> None:
        super().__init__(cache)
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.base_url = base_url.rstrip("/")
        self.api_key = (
            api_key or os.environ.get("LOOM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.concurrency = concurrency
        self.model = model or self._first_model()
        self.name = f"{self.base_url}#{self.model}"

    def _request(self, method: str, route: str, body: dict | None = None) -> dict:
        url = self.base_url + route
        try:
            return request_json(
                url,
                body,
                self.api_key,
                self.timeout,
                self.retries,
                self.backoff,
                method=method,
                retry_bad_json=True,
            )
        except HTTPRefused as e:
            raise LoomError(
                f"LLM endpoint {url} refused the request (HTTP {e.code}): {e.body[:300]}"
            ) from e.__cause__
        except Unreachable as e:
            last = e.last
            if isinstance(last, HTTPRefused):
                last = f"HTTP {last.code}: {last.body[:300]}"
            raise LoomError(
                f"LLM endpoint {url} failed after {self.retries} attempts ({last}). Check that "
                "the server runs and the URL is right (e.g. http://127.0.0.1:8000/v1), or leave "
                "--llm out to use the embedded model"
            ) from None

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise LoomError(f"{self.base_url}/models lists no model; give one as URL#model")
        return str(data[0]["id"])

    def _one(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int,
        chat: bool,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if stop:
            body["stop"] = stop[:4]
        estimate = self.count_tokens(prompt) + max_tokens
        self.limiter.acquire(estimate)
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
            out = self._request("POST", "/chat/completions", body)
        else:
            body["prompt"] = prompt
            out = self._request("POST", "/completions", body)
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise LoomError(f"{self.base_url} returned no completion: {str(out)[:200]}") from e
        usage = out.get("usage") or {}
        used = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        self.limiter.settle(estimate, used or estimate)
        return Completion(
            text or "",
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
        )

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        out = dict(self._stream(prompts, max_tokens, temperature, stop, seed, chat))
        return [out[i] for i in range(len(prompts))]

    def _stream(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        """Up to `concurrency` requests in flight; each answer is handed back (and cached by
        `complete`) as soon as its request returns."""
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            pending = {
                pool.submit(self._one, p, max_tokens, temperature, stop, seed, chat): i
                for i, p in enumerate(prompts)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield pending.pop(f), f.result()
        finally:  # interrupted: requests not yet sent are dropped
            pool.shutdown(wait=False, cancel_futures=True)
