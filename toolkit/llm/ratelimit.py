"""Requests-per-minute and tokens-per-minute limits for an LLM client: two token buckets.

Why not a rate-limit library: a tokens-per-minute limit must be taken before a request with
an estimate (the prompt's tokens plus `max_tokens`) and corrected after it with the tokens the
server reports, which may leave the bucket in debt; `limits` and `pyrate-limiter` take a fixed
weight up front and never give any back, and `aiolimiter` is for asyncio code, while the
OpenAI client sends from threads. Each bucket holds at most one minute's allowance and refills
continuously, as the servers that publish these limits (OpenAI, vLLM's proxies) count them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from toolkit.errors import LoomError

log = logging.getLogger(__name__)


class RateLimiter:
    """Blocks `acquire` until both limits allow one more request of `tokens` tokens.

    requests_per_minute / tokens_per_minute: None or 0 for no limit. clock and sleep are
    injectable so that tests run without waiting.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, v in (("requests_per_minute", requests_per_minute),
                        ("tokens_per_minute", tokens_per_minute)):  # fmt: skip
            if v is not None and v < 0:
                raise LoomError(f"{name}={v}: give a positive limit, or 0 / None for none")
        self.rpm = float(requests_per_minute or 0)
        self.tpm = float(tokens_per_minute or 0)
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        now = clock()
        self._req, self._tok, self._t = self.rpm, self.tpm, now
        self.waited = 0.0  # seconds spent waiting, for reports and tests

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _refill(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._t)
        self._t = now
        if self.rpm:
            self._req = min(self.rpm, self._req + dt * self.rpm / 60.0)
        if self.tpm:
            self._tok = min(self.tpm, self._tok + dt * self.tpm / 60.0)

    def acquire(self, tokens: int = 0) -> None:
        """Wait until a request estimated at `tokens` tokens may go, then take it."""
        if not self.active:
            return
        if self.tpm:
            tokens = min(tokens, int(self.tpm))  # one request larger than a minute's allowance
        while True:
            with self._lock:
                self._refill()
                need_r = 1.0 - self._req if self.rpm else 0.0
                need_t = tokens - self._tok if self.tpm else 0.0
                if need_r <= 0 and need_t <= 0:
                    if self.rpm:
                        self._req -= 1.0
                    if self.tpm:
                        self._tok -= tokens
                    return
                wait = max(
                    need_r * 60.0 / self.rpm if self.rpm and need_r > 0 else 0.0,
                    need_t * 60.0 / self.tpm if self.tpm and need_t > 0 else 0.0,
                )
            log.debug("rate limit: waiting %.2f s", wait)
            self.waited += wait
            self.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the tokens taken for a request once the server reported its real usage."""
        if not self.tpm:
            return
        with self._lock:
            self._refill()
            self._tok = min(self.tpm, self._tok + min(estimated, int(self.tpm)) - actual)
