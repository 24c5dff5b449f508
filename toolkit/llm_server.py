"""A small OpenAI-compatible LLM server (`/v1/chat/completions`, `/v1/completions`,
`/v1/models`) over any `toolkit.llm.LLM`, e.g. the embedded model, for tests and for sharing
one loaded model between processes (`loom llm-server`).

Chat messages keep their roles: a conversation (system, user and assistant turns) is laid out
by the model's own chat template; a single user message goes through `LLM.complete(chat=True)`
exactly as a local call would. `finish_reason` is "length" when `max_tokens` cut the answer,
"stop" otherwise. Concurrent requests with the same generation parameters are merged into one
`complete` call; limits, API key, metrics and shutdown: `toolkit.openai_http`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from toolkit.asgi_server import ASGIServer
from toolkit.batcher import MicroBatcher
from toolkit.llm import LLM, Completion, get_llm
from toolkit.openai_http import (
    BadRequest,
    FastJSONResponse,
    ServerConfig,
    build_app,
    read_json,
    serve_until_interrupted,
)
from toolkit.server_metrics import ServerMetrics

ROLES = ("system", "user", "assistant")
#: prompts per merged `complete` call unless the server is given max_batch
LLM_MAX_BATCH = 32


@dataclass(frozen=True)
class GenerationParams:
    """The parameters of one request that `LLM.complete` takes besides the prompts."""

    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    n: int
    seed: int
    chat: bool


def check_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI chat messages as [{"role", "content"}] with text content; BadRequest otherwise.

    Content may be a string or a list of text parts; a "developer" message is a system one."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] is a {type(m).__name__}, not an object")
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ROLES:
            raise BadRequest(
                f"messages[{i}] has role {m.get('role')!r}: this server takes {ROLES} "
                "(no tools or function calls)"
            )
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise BadRequest(f"messages[{i}].content[{j}]: only text parts are served")
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": role, "content": content})
    return out


def chat_prompt(llm: LLM, messages: list[dict[str, str]]) -> tuple[str, bool]:
    """(prompt, chat) to give `llm.complete` for checked `messages`.

    One user message: its text with chat=True, exactly as a local `complete` call. A longer
    conversation: laid out by the model's chat template (a transformers tokenizer's or the
    GGUF file's) and sent with chat=False, so system and assistant turns keep their roles.
    A model without a template gets a "Role: text" transcript as one user message."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"], True
    tokenizer = getattr(llm, "tokenizer", None)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text), False
    llama = getattr(llm, "model", None)
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def token_text(token_id: int) -> str:
            if token_id < 0:
                return ""
            return llama.detokenize([token_id], special=True).decode(errors="ignore")

        formatter = Jinja2ChatFormatter(
            template, token_text(llama.token_eos()), token_text(llama.token_bos())
        )
        return formatter(messages=messages).prompt, False
    transcript = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return transcript, True


def finish_reason(completion: Completion, max_tokens: int) -> str:
    """The backend's finish reason when it gave one, else "length" when the completion used
    all of `max_tokens` and "stop" otherwise."""
    given = getattr(completion, "finish_reason", None)
    if given in ("stop", "length"):
        return given
    return "length" if completion.completion_tokens >= max_tokens else "stop"


def _number(body: dict[str, Any], key: str, kind: type, default: Any, minimum: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{key}' must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise BadRequest(f"'{key}' must be a whole number, got {value!r}")
    if value < minimum:
        raise BadRequest(f"'{key}' must be >= {minimum}, got {value!r}")
    return kind(value)


def check_request(body: dict[str, Any], chat: bool, llm: LLM) -> tuple[str, GenerationParams]:
    """(prompt, parameters) of a completion request; BadRequest names what is wrong."""
    if body.get("stream"):
        raise BadRequest("stream=true is not supported by this server: send stream=false")
    if chat:
        prompt, chat = chat_prompt(llm, check_messages(body.get("messages")))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string (or a list of one string)")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("'stop' must be a string or a list of strings")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    params = GenerationParams(
        max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", int, 128, 1),
        temperature=_number(body, "temperature", float, 0.0, 0),
        stop=tuple(stop),
        n=_number(body, "n", int, 1, 1),
        seed=_number(body, "seed", int, 0, 0),
        chat=chat,
    )
    return prompt, params


def complete_many(llm: LLM, items: Sequence[tuple[str, GenerationParams]]) -> list[list[Any]]:
    """One `llm.complete` call for requests that share their parameters; per request its n
    completions."""
    p = items[0][1]
    comps = llm.complete(
        [prompt for prompt, _ in items],
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        stop=list(p.stop),
        n=p.n,
        seed=p.seed,
        chat=p.chat,
    )
    return [comps[i * p.n : (i + 1) * p.n] for i in range(len(items))]


def make_app(llm: LLM, model_name: str | None = None, config: ServerConfig | None = None) -> Any:
    """The ASGI application of the LLM server; `.state.batcher`, `.state.metrics`."""
    config = config or ServerConfig.build(max_batch=LLM_MAX_BATCH, model_calls=1)
    served = model_name or llm.name.split(":")[-1]
    metrics = ServerMetrics("llm")

    def run_batch(items: list[tuple[str, GenerationParams]]) -> list[list[Completion]]:
        out = complete_many(llm, items)
        metrics.texts.inc(len(items))
        return out

    batcher = MicroBatcher(
        run_batch,
        size=lambda item: item[1].n,
        max_batch=config.max_batch,
        max_wait=config.max_wait,
        max_queue=config.max_queue,
        metrics=metrics,
        name="llm",
        concurrency=config.model_calls,
    )

    def handler(chat: bool) -> Callable[[Request], Any]:
        async def complete(request: Request) -> Response:
            body = await read_json(request, config.max_request_bytes)
            prompt, params = check_request(body, chat, llm)
            comps = await batcher.submit((prompt, params), key=params)
            choices = []
            for i, c in enumerate(comps):
                ch: dict[str, Any] = {
                    "index": i,
                    "finish_reason": finish_reason(c, params.max_tokens),
                    "logprobs": None,
                }
                if chat:
                    ch["message"] = {"role": "assistant", "content": c.text}
                else:
                    ch["text"] = c.text
                choices.append(ch)
            pt = comps[0].prompt_tokens
            ct = sum(c.completion_tokens for c in comps)
            metrics.tokens("prompt").inc(pt)
            metrics.tokens("completion").inc(ct)
            return FastJSONResponse(
                {
                    "id": f"loom-{time.time_ns()}",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": served,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": pt,
                        "completion_tokens": ct,
                        "total_tokens": pt + ct,
                    },
                }
            )

        return complete

    app = build_app(
        served,
        {"/v1/chat/completions": handler(True), "/v1/completions": handler(False)},
        config,
        metrics,
        on_shutdown=batcher.aclose,
    )
    app.state.batcher, app.state.metrics = batcher, metrics
    return app


def make_server(
    llm: LLM,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    *,
    config: ServerConfig | None = None,
    **options: Any,
) -> ASGIServer:
    """A server for `llm` on host:port (bound, not started: call `serve_forever()`, or
    `start()` for a background thread; `shutdown()` finishes requests in flight).

    options: fields of `ServerConfig` (max_request_bytes, max_queue, api_key,
    shutdown_timeout, max_batch: prompts per merged call, default 32, max_wait,
    model_calls: default 1)."""
    options.setdefault("max_batch", config.max_batch if config else LLM_MAX_BATCH)
    options.setdefault("model_calls", config.model_calls if config else 1)
    config = ServerConfig.build(config, **options)
    app = make_app(llm, model_name, config)
    server = ASGIServer(app, host, port, shutdown_timeout=config.shutdown_timeout)
    server.config = config  # type: ignore[attr-defined]
    server.batcher = app.state.batcher  # type: ignore[attr-defined]
    server.metrics = app.state.metrics  # type: ignore[attr-defined]
    return server


def serve(
    spec: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    announce: Callable[[str], Any] | None = None,
    *,
    config: ServerConfig | None = None,
    **options: Any,
) -> None:
    """Run an OpenAI-compatible server for the LLM `spec` until interrupted (Ctrl-C / SIGTERM
    finish the requests in flight first); `announce` gets the address line (default: logged
    at INFO). options: see `make_server`."""
    llm = get_llm(spec)
    llm.set_cache(None)
    server = make_server(llm, host, port, config=config, **options)
    banner = f"loom llm-server: {llm.name} on {server.url}/v1"
    if server.config.api_key:
        banner += " (API key required)"
    serve_until_interrupted(server, banner, announce)
