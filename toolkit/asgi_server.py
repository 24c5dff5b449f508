"""Run an ASGI application with uvicorn, in the foreground or in a background thread.

`ASGIServer` binds its socket when it is made (so `server_port` is known at once, also for
port 0) and keeps the `socketserver` surface loom's callers use: `serve_forever()`,
`shutdown()`, `server_close()`, `server_port`. `shutdown()` is graceful: the server stops
accepting connections, requests in flight finish (up to `shutdown_timeout` seconds), then the
application's shutdown runs. `start()` serves from a daemon thread, and `with server:` stops
it on leaving the block.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from toolkit.errors import LoomError

logger = logging.getLogger(__name__)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port); a LoomError says what to do when it is taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as e:
        raise LoomError(
            f"cannot listen on {host}:{port} ({e}): pick another --port (0 picks a free one) "
            "or stop the process that uses it"
        ) from e
    sock.set_inheritable(True)
    return sock


class ASGIServer:
    """uvicorn serving `app` on `host:port` (bound now; `port=0` picks a free port).

    uvicorn logs through the `uvicorn.*` loggers as configured by the application
    (log_level: also set their level)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_timeout: float = 30.0,
        log_level: str | None = None,
    ) -> None:
        self.app = app
        self.socket = bind_socket(host, port)
        self.server_address = self.socket.getsockname()[:2]
        self.host = host
        self.server_port = int(self.server_address[1])
        config = uvicorn.Config(
            app,
            log_config=None,  # a library leaves the logging set-up to the application
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=shutdown_timeout,
            server_header=False,
        )
        self._uvicorn = uvicorn.Server(config)
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """The server's base URL, e.g. http://127.0.0.1:8080."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server_port}"

    @property
    def started(self) -> bool:
        """True once the server accepts requests."""
        return bool(self._uvicorn.started)

    def serve_forever(self) -> None:
        """Serve until `shutdown()` (or, in the main thread, Ctrl-C / SIGTERM); blocks."""
        if self._closed or self._serving.is_set():
            raise LoomError("this server was already started once: make a new one")
        self._serving.set()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def start(self, timeout: float = 30.0) -> ASGIServer:
        """Serve from a daemon thread; returns once requests are accepted."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"loom-server-{self.server_port}", daemon=True
        )
        self._thread.start()
        self.wait_started(timeout)
        return self

    def wait_started(self, timeout: float = 30.0) -> None:
        """Block until the server accepts requests (LoomError after `timeout` seconds)."""
        ok = _wait_for(lambda: self.started or self._stopped.is_set(), timeout)
        if not ok or not self.started:
            raise LoomError(f"the server on {self.url} did not start within {timeout} s")

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop gracefully: finish the requests in flight, then return (as socketserver's)."""
        self._uvicorn.should_exit = True
        if self._serving.is_set():
            self._stopped.wait(timeout)

    def server_close(self) -> None:
        """Release the listening socket (after `shutdown`, or instead of serving)."""
        self._closed = True
        self.socket.close()

    def __enter__(self) -> ASGIServer:
        if not self._serving.is_set():
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()


def _wait_for(ready: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() >= end:
            return False
        time.sleep(step)
    return True


def serve_until_interrupted(
    server: Any, banner: str, announce: Callable[[str], Any] | None = None
) -> None:
    """Announce `server` (`announce(banner)`, default: logged at INFO), serve until Ctrl-C or
    SIGTERM; requests in flight finish before it returns."""
    (announce or logger.info)(banner)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
