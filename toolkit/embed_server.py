"""`loom embed-server`: the embedding service over HTTP, speaking the OpenAI embeddings API.

Concurrent requests are gathered into one batch for the model (one GPU pass), so several
notebook processes can share one loaded model.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np

from toolkit.embed import Embedder, get_embedder
from toolkit.errors import LoomError
from toolkit.openai_http import OpenAIHandler, serve_until_interrupted


class _Job:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.result: np.ndarray | None = None
        self.error: Exception | None = None


class Batcher:
    """Collects texts from concurrent requests and embeds them in shared batches."""

    def __init__(self, embedder: Embedder, max_batch: int = 2048, max_wait: float = 0.005):
        self.embedder = embedder
        self.max_batch, self.max_wait = max_batch, max_wait
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def embed(self, texts: list[str]) -> np.ndarray:
        job = _Job(texts)
        self.queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _loop(self) -> None:
        while True:
            jobs = [self.queue.get()]
            size = len(jobs[0].texts)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                try:
                    job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                jobs.append(job)
                size += len(job.texts)
            texts = [t for j in jobs for t in j.texts]
            try:
                vecs = self.embedder.encode(texts)
                self.batches += 1
                start = 0
                for j in jobs:
                    j.result = vecs[start : start + len(j.texts)]
                    start += len(j.texts)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request
                for j in jobs:
                    j.error = e
            for j in jobs:
                j.done.set()


def make_server(
    embedder: Embedder, host: str = "127.0.0.1", port: int = 8080, model_name: str | None = None
) -> ThreadingHTTPServer:
    """An HTTP server for `embedder` (not started: call serve_forever or use a thread)."""
    batcher = Batcher(embedder)
    served = model_name or embedder.name.rstrip("/").split("/")[-1]
    aliases = {served, embedder.name, "default"}

    class Handler(OpenAIHandler):
        def model_info(self) -> dict[str, Any]:
            return {**super().model_info(), "dim": embedder.dim, "max_length": embedder.max_length}

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
                return self._error(404, f"no route {self.path}")
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, json.JSONDecodeError):
                return self._error(400, "request body is not valid JSON")
            texts = body.get("input")
            if isinstance(texts, str):
                texts = [texts]
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                return self._error(400, "'input' must be a non-empty string or list of strings")
            model = body.get("model")
            if model is not None and model not in aliases:
                return self._error(
                    404, f"model {model!r} is not served here; use {served!r}", "model_not_found"
                )
            if body.get("encoding_format", "float") not in ("float", "base64"):
                return self._error(400, "encoding_format must be 'float' or 'base64'")
            try:
                vecs = batcher.embed(texts)
            except LoomError as e:
                return self._error(400, str(e))
            except Exception as e:  # noqa: BLE001
                return self._error(500, f"embedding failed: {e}", "server_error")
            if body.get("encoding_format") == "base64":
                import base64

                emb = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vecs]
            else:
                emb = vecs.tolist()
            tokens = embedder.count_tokens(texts)
            self._send(
                200,
                {
                    "object": "list",
                    "model": served,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": e}
                        for i, e in enumerate(emb)
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )

    Handler.served = served
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.batcher = batcher  # type: ignore[attr-defined]
    return server


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    device: str | None = None,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Run the embedding server until interrupted; `announce` gets the address line
    (default: logged at INFO; the `loom embed-server` command prints it)."""
    embedder = get_embedder(model, device)
    server = make_server(embedder, host, port)
    banner = (
        f"loom embed-server: {embedder.name} (dim {embedder.dim}) on "
        f"http://{host}:{server.server_port}/v1"
    )
    serve_until_interrupted(server, banner, announce)
