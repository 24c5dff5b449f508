"""Client for any server that speaks the OpenAI embeddings API (loom's own, TEI, vLLM, Infinity)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from toolkit.embed.base import Embedder
from toolkit.errors import LoomError
from toolkit.http_client import api_base, http_json


class HTTPEmbedder(Embedder):
    """`encode` over HTTP: batches texts into POST /v1/embeddings requests.

    api_key: sent as `Authorization: Bearer KEY`; default $LOOM_EMBED_API_KEY, else
    $LOOM_API_KEY (the key `loom embed-server` reads), else $OPENAI_API_KEY. A busy server's
    503/429 with Retry-After is waited out (`toolkit.http_client`).
    """

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
            api_key
            or os.environ.get("LOOM_EMBED_API_KEY")
            or os.environ.get("LOOM_API_KEY")
            or os.environ.get("OPENAI_API_KEY")
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
        self, texts: list[str], batch_size: int | None, progress: bool, long_text: str
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        size = batch_size or self.batch_size
        parts = []
        for start in tqdm(
            range(0, len(texts), size), disable=not progress, desc=f"embed via {self.base}"
        ):
            parts.append(self._post(texts[start : start + size]))
        out = np.concatenate(parts)
        self._dim = out.shape[1]
        return out


def load_embedder(name: str, device: str, **kwargs: Any) -> HTTPEmbedder:
    """The `toolkit.embed` registry's loader for "http(s)://host:port/v1" names."""
    return HTTPEmbedder(name, **kwargs)
