"""Tokenization in worker processes: the Rust tokenizer and the id arrays outside the GIL.

The Rust batch call releases the GIL, but turning its output into arrays (one Python list
of ids per text) does not; on a many-core GPU host that conversion, not the GPU, bounds
end-to-end throughput, and in a server it competes with the event loop. Here each worker
is a plain `python -m toolkit.embed.tokenize_worker` child (started with fork+exec, so no
CUDA context, thread or lock of the parent is inherited and no `__main__` is re-imported),
holding its own copy of the tokenizer, one core each (TOKENIZERS_PARALLELISM=false). The
parent sends texts and receives `Chunk` arrays over pipes (length-prefixed pickles; both
ends are this code, nothing from a user's documents is unpickled here).

A worker that dies (killed, out of memory) fails the call with a LoomError naming it and
the pool is closed; `toolkit.embed.pipeline` then falls back to threads for later calls.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from toolkit.embed.chunks import Chunk, tokenize_chunk
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)
HEADER = struct.Struct("<Q")
ROOT = Path(__file__).resolve().parents[2]  # where `toolkit` is importable from


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One frame, or None at end of stream."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


class TokenizerProcesses:
    """`n` worker processes tokenizing with one tokenizer; `submit` returns a Future[Chunk]."""

    def __init__(self, tokenizer: Any, n: int) -> None:
        spec = pickle.dumps(tokenizer.to_str(), protocol=5)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.closed = False
        self.owner = os.getpid()  # a forked child must not stop its parent's workers
        self.procs: list[subprocess.Popen] = []
        self.idle: queue.Queue[subprocess.Popen] = queue.Queue()
        try:
            for _ in range(n):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "toolkit.embed.tokenize_worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                    close_fds=True,
                )
                self.procs.append(proc)
                write_frame(proc.stdin, spec)
                self.idle.put(proc)
        except OSError as e:
            self.close()
            raise LoomError(f"cannot start tokenizer worker processes: {e}") from e
        self.threads = ThreadPoolExecutor(n, thread_name_prefix="loom-tokenize-io")
        atexit.register(self.close)

    def submit(self, *args: Any) -> Future:
        """`tokenize_chunk(tokenizer, *args)` in a worker."""
        return self.threads.submit(self._call, pickle.dumps(args, protocol=5))

    def _call(self, request: bytes) -> Chunk:
        if self.closed:
            raise LoomError("the tokenizer worker processes were closed")
        proc = self.idle.get()
        try:
            write_frame(proc.stdin, request)
            reply = read_frame(proc.stdout)
        except (OSError, ValueError) as e:
            reply, err = None, e
        else:
            err = None
        if reply is None:
            code = proc.poll()
            self.close()
            raise LoomError(
                f"tokenizer worker process {proc.pid} stopped (exit code {code}"
                f"{', ' + str(err) if err else ''}); tokenizing on threads from now on"
            )
        self.idle.put(proc)
        status, payload = pickle.loads(reply)
        if status != "ok":
            raise LoomError(f"tokenizer worker failed: {payload}")
        return Chunk(*payload)

    def close(self) -> None:
        """Stop every worker (idempotent): end of input, then kill after a second."""
        self.closed = True
        if os.getpid() != self.owner:
            return
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        threads = getattr(self, "threads", None)
        if threads is not None:
            threads.shutdown(wait=False)


def worker() -> None:
    """A worker's loop: the tokenizer, then (args) -> Chunk until the input ends."""
    from tokenizers import Tokenizer

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    spec = read_frame(inp)
    if spec is None:
        return
    tok = Tokenizer.from_str(pickle.loads(spec))
    while (frame := read_frame(inp)) is not None:
        try:
            c = tokenize_chunk(tok, *pickle.loads(frame))
            reply: tuple = ("ok", (c.flat, c.lengths, c.owner, c.counts))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            reply = ("error", f"{type(e).__name__}: {e}")
        write_frame(out, pickle.dumps(reply, protocol=5))


_ACTIVE: dict[int, tuple[Any, TokenizerProcesses]] = {}
_ACTIVE_LOCK = threading.Lock()


def tokenizer_processes(tokenizer: Any, n: int) -> TokenizerProcesses | None:
    """The running pool for `tokenizer` (started on first use), or None once it failed."""
    with _ACTIVE_LOCK:
        hit = _ACTIVE.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return None if hit[1].closed else hit[1]
        try:
            pool = TokenizerProcesses(tokenizer, n)
        except LoomError as e:
            logger.warning("%s: tokenizing on threads", e)
            return None
        _ACTIVE[id(tokenizer)] = (tokenizer, pool)  # keeps the tokenizer (and its id) alive
        return pool


def _forget() -> None:  # a forked child has none of its parent's workers
    _ACTIVE.clear()


os.register_at_fork(after_in_child=_forget)
