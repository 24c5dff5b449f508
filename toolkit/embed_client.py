"""Client for any server that speaks the OpenAI embeddings API (loom's own, TEI, vLLM, Infinity)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from toolkit.embed import Embedder
from toolkit.errors import LoomError


def api_base(url: str) -> str:
    """Normalise a server URL to its `/v1` base."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def http_json(
    url: str,
    payload: dict | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 0.5,
) -> Any:
    """GET (payload None) or POST JSON with retries and exponential backoff on network/5xx errors."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last: Exception | None = None
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:500]
            if e.code < 500 and e.code != 429:
                raise LoomError(f"{url} answered HTTP {e.code}: {body}") from e
            last = LoomError(f"{url} answered HTTP {e.code}: {body}")
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = e
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise LoomError(
        f"cannot reach {url} after {retries + 1} tries ({last}); check that the server is "
        "running and the URL is right"
    )


class HTTPEmbedder(Embedder):
    """`encode` over HTTP: batches texts into POST /v1/embeddings requests."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 256,
        timeout: float = 120.0,
        retries: int = 4,
    ) -> None:
        self.base = api_base(url)
        self.device = "remote"
        self.api_key = (
            api_key or os.environ.get("LOOM_EMBED_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.batch_size = batch_size
        self.timeout, self.retries = timeout, retries
        models = http_json(
            f"{self.base}/models", api_key=self.api_key, timeout=timeout, retries=retries
        ).get("data", [])
        ids = [m.get("id") for m in models]
        if model is None:
            if not ids:
                raise LoomError(f"{self.base}/models lists no model: pass model=")
            model = ids[0]
        elif ids and model not in ids:
            raise LoomError(f"{self.base} does not serve model {model!r}; it serves {ids}")
        info = next((m for m in models if m.get("id") == model), {})
        self.model = model
        self.name = f"{self.base}#{model}"
        self.max_length = int(info.get("max_length") or 512)
        self._dim = info.get("dim")

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self._dim = int(self._post(["dimension probe"]).shape[1])
        return int(self._dim)

    def _post(self, texts: list[str]) -> np.ndarray:
        resp = http_json(
            f"{self.base}/embeddings",
            {"input": texts, "model": self.model, "encoding_format": "float"},
            api_key=self.api_key,
            timeout=self.timeout,
            retries=self.retries,
        )
        try:
            data = sorted(resp["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise LoomError(f"{self.base}/embeddings sent a malformed response: {e}") from e
        if len(vecs) != len(texts):
            raise LoomError(
                f"{self.base}/embeddings returned {len(vecs)} vectors for {len(texts)} texts"
            )
        return vecs

    def _embed(
        self, texts: list[str], batch_size: int | None, show_progress: bool, long_text: str
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        size = batch_size or self.batch_size
        parts = []
        for start in tqdm(
            range(0, len(texts), size), disable=not show_progress, desc=f"embed via {self.base}"
        ):
            parts.append(self._post(texts[start : start + size]))
        out = np.concatenate(parts)
        self._dim = out.shape[1]
        return out
