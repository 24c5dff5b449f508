"""JSON over HTTP with retries: the one request loop behind loom's embeddings and LLM clients.

Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff
(`backoff`, 2 x `backoff`, 4 x `backoff`, ... seconds between attempts); other HTTP errors
fail at once. A 429 or 503 with a `Retry-After` header (seconds or an HTTP date) waits that
long instead, up to `max_retry_after` seconds.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
import urllib.error
import urllib.request
from typing import Any

from toolkit.errors import LoomError

logger = logging.getLogger(__name__)

#: the longest wait a server's Retry-After gets by default, in seconds
MAX_RETRY_AFTER = 60.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header value (delay-seconds or an HTTP date);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class HTTPRefused(LoomError):
    """The server answered with an HTTP error status (`code`, full response `body`);
    `retry_after`: the seconds its Retry-After header asked for (None without one)."""

    def __init__(self, url: str, code: int, body: str, retry_after: float | None = None) -> None:
        super().__init__(f"{url} answered HTTP {code}: {body[:500]}")
        self.url, self.code, self.body = url, code, body
        self.retry_after = retry_after

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
    max_retry_after: float = MAX_RETRY_AFTER,
) -> Any:
    """The decoded JSON answer to GET (payload None) or POST `payload` as JSON.

    Raises HTTPRefused at once for a non-retryable HTTP status, Unreachable after `attempts`
    failed tries. retry_bad_json: also retry an answer that is not JSON (else it raises
    json.JSONDecodeError). A 429/503 answer's Retry-After replaces the backoff before the
    next try, capped at `max_retry_after` seconds.
    """
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            asked = getattr(last, "retry_after", None)
            if asked is not None:
                wait = min(asked, max_retry_after)
                logger.info("%s is busy: retrying in %.1f s (Retry-After)", url, wait)
            time.sleep(wait)
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            after = None
            if e.code in (429, 503):
                after = parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
            refused = HTTPRefused(url, e.code, e.read().decode(errors="replace"), after)
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
    max_retry_after: float = MAX_RETRY_AFTER,
) -> Any:
    """GET (payload None) or POST JSON with retries and exponential backoff on network/5xx
    errors (a 429/503's Retry-After, up to `max_retry_after` seconds, instead of the backoff)."""
    return request_json(
        url, payload, api_key, timeout, retries + 1, backoff, max_retry_after=max_retry_after
    )
