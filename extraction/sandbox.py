"""Run untrusted extraction functions (`def extract(text: str) -> str`) safely.

Defence in layers: an AST check (imports only from an allow-list, no dunder attributes, no
open/eval/exec/getattr/...), restricted builtins, and separate worker processes with CPU,
memory and file-size limits, sockets disabled and a wall-clock timeout per call (SIGALRM in
the worker, plus a kill from the parent if a worker stops answering). A function that hangs,
crashes, floods memory or tries to escape is dropped with a reason; the run goes on.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any

ALLOWED_IMPORTS = frozenset(
    {
        "re",
        "json",
        "datetime",
        "html",
        "string",
        "math",
        "collections",
        "itertools",
        "functools",
        "unicodedata",
        "textwrap",
        "decimal",
        "fractions",
        "statistics",
        "calendar",
        "difflib",
        "operator",
        "typing",
        "dataclasses",
        "enum",
    }
)
FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "input",
        "breakpoint",
        "memoryview",
        "exit",
        "quit",
        "help",
        "__builtins__",
        "__loader__",
        "__spec__",
        "classmethod",
        "staticmethod",
        "super",
    }
)
SAFE_BUILTINS = (
    "abs all any ascii bin bool bytes callable chr dict divmod enumerate filter float format "
    "frozenset hasattr hash hex id int isinstance issubclass iter len list map max min next oct "
    "object ord pow range repr reversed round set slice sorted str sum tuple type zip True False None "
    "Exception ValueError TypeError KeyError IndexError AttributeError RuntimeError "
    "StopIteration ZeroDivisionError ArithmeticError LookupError NotImplementedError"
).split()
MAX_VALUE_CHARS = 500


def check_code(code: str, entry: str = "extract") -> str | None:
    """None when `code` passes the static checks, else the reason it is rejected."""
    if not isinstance(code, str) or not code.strip():
        return "empty code"
    if len(code) > 20_000:
        return "code longer than 20000 characters"
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"syntax error: {e.msg} (line {e.lineno})"
    defined = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] not in ALLOWED_IMPORTS:
                    return f"import of {a.name!r} is not allowed"
        elif isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").split(".")[0] not in ALLOWED_IMPORTS:
                return f"import from {node.module!r} is not allowed"
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            return f"use of {node.id!r} is not allowed"
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return f"access to attribute {node.attr!r} is not allowed"
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            return "global/nonlocal statements are not allowed"
        elif isinstance(node, ast.FunctionDef) and node.name == entry:
            defined = True
    if not defined:
        return f"no function named {entry!r}"
    return None


# ----------------------------------------------------------------- worker process side


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    if level or name.split(".")[0] not in ALLOWED_IMPORTS:
        raise ImportError(f"import of {name!r} is not allowed")
    return __import__(name, globals, locals, fromlist, level)


def _lock_down(memory_mb: int, cpu_seconds: int) -> None:
    import builtins
    import resource
    import signal
    import socket

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow: writes fail

    def _no_net(*a, **k):
        raise PermissionError("network access is disabled in the sandbox")

    socket.socket = _no_net  # type: ignore[misc,assignment]
    socket.create_connection = _no_net  # type: ignore[assignment]
    builtins.open = _no_net  # type: ignore[assignment]


def _to_value(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        v = v[0] if v else None
        if v is None:
            return None
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        return None
    s = " ".join(str(v).split())
    return s[:MAX_VALUE_CHARS] if s else None


def _worker(conn, memory_mb: int, cpu_seconds: int, timeout: float) -> None:
    import builtins
    import signal

    _lock_down(memory_mb, cpu_seconds)
    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}
    safe["__import__"] = _guarded_import
    safe["print"] = lambda *a, **k: None

    class _Timeout(BaseException):
        pass

    def _alarm(*_):
        raise _Timeout()

    signal.signal(signal.SIGALRM, _alarm)
    conn.send(("ready",))
    funcs: dict[str, object] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        if msg[0] == "load":
            _, fid, code = msg
            try:
                ns: dict = {"__builtins__": dict(safe), "__name__": "sandboxed"}
                signal.setitimer(signal.ITIMER_REAL, max(timeout, 1.0))
                exec(compile(code, f"<{fid}>", "exec"), ns)  # noqa: S102 - checked code, sandboxed
                signal.setitimer(signal.ITIMER_REAL, 0)
                fn = ns.get("extract")
                if not callable(fn):
                    raise ValueError("no callable extract")
                funcs[fid] = fn
                conn.send(("loaded", fid, None))
            except BaseException as e:  # noqa: BLE001 - any failure is the function's fault
                signal.setitimer(signal.ITIMER_REAL, 0)
                conn.send(("loaded", fid, f"{type(e).__name__}: {e}"[:200]))
            continue
        _, fids, texts = msg  # ("run", fids, texts)
        for fid in fids:
            fn = funcs.get(fid)
            out: list[str | None] = []
            err = None
            for t in texts:
                try:
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                    v = fn(t)  # type: ignore[operator]
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    out.append(_to_value(v))
                except _Timeout:
                    err = f"timeout: a call took longer than {timeout}s"
                except MemoryError:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    err = "memory limit exceeded"
                except RecursionError:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    out.append(None)
                except Exception:  # noqa: BLE001 - an exception on one document = abstain
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    out.append(None)
                if err:
                    break
            try:
                conn.send(("result", fid, out if err is None else None, err))
            except MemoryError:
                conn.send(("result", fid, None, "memory limit exceeded"))


class _Pipes:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.r = Connection(rfd, writable=False)
        self.w = Connection(wfd, readable=False)

    def send(self, obj) -> None:
        self.w.send(obj)

    def recv(self):
        return self.r.recv()


def _worker_main(memory_mb: int, cpu_seconds: int, timeout: float) -> None:
    """Entry point of a worker interpreter: messages come on stdin and go out on stdout."""
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _worker(_Pipes(rfd, wfd), memory_mb, cpu_seconds, timeout)


# ----------------------------------------------------------------- parent side


class _Proc:
    """A fresh interpreter (`python -c`), so nothing of the parent leaks into the worker."""

    def __init__(self, memory_mb: int, cpu_seconds: int, timeout: float) -> None:
        cmd = (
            "from extraction.sandbox import _worker_main; "
            f"_worker_main({int(memory_mb)}, {int(cpu_seconds)}, {float(timeout)!r})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.rconn = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.wconn = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.proc.stdout.close()
        self.proc.stdin.close()
        self.loaded: set[str] = set()
        self.ready = False

    def send(self, obj) -> None:
        self.wconn.send(obj)

    def recv(self):
        return self.rconn.recv()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.rconn.close()
        self.wconn.close()


class Sandbox:
    """A pool of locked-down worker processes that apply extraction functions to texts."""

    def __init__(
        self,
        n_workers: int | None = None,
        timeout: float = 1.0,
        memory_mb: int = 512,
        cpu_seconds: int = 3600,
        chunk_size: int = 128,
        startup_timeout: float = 120.0,
    ) -> None:
        self.n_workers = max(1, n_workers or min(4, os.cpu_count() or 1))
        self.timeout, self.memory_mb, self.cpu_seconds = timeout, memory_mb, cpu_seconds
        self.chunk_size = chunk_size
        self.startup_timeout = startup_timeout

    def run(
        self, functions: dict[str, str], texts: Sequence[str], show_progress: bool = False
    ) -> tuple[dict[str, list[str | None]], dict[str, str]]:
        """Apply each function to every text.

        Returns (outputs: fid -> one value or None per text, failures: fid -> reason). A failed
        function gets no outputs; the others are unaffected.
        """
        from tqdm.auto import tqdm

        failures: dict[str, str] = {}
        live: dict[str, str] = {}
        for fid, code in functions.items():
            reason = check_code(code)
            if reason:
                failures[fid] = f"rejected: {reason}"
            else:
                live[fid] = code
        texts = list(texts)
        results: dict[str, list[str | None]] = {f: [None] * len(texts) for f in live}
        if not live or not texts:
            return ({f: results[f] for f in live if f not in failures}, failures)
        size = max(1, min(self.chunk_size, -(-len(texts) // self.n_workers)))
        pending = list(range(0, len(texts), size))
        procs = [self._spawn() for _ in range(min(self.n_workers, len(pending)))]
        busy: dict[int, tuple[int, list[str], float]] = {}  # worker -> (chunk, fids left, t0)
        bar = tqdm(total=len(texts), desc="apply functions", disable=not show_progress)
        try:
            while pending or busy:
                for w, p in enumerate(procs):
                    if w in busy or not pending:
                        continue
                    start = pending.pop(0)
                    fids = [f for f in live if f not in failures]
                    if not fids:
                        pending.clear()
                        break
                    if not self._load(p, fids, live, failures):
                        procs[w] = p = self._spawn()
                        pending.insert(0, start)
                        continue
                    fids = [f for f in fids if f not in failures]
                    p.send(("run", fids, texts[start : start + size]))
                    busy[w] = (start, fids, time.monotonic())
                if not busy:
                    continue
                ready = mp_wait([procs[w].rconn for w in busy], timeout=0.2)
                now = time.monotonic()
                for w in list(busy):
                    p = procs[w]
                    start, fids, t0 = busy[w]
                    n = min(size, len(texts) - start)
                    if p.rconn in ready:
                        try:
                            _, fid, out, err = p.recv()
                        except (EOFError, OSError):
                            failures[fids[0]] = "crashed: the worker process died"
                            self._restart(procs, w, busy, pending, start, fids[1:])
                            continue
                        if err:
                            failures[fid] = err
                        elif fid not in failures:
                            results[fid][start : start + n] = out
                        fids = fids[1:]
                        if fids:
                            busy[w] = (start, fids, now)
                        else:
                            del busy[w]
                            bar.update(n)
                    elif now - t0 > self.timeout * n + 5.0 or not p.alive():
                        failures[fids[0]] = (
                            "crashed: the worker process died"
                            if not p.alive()
                            else "timeout: the worker stopped answering"
                        )
                        self._restart(procs, w, busy, pending, start, fids[1:])
        finally:
            bar.close()
            for p in procs:
                try:
                    p.send(("stop",))
                except (OSError, BrokenPipeError):
                    pass
                p.kill()
        return ({f: v for f, v in results.items() if f not in failures}, failures)

    def _spawn(self) -> _Proc:
        return _Proc(self.memory_mb, self.cpu_seconds, self.timeout)

    def _restart(self, procs, w, busy, pending, start, rest) -> None:
        procs[w].kill()
        procs[w] = self._spawn()
        del busy[w]
        if rest:
            pending.insert(0, start)  # rerun the chunk for the functions that did not finish

    def _load(self, p: _Proc, fids: list[str], live: dict[str, str], failures: dict) -> bool:
        if not p.ready:  # interpreter start-up can take long on a busy machine
            if not p.rconn.poll(self.startup_timeout):
                p.kill()
                raise RuntimeError(f"a sandbox worker did not start within {self.startup_timeout}s")
            p.recv()
            p.ready = True
        for fid in fids:
            if fid in p.loaded:
                continue
            try:
                p.send(("load", fid, live[fid]))
                if not p.rconn.poll(max(self.timeout, 1.0) + 5.0):
                    failures[fid] = "timeout: defining the function did not finish"
                    p.kill()
                    return False
                _, _, err = p.recv()
            except (EOFError, OSError):
                failures[fid] = "crashed while defining the function"
                p.kill()
                return False
            if err:
                failures[fid] = f"failed to load: {err}"
            else:
                p.loaded.add(fid)
        return True


def _run_chunk(texts: list[str], functions: dict[str, str], settings: dict[str, Any]) -> list:
    """Inside a Dask worker: a sandbox of its own over one chunk; (outputs, failures) per text."""
    outputs, failures = Sandbox(n_workers=1, **settings).run(functions, texts)
    return [({f: vals[i] for f, vals in outputs.items()}, failures) for i in range(len(texts))]


def run_on_cluster(
    sandbox: Sandbox, functions: dict[str, str], texts: Sequence[str], client: Any
) -> tuple[dict[str, list[str | None]], dict[str, str]]:
    """`Sandbox.run` with the texts split over a Dask cluster (one sandbox per task).

    Same results as the local run: a function that fails on any chunk is dropped everywhere.
    """
    import functools

    from toolkit.distributed import parallel_map

    settings = {"timeout": sandbox.timeout, "memory_mb": sandbox.memory_mb,
                "cpu_seconds": sandbox.cpu_seconds, "chunk_size": sandbox.chunk_size,
                "startup_timeout": sandbox.startup_timeout}  # fmt: skip
    per_text = parallel_map(
        functools.partial(_run_chunk, functions=functions, settings=settings), list(texts), client
    )
    failures: dict[str, str] = {}
    for _, fails in per_text:
        failures.update(fails)
    outputs = {
        fid: [vals.get(fid) for vals, _ in per_text] for fid in functions if fid not in failures
    }
    return outputs, failures
