"""The HTTP plumbing shared by loom's OpenAI-compatible servers (embeddings and LLM)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

logger = logging.getLogger(__name__)


class OpenAIHandler(BaseHTTPRequestHandler):
    """JSON replies, OpenAI-style errors, `/health` and `/v1/models` for one served model.

    Subclasses set `served` (the model id), may add fields to `model_info`, and handle POST.
    """

    protocol_version = "HTTP/1.1"
    served = "model"

    def log_message(self, *args: Any) -> None:  # quiet by default
        pass

    def model_info(self) -> dict[str, Any]:
        return {"id": self.served, "object": "model", "created": 0, "owned_by": "loom"}

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(code, {"error": {"message": message, "type": kind, "code": code}})

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.rstrip("/")
        if path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok", "model": self.served})
        elif path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [self.model_info()]})
        else:
            self._error(404, f"no route {self.path}")


def serve_until_interrupted(
    server: HTTPServer, banner: str, announce: Callable[[str], Any] | None = None
) -> None:
    """Announce `server` (`announce(banner)`, default: logged at INFO), serve until Ctrl-C."""
    (announce or logger.info)(banner)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
