"""JSON over HTTP with retries: the one request loop behind loom's embeddings and LLM clients.

Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff
(`backoff`, 2 x `backoff`, 4 x `backoff`, ... seconds between attempts); other HTTP errors
fail at once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from toolkit.errors import LoomError


class HTTPRefused(LoomError):
    """The server answered with an HTTP error status (`code`, full response `body`)."""

    def __init__(self, url: str, code: int, body: str) -> None:
        super().__init__(f"{url} answered HTTP {code}: {body[:500]}")
        self.url, self.code, self.body = url, code, body

    @property
    def retryable(self) -> bool:
        return self.code == 429 or self.code >= 500


class Unreachable(LoomError):
    """Every attempt failed; `last` is the last failure (an exception, None after 0 attempts)."""

    def __init__(self, url: str, attempts: int, last: Exception | None) -> None:
        super().__init__(
            f"cannot reach {url} after {attempts} tries ({last}); check that the server is "
            "running and the URL is right"
        )
        self.url, self.attempts, self.last = url, attempts, last


def api_base(url: str) -> str:
    """Normalise a server URL to its `/v1` base."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def request_json(
    url: str,
    payload: dict | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    attempts: int = 5,
    backoff: float = 0.5,
    method: str | None = None,
    retry_bad_json: bool = False,
) -> Any:
    """The decoded JSON answer to GET (payload None) or POST `payload` as JSON.

    Raises HTTPRefused at once for a non-retryable HTTP status, Unreachable after `attempts`
    failed tries. retry_bad_json: also retry an answer that is not JSON (else it raises
    json.JSONDecodeError).
    """
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            refused = HTTPRefused(url, e.code, e.read().decode(errors="replace"))
            if not refused.retryable:
                raise refused from e
            last = refused
        except (urllib.error.URLError, OSError) as e:  # TimeoutError, ConnectionError too
            last = e
        except json.JSONDecodeError as e:
            if not retry_bad_json:
                raise
            last = e
    raise Unreachable(url, attempts, last)


def http_json(
    url: str,
    payload: dict | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 0.5,
) -> Any:
    """GET (payload None) or POST JSON with retries and exponential backoff on network/5xx errors."""
    return request_json(url, payload, api_key, timeout, retries + 1, backoff)
