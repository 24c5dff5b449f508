"""`loom llm-server`: serve an LLM (default: the embedded one) over the OpenAI API."""

from __future__ import annotations

import argparse

from apps.commands.server_flags import add_server_flags, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm-server", help="serve an LLM over an OpenAI-compatible HTTP API")
    p.add_argument("--llm", default=None, help="LLM spec (default: embedded SmolLM2-135M)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_server_flags(p, max_batch=32, model_calls=1)  # prompts per call (toolkit.llm_server)
    p.set_defaults(func=cmd_llm_server)


def cmd_llm_server(args: argparse.Namespace) -> int:
    from toolkit.llm_server import serve

    config = config_from_args(args)
    serve(
        args.llm, args.host, args.port, announce=lambda line: print(line, flush=True), config=config
    )
    return 0
