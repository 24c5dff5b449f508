"""`ServerConfig`: the limits and access of one loom server, built once and passed down.

`loom embed-server` / `loom llm-server` build it from their flags
(`apps.commands.server_flags.config_from_args`), `make_server(...)` from its keywords.
This module imports nothing heavy, so the CLI can read its defaults cheaply.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from toolkit.errors import LoomError


@dataclass(frozen=True)
class ServerConfig:
    """Limits and access of one server, built once (`loom embed-server` / `llm-server` flags
    or `make_server` keywords) and passed down."""

    #: largest request body in bytes; a larger one is refused with 413
    max_request_bytes: int = 16 * 1024 * 1024
    #: most requests waiting for the model; one more is refused with 503 and Retry-After
    max_queue: int = 1024
    #: clients must send `Authorization: Bearer <api_key>` (None: no key; /health is open)
    api_key: str | None = None
    #: seconds that requests in flight get to finish when the server stops
    shutdown_timeout: float = 30.0
    #: most units (texts, prompts) per merged model call
    max_batch: int = 2048
    #: seconds an idle server waits for concurrent requests to join a model call
    max_wait: float = 0.005
    #: model calls in flight at once: 2 overlaps one call's tokenizing with another's GPU
    #: work (embeddings); the LLM server uses 1
    model_calls: int = 2

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_queue", "max_batch", "model_calls"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LoomError(f"{name}={value!r}: use a whole number >= 1")
        if self.shutdown_timeout < 0 or self.max_wait < 0:
            raise LoomError(
                f"shutdown_timeout ({self.shutdown_timeout}) and max_wait ({self.max_wait}) "
                "must be >= 0 seconds"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise LoomError("api_key is empty: give a key, or None for an open server")

    @classmethod
    def build(cls, config: ServerConfig | None = None, **options: Any) -> ServerConfig:
        """`config` (default: the defaults) with `options` replaced; unknown options name the
        valid ones. An api_key of None falls back to $LOOM_API_KEY."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise TypeError(f"unknown server option(s) {unknown}: use {sorted(fields)}")
        cfg = dataclasses.replace(config or cls(), **options)
        if cfg.api_key is None and os.environ.get("LOOM_API_KEY"):
            cfg = dataclasses.replace(cfg, api_key=os.environ["LOOM_API_KEY"])
        return cfg
