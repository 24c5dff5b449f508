"""A small OpenAI-compatible LLM server (`/v1/chat/completions`, `/v1/completions`,
`/v1/models`) over any `toolkit.llm.LLM`, e.g. the embedded model, for tests and for sharing
one loaded model between processes (`loom llm-server`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from toolkit.errors import LoomError
from toolkit.llm import LLM, get_llm
from toolkit.openai_http import OpenAIHandler, serve_until_interrupted


def make_server(
    llm: LLM, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None
) -> ThreadingHTTPServer:
    """An HTTP server for `llm` (not started: call serve_forever or run it in a thread)."""
    served = model_name or llm.name.split(":")[-1]
    lock = threading.Lock()

    class Handler(OpenAIHandler):
        def do_POST(self) -> None:  # noqa: N802
            route = self.path.rstrip("/")
            if route not in ("/v1/chat/completions", "/v1/completions"):
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                assert isinstance(body, dict)
            except (ValueError, AssertionError):
                return self._error(400, "request body is not a JSON object")
            chat = route.endswith("chat/completions")
            if chat:
                msgs = body.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    return self._error(400, "'messages' must be a non-empty list")
                prompt = "\n\n".join(
                    str(m.get("content", ""))
                    for m in msgs
                    if isinstance(m, dict) and m.get("role") != "assistant"
                )
            else:
                prompt = body.get("prompt")
                if isinstance(prompt, list) and len(prompt) == 1:
                    prompt = prompt[0]
                if not isinstance(prompt, str):
                    return self._error(400, "'prompt' must be a string")
            stop = body.get("stop") or []
            if isinstance(stop, str):
                stop = [stop]
            try:
                n = int(body.get("n", 1))
                with lock:
                    comps = llm.complete(
                        [prompt],
                        max_tokens=int(body.get("max_tokens") or 128),
                        temperature=float(body.get("temperature") or 0.0),
                        stop=stop,
                        n=n,
                        seed=int(body.get("seed") or 0),
                        chat=chat,
                    )
            except (LoomError, ValueError, TypeError) as e:
                return self._error(400, str(e))
            except Exception as e:  # noqa: BLE001 - reported to the client
                return self._error(500, f"generation failed: {e}")
            choices = []
            for i, c in enumerate(comps):
                ch: dict[str, Any] = {"index": i, "finish_reason": "stop"}
                if chat:
                    ch["message"] = {"role": "assistant", "content": c.text}
                else:
                    ch["text"] = c.text
                choices.append(ch)
            pt = comps[0].prompt_tokens
            ct = sum(c.completion_tokens for c in comps)
            self._send(
                200,
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
                },
            )

    Handler.served = served
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(
    spec: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Run an OpenAI-compatible server for the LLM `spec` until interrupted; `announce` gets
    the address line (default: logged at INFO)."""
    llm = get_llm(spec)
    llm.set_cache(None)
    server = make_server(llm, host, port)
    banner = f"loom llm-server: {llm.name} on http://{host}:{server.server_port}/v1"
    serve_until_interrupted(server, banner, announce)
