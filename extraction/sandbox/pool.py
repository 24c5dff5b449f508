"""`Sandbox`: a pool of locked-down workers that apply candidate functions to texts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from multiprocessing.connection import wait as mp_wait
from typing import Any

from extraction.sandbox import protocol
from extraction.sandbox.checks import check_code
from extraction.sandbox.lockdown import LAYERS
from extraction.sandbox.process import WorkerProcess, exit_reason
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress


def format_isolation(layers: dict[str, dict]) -> str:
    """The isolation report as aligned lines: layer, on/OFF, what it does here."""
    return "\n".join(
        f"  {name:<12} {'on ' if info['active'] else 'OFF'}  {info['detail']}"
        for name, info in layers.items()
    )


class Sandbox:
    """A pool of locked-down worker processes that apply extraction functions to texts.

    Each worker isolates itself at the operating-system level before it runs anything
    (docs/extraction.md, "Security model"); `isolation()` reports the layers. A layer that
    cannot be set up makes the run fail with a SandboxError naming it, unless it is listed
    in `allow_missing` (an explicit choice of weaker isolation).
    `python_layer=False` turns off the Python-level filters (the static check and, in the
    worker, module proxies and restricted builtins); it exists to test the OS layers alone
    and must not be used otherwise.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        timeout: float = 1.0,
        memory_mb: int = 512,
        cpu_seconds: int = 3600,
        chunk_size: int = 128,
        startup_timeout: float = 120.0,
        allow_missing: Iterable[str] = (),
        python_layer: bool = True,
    ) -> None:
        self.n_workers = n_workers
        self.timeout, self.memory_mb, self.cpu_seconds = timeout, memory_mb, cpu_seconds
        self.chunk_size = chunk_size
        self.startup_timeout = startup_timeout
        self.allow_missing = tuple(allow_missing)
        self.python_layer = python_layer
        self._layers: dict[str, dict] | None = None

    def settings(self) -> dict[str, Any]:
        """The constructor arguments, validated (also what a Dask task rebuilds it from)."""
        unknown = sorted(set(self.allow_missing) - set(LAYERS))
        if unknown:
            raise LoomError(
                f"allow_missing names unknown sandbox layers {unknown}; known: {', '.join(LAYERS)}"
            )
        if not self.timeout > 0 or self.memory_mb < 64 or self.chunk_size < 1:
            raise LoomError(
                f"Sandbox needs timeout > 0, memory_mb >= 64 and chunk_size >= 1; got "
                f"timeout={self.timeout}, memory_mb={self.memory_mb}, chunk_size={self.chunk_size}"
            )
        return {"timeout": self.timeout, "memory_mb": self.memory_mb,
                "cpu_seconds": self.cpu_seconds, "chunk_size": self.chunk_size,
                "startup_timeout": self.startup_timeout, "allow_missing": self.allow_missing,
                "python_layer": self.python_layer}  # fmt: skip

    def _spawn(self) -> WorkerProcess:
        s = self.settings()
        config = {k: s[k] for k in ("timeout", "memory_mb", "cpu_seconds", "python_layer")}
        config["allow_missing"] = list(s["allow_missing"])
        p = WorkerProcess(config)
        self._layers = p.handshake(self.startup_timeout)
        return p

    def isolation(self) -> dict[str, dict]:
        """Which isolation layers a worker gets on this machine: {layer: {active, detail}}.

        Starts one worker to find out (it reports what it actually set up). Raises
        SandboxError when a layer that is not in `allow_missing` cannot be set up.
        """
        if self._layers is None:
            self._spawn().stop()
        return dict(self._layers or {})

    def run(
        self,
        functions: dict[str, str],
        texts: Sequence[str],
        progress: bool = False,
        show_progress: bool | None = None,
    ) -> tuple[dict[str, list[str | None]], dict[str, str]]:
        """Apply each function to every text (`show_progress=` is the old name of `progress=`).

        Returns (outputs: fid -> one value or None per text, failures: fid -> reason). A failed
        function gets no outputs; the others are unaffected.
        """
        failures: dict[str, str] = {}
        live: dict[str, str] = {}
        for fid, code in functions.items():
            reason = check_code(code) if self.python_layer else None
            if reason:
                failures[fid] = f"rejected: {reason}"
            else:
                live[fid] = code
        texts = list(texts)
        results: dict[str, list[str | None]] = {f: [None] * len(texts) for f in live}
        if live and texts:
            progress = deprecated_progress(progress, "show_progress", show_progress, "Sandbox.run")
            _Run(self, live, texts, results, failures).go(bool(progress))
        return ({f: v for f, v in results.items() if f not in failures}, failures)


class _Run:
    """One `Sandbox.run`: chunks of texts handed to workers, replies checked as they come."""

    def __init__(self, box: Sandbox, live, texts, results, failures) -> None:
        self.box, self.live, self.texts = box, live, texts
        self.results, self.failures = results, failures
        n_workers = max(1, box.n_workers or min(4, os.cpu_count() or 1))
        self.size = max(1, min(box.chunk_size, -(-len(texts) // n_workers)))
        self.pending = list(range(0, len(texts), self.size))
        self.n_workers = min(n_workers, len(self.pending))
        self.busy: dict[int, tuple[int, list[str], float]] = {}  # worker -> (chunk, fids, t0)

    def go(self, show_progress: bool) -> None:
        from tqdm.auto import tqdm

        self.procs = [self.box._spawn() for _ in range(self.n_workers)]
        bar = tqdm(total=len(self.texts), desc="apply functions", disable=not show_progress)
        try:
            while self.pending or self.busy:
                self.dispatch()
                if self.busy:
                    self.collect(bar)
        finally:
            bar.close()
            for p in self.procs:
                p.stop()

    def dispatch(self) -> None:
        for w, p in enumerate(self.procs):
            if w in self.busy or not self.pending:
                continue
            fids = [f for f in self.live if f not in self.failures]
            if not fids:
                self.pending.clear()
                return
            start = self.pending.pop(0)
            if not self.load(p, fids):
                self.procs[w] = self.box._spawn()
                self.pending.insert(0, start)
                continue
            fids = [f for f in fids if f not in self.failures]
            if not fids:
                continue
            p.send({"op": "run", "fids": fids, "texts": self.texts[start : start + self.size]})
            self.busy[w] = (start, fids, time.monotonic())

    def collect(self, bar) -> None:
        ready = mp_wait([self.procs[w].rconn for w in self.busy], timeout=0.2)
        now = time.monotonic()
        for w in list(self.busy):
            p = self.procs[w]
            start, fids, t0 = self.busy[w]
            n = min(self.size, len(self.texts) - start)
            if p.rconn in ready:
                try:
                    values, err = protocol.check_result(p.recv(n), fids[0], n)
                except (EOFError, OSError):
                    p.kill()
                    self.fail_and_restart(w, exit_reason(p.proc.returncode))
                    continue
                except protocol.ProtocolError as e:
                    self.fail_and_restart(w, f"protocol violation: {e}")
                    continue
                if err:
                    self.failures[fids[0]] = err
                elif fids[0] not in self.failures:
                    self.results[fids[0]][start : start + n] = values
                if fids[1:]:
                    self.busy[w] = (start, fids[1:], now)
                else:
                    del self.busy[w]
                    bar.update(n)
            elif not p.alive():
                self.fail_and_restart(w, exit_reason(p.proc.returncode))
            elif now - t0 > self.box.timeout * n + 5.0:
                self.fail_and_restart(w, "timeout: the worker stopped answering")

    def fail_and_restart(self, w: int, reason: str) -> None:
        """Drop the function the worker was running; rerun its chunk for the rest."""
        start, fids, _ = self.busy.pop(w)
        self.failures[fids[0]] = reason
        self.procs[w].kill()
        self.procs[w] = self.box._spawn()
        if fids[1:]:
            self.pending.insert(0, start)

    def load(self, p: WorkerProcess, fids: list[str]) -> bool:
        """Define `fids` in worker `p`; False when the worker had to be given up."""
        for fid in fids:
            if fid in p.loaded:
                continue
            try:
                p.send({"op": "load", "fid": fid, "code": self.live[fid]})
                if not p.rconn.poll(max(self.box.timeout, 1.0) + 5.0):
                    self.failures[fid] = "timeout: defining the function did not finish"
                    p.kill()
                    return False
                err = protocol.check_loaded(p.recv(), fid)
            except (EOFError, OSError):
                p.kill()
                self.failures[fid] = (
                    f"{exit_reason(p.proc.returncode)} (while defining the function)"
                )
                return False
            except protocol.ProtocolError as e:
                p.kill()
                self.failures[fid] = f"protocol violation: {e}"
                return False
            if err:
                self.failures[fid] = f"failed to load: {err}"
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

    per_text = parallel_map(
        functools.partial(_run_chunk, functions=functions, settings=sandbox.settings()),
        list(texts),
        client,
    )
    failures: dict[str, str] = {}
    for _, fails in per_text:
        failures.update(fails)
    outputs = {
        fid: [vals.get(fid) for vals, _ in per_text] for fid in functions if fid not in failures
    }
    return outputs, failures
