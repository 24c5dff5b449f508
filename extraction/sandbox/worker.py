"""A sandbox worker: locks itself down, then applies candidate functions to texts.

Started by `extraction.sandbox.pool` as `python -E -s -B -c ...` with an empty environment
and an empty working folder; the pipe arrives on stdin/stdout. It moves the pipe to new
descriptors, points 0-2 at /dev/null, loads every module candidates may use, locks itself
down (extraction.sandbox.lockdown), says which layers are active, and only then reads
code. If a layer fails it says which and exits without running anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from extraction.sandbox import protocol
from extraction.sandbox.lockdown import LayerError, lock_down
from extraction.sandbox.proxies import Violations, build_proxies, make_builtins


class _Timeout(BaseException):
    pass


class _Alarm:
    """SIGALRM handler: raises _Timeout; code that swallows it is interrupted twice more,
    then the worker ends itself (the parent drops the function and starts a new worker)."""

    hits = 0

    def __call__(self, *_: Any) -> None:
        self.hits += 1
        if self.hits >= 3:
            os._exit(protocol.TIMEOUT_EXIT)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        raise _Timeout()


_alarm = _Alarm()


def to_value(v: Any) -> tuple[str | None, str | None]:
    """(value, error): a function's return value as one cell, or why the function is dropped."""
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
    if v is None or isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None, None
    s = str(v)
    if len(s) > protocol.MAX_RETURN_CHARS:
        return (
            None,
            f"returned a value of {len(s):,} characters (limit {protocol.MAX_RETURN_CHARS:,})",
        )
    s = " ".join(s.split())
    return (s[: protocol.MAX_VALUE_CHARS] or None), None


class Worker:
    """The loop on the worker side of the pipe."""

    def __init__(self, conn_in: Connection, conn_out: Connection, config: dict) -> None:
        self.conn_in, self.conn_out = conn_in, conn_out
        self.timeout = float(config["timeout"])
        self.python_layer = bool(config.get("python_layer", True))
        self.violations = Violations()
        self.builtins = make_builtins(build_proxies(self.violations), self.violations)
        self.funcs: dict[str, Any] = {}

    def send(self, msg: dict) -> None:
        self.conn_out.send_bytes(protocol.encode(msg))

    def namespace(self) -> dict:
        if self.python_layer:
            return {"__builtins__": dict(self.builtins), "__name__": "sandboxed"}
        return {"__name__": "unfiltered"}  # tests of the OS layers alone

    def load(self, fid: str, code: str) -> None:
        error = None
        try:
            ns = self.namespace()
            signal.setitimer(signal.ITIMER_REAL, max(self.timeout, 1.0))
            exec(compile(code, f"<{fid}>", "exec"), ns)  # noqa: S102 - inside the locked-down worker
            signal.setitimer(signal.ITIMER_REAL, 0)
            if not callable(ns.get("extract")):
                raise ValueError("no callable extract")
            self.funcs[fid] = ns["extract"]
        except BaseException as e:  # noqa: BLE001 - any failure is the function's fault
            signal.setitimer(signal.ITIMER_REAL, 0)
            error = f"{type(e).__name__}: {e}"
        blocked = self.violations.take()
        if blocked:
            error = f"blocked: {blocked}"
        self.send({"op": "loaded", "fid": fid, "error": error and error[:200]})

    def call(self, fn: Any, text: str) -> tuple[str | None, str | None]:
        """(value, error) of one call; an ordinary exception is an abstention."""
        try:
            _alarm.hits = 0
            signal.setitimer(signal.ITIMER_REAL, self.timeout)
            v = fn(text)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return None, f"timeout: a call took longer than {self.timeout}s"
        except MemoryError:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return None, "memory limit exceeded"
        except OSError as e:  # extraction code does no I/O: the system said no
            signal.setitimer(signal.ITIMER_REAL, 0)
            return None, f"blocked by the operating system: {type(e).__name__}: {e}"
        except BaseException:  # noqa: BLE001 - an exception on one document = abstain
            signal.setitimer(signal.ITIMER_REAL, 0)
            v = None
        blocked = self.violations.take()
        if blocked:
            return None, f"blocked: {blocked}"
        try:
            return to_value(v)
        except BaseException as e:  # noqa: BLE001 - a hostile __str__ and the like
            return None, f"unusable return value ({type(e).__name__})"

    def run(self, fids: list[str], texts: list[str]) -> None:
        for fid in fids:
            fn = self.funcs.get(fid)
            values: list[str | None] = []
            error = None if fn is not None else "not loaded"
            for t in texts if fn is not None else ():
                v, error = self.call(fn, t)
                if error:
                    break
                values.append(v)
            try:
                msg = {"op": "result", "fid": fid, "values": None if error else values,
                       "error": error and error[: protocol.MAX_REASON_CHARS]}  # fmt: skip
                self.send(msg)
            except MemoryError:
                self.send({"op": "result", "fid": fid, "values": None,
                           "error": "memory limit exceeded"})  # fmt: skip

    def serve(self) -> None:
        while True:
            try:
                msg = json.loads(self.conn_in.recv_bytes())
            except EOFError:
                return
            op = msg.get("op")
            if op == "load":
                self.load(msg["fid"], msg["code"])
            elif op == "run":
                self.run(msg["fids"], msg["texts"])
            else:
                return


def main(config_json: str) -> None:
    """Entry point of the worker interpreter."""
    config = json.loads(config_json)
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    conn_in, conn_out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    signal.signal(signal.SIGALRM, _alarm)
    worker = Worker(conn_in, conn_out, config)  # loads every module candidates may use
    try:
        layers = lock_down(config, keep_fds={rfd, wfd})
    except LayerError as e:
        conn_out.send_bytes(protocol.encode({"op": "refused", "layer": e.layer, "error": str(e)}))
        sys.exit(3)
    worker.send({"op": "ready", "layers": layers})
    worker.serve()
