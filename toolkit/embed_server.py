"""`loom embed-server`: the embedding service over HTTP, speaking the OpenAI embeddings API.

Concurrent requests are merged into one model batch (one GPU pass) by a `Batcher` on the
server's event loop, which runs the model in a worker thread, so several notebook processes
share one loaded model. Limits, API key, metrics and shutdown: `toolkit.openai_http`.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from toolkit.asgi_server import ASGIServer
from toolkit.batcher import MicroBatcher
from toolkit.embed import Embedder, get_embedder
from toolkit.openai_http import (
    BadRequest,
    FastJSONResponse,
    ServerConfig,
    build_app,
    read_json,
    serve_until_interrupted,
)
from toolkit.server_metrics import ServerMetrics

logger = logging.getLogger(__name__)
ENCODING_FORMATS = ("float", "base64")
#: seconds between GIL hand-overs in a `serve()` process (Python's default: 0.005)
SWITCH_INTERVAL = 0.0005


class Batcher(MicroBatcher):
    """Merges the texts of concurrent requests into shared model calls.

    `await batcher.embed(texts)` gives the request's (n, dim) vectors and token count. Where
    the embedder has a packed path, each request's texts are tokenized as it arrives (on the
    shared tokenizer workers, `Embedder.submit_tokenize`), so a merged call only runs the
    model while the next requests tokenize. A merged call that fails is run again request by
    request, so a text the model rejects fails only the request that sent it.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 2048,
        max_wait: float = 0.005,
        *,
        max_queue: int = 1024,
        metrics: ServerMetrics | None = None,
        concurrency: int = 1,
    ) -> None:
        self.embedder = embedder
        super().__init__(
            self.encode_many,
            size=lambda item: len(item[0]),
            max_batch=max_batch,
            max_wait=max_wait,
            max_queue=max_queue,
            metrics=metrics,
            name="embed",
            concurrency=concurrency,
        )

    def encode_many(self, requests: list[tuple[list[str], Any]]) -> list[tuple[np.ndarray, int]]:
        """One model call over the texts of all `requests` ((texts, tokens Future or None));
        each request's vectors and token count, split back (counted from the model's own
        tokenization)."""
        sizes = [len(texts) for texts, _ in requests]
        vecs, counts = self.tokenized(requests, sizes)
        if vecs is None:
            vecs, counts = self.embedder.encode_counted([t for r, _ in requests for t in r])
        if self.metrics is not None:
            self.metrics.texts.inc(sum(sizes))
        bounds = np.cumsum([0, *sizes])
        return [(vecs[a:b], int(counts[a:b].sum())) for a, b in zip(bounds[:-1], bounds[1:])]

    def tokenized(self, requests: list[tuple[list[str], Any]], sizes: list[int]) -> tuple:
        """(vectors, counts) from the requests' early tokenization, or (None, None) where a
        request has none or its tokenizing failed (then the texts are encoded as they are)."""
        if any(future is None for _, future in requests):
            return None, None
        try:
            chunks = [future.result() for _, future in requests]
        except Exception as e:  # noqa: BLE001 - e.g. a tokenizer worker died: encode the texts
            logger.warning("early tokenization failed (%s); tokenizing in the model call", e)
            return None, None
        return self.embedder.encode_tokenized(chunks, sizes)

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """The request's (n, dim) vectors and its token count."""
        future = self.embedder.submit_tokenize(texts)
        try:
            return await self.submit((texts, future))
        finally:
            if future is not None:
                future.cancel()  # a refused (queue full) or abandoned request: free the worker


def check_input(body: dict[str, Any], aliases: set[str], served: str, dim: int) -> list[str]:
    """The request's texts; BadRequest names what is wrong with `body` otherwise."""
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise BadRequest("'input' must be a non-empty string or list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadRequest(
                f"'input'[{i}] is a {type(t).__name__}, not a string: this server takes texts "
                "(not token ids); convert every input to a string"
            )
    model = body.get("model")
    if model is not None and model not in aliases:
        raise BadRequest(
            f"model {model!r} is not served here; use {served!r}", 404, "model_not_found"
        )
    if body.get("encoding_format", "float") not in ENCODING_FORMATS:
        raise BadRequest(f"encoding_format must be one of {ENCODING_FORMATS}")
    dims = body.get("dimensions")
    if dims is not None and dims != dim:
        raise BadRequest(f"dimensions={dims!r}: this model gives {dim}-dimensional vectors only")
    return texts


def make_app(
    embedder: Embedder, model_name: str | None = None, config: ServerConfig | None = None
) -> Any:
    """The ASGI application of the embedding server (for any ASGI server); `.state.batcher`
    and `.state.metrics` are its batcher and Prometheus metrics."""
    config = config or ServerConfig.build()
    served = model_name or embedder.name.rstrip("/").split("/")[-1]
    aliases = {served, embedder.name, "default"}
    metrics = ServerMetrics("embed")
    batcher = Batcher(
        embedder,
        config.max_batch,
        config.max_wait,
        max_queue=config.max_queue,
        metrics=metrics,
        concurrency=config.model_calls,
    )

    async def embeddings(request: Request) -> Response:
        body = await read_json(request, config.max_request_bytes)
        texts = check_input(body, aliases, served, embedder.dim)
        vecs, n_tokens = await batcher.embed(texts)
        metrics.tokens("prompt").inc(n_tokens)
        if body.get("encoding_format") == "base64":
            emb: list[Any] = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vecs]
        else:
            emb = list(vecs)  # numpy rows: the response renders them (orjson)
        return FastJSONResponse(
            {
                "object": "list",
                "model": served,
                "data": [
                    {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(emb)
                ],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
            }
        )

    app = build_app(
        served,
        {"/v1/embeddings": embeddings},
        config,
        metrics,
        {"dim": embedder.dim, "max_length": embedder.max_length},
        on_shutdown=batcher.aclose,
    )
    app.state.batcher, app.state.metrics = batcher, metrics
    return app


def make_server(
    embedder: Embedder,
    host: str = "127.0.0.1",
    port: int = 8080,
    model_name: str | None = None,
    *,
    config: ServerConfig | None = None,
    **options: Any,
) -> ASGIServer:
    """A server for `embedder` on host:port (bound, not started: call `serve_forever()`, or
    `start()` for a background thread; `shutdown()` finishes requests in flight).

    options: fields of `ServerConfig` (max_request_bytes, max_queue, api_key,
    shutdown_timeout, max_batch, max_wait, model_calls); `config=` passes a whole one.
    """
    config = ServerConfig.build(config, **options)
    app = make_app(embedder, model_name, config)
    server = ASGIServer(app, host, port, shutdown_timeout=config.shutdown_timeout)
    server.config = config  # type: ignore[attr-defined]
    server.batcher = app.state.batcher  # type: ignore[attr-defined]
    server.metrics = app.state.metrics  # type: ignore[attr-defined]
    return server


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    device: str | None = None,
    announce: Callable[[str], Any] | None = None,
    *,
    config: ServerConfig | None = None,
    **options: Any,
) -> None:
    """Run the embedding server until interrupted (Ctrl-C / SIGTERM finish the requests in
    flight first); `announce` gets the address line (default: logged at INFO; the `loom
    embed-server` command prints it). options: see `make_server`."""
    embedder = get_embedder(model, device)
    # the process is the server's: hand the GIL over sooner, so the model thread (which lets
    # it go at every GPU wait) is not held up by the event loop (H200: +8-15% texts/s)
    sys.setswitchinterval(SWITCH_INTERVAL)
    server = make_server(embedder, host, port, config=config, **options)
    banner = f"loom embed-server: {embedder.name} (dim {embedder.dim}) on {server.url}/v1"
    if server.config.api_key:
        banner += " (API key required)"
    serve_until_interrupted(server, banner, announce)
