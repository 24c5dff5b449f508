"""The flags `loom embed-server` and `loom llm-server` share: limits, API key, shutdown."""

from __future__ import annotations

import argparse
import os

from toolkit.errors import LoomError
from toolkit.server_config import ServerConfig


def add_server_flags(
    p: argparse.ArgumentParser, max_batch: int | None = None, model_calls: int | None = None
) -> None:
    """Add the limits, API key and shutdown flags to a server sub-command (`max_batch`,
    `model_calls`: its defaults, else ServerConfig's)."""
    d = ServerConfig()
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=d.max_request_bytes,
        help="largest request body; a larger one is answered with HTTP 413",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help="most requests waiting for the model; more are answered with 503 + Retry-After",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=max_batch or d.max_batch,
        help="most texts (embeddings) or prompts (LLM) merged into one model call",
    )
    p.add_argument(
        "--model-calls",
        type=int,
        default=model_calls or d.model_calls,
        help="model calls in flight at once (2 overlaps tokenizing with GPU work)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: $LOOM_API_KEY if set, else open; "
        "/health stays open). Prefer the environment variable: flags show in `ps`",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=d.shutdown_timeout,
        help="seconds requests in flight get to finish after Ctrl-C / SIGTERM",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server's ServerConfig from its flags (errors name the flag)."""
    for flag in ("max_request_bytes", "max_queue", "max_batch", "model_calls"):
        value = getattr(args, flag)
        if value < 1:
            raise LoomError(f"--{flag.replace('_', '-')} {value}: give a whole number >= 1")
    if args.shutdown_timeout < 0:
        raise LoomError(f"--shutdown-timeout {args.shutdown_timeout}: give seconds >= 0")
    key = args.api_key if args.api_key is not None else os.environ.get("LOOM_API_KEY")
    if key is not None and not key.strip():
        raise LoomError("--api-key / $LOOM_API_KEY is empty: give a key or leave both unset")
    return ServerConfig(
        max_request_bytes=args.max_request_bytes,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        model_calls=args.model_calls,
        api_key=key,
        shutdown_timeout=args.shutdown_timeout,
    )
