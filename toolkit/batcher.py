"""Merge concurrent server requests into one model call, with a bounded queue.

`MicroBatcher.submit(item)` runs on the server's event loop: the item waits in a queue until
the worker task takes it, together with every other request waiting then (up to `max_batch`
units), and runs `run_batch(items)` once in a worker thread, so the event loop keeps accepting
requests while the model computes. With `concurrency=2`, a second call starts while the
first runs, so one call's host work (tokenizing, copying) overlaps the other's GPU work; a
call is only made up when a slot is free, so the requests that came in meanwhile join it. When more than `max_queue` requests wait, `submit` raises
`QueueFull` (the server answers 503 with `Retry-After`). When a merged call fails, each of
its requests is run again alone, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from toolkit.server_metrics import ServerMetrics

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests wait than the server's `max_queue`; retry after `retry_after` seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(
            f"the server is busy ({waiting} requests wait for the model): retry after "
            f"{retry_after} s, or start the server with a larger --max-queue"
        )
        self.waiting, self.retry_after = waiting, retry_after


@dataclass
class _Job:
    item: Any
    size: int
    key: Hashable
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Runs `run_batch(items) -> results` (one result per item, in order) on merged requests.

    size: the units one item counts for `max_batch` (e.g. its number of texts). key: only
    items with equal keys (e.g. the same generation parameters) are merged. max_wait: seconds
    to wait for company when the queue holds less than `max_batch`. metrics: where batch
    sizes, model time and queue depth are recorded. concurrency: model calls in flight at
    once (each in its own worker thread; `run_batch` must then be thread-safe).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        size: Callable[[Any], int] = lambda item: 1,
        max_batch: int = 2048,
        max_wait: float = 0.005,
        max_queue: int = 1024,
        metrics: ServerMetrics | None = None,
        name: str = "model",
        concurrency: int = 1,
    ) -> None:
        if min(max_batch, max_queue, concurrency) < 1 or max_wait < 0:
            raise ValueError(
                f"max_batch ({max_batch}), max_queue ({max_queue}) and concurrency "
                f"({concurrency}) must be >= 1 and max_wait ({max_wait}) >= 0"
            )
        self.run_batch, self.size = run_batch, size
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.metrics = metrics
        self.name = name
        #: model calls made on merged requests, and how many of them failed and were split
        self.batches = 0
        self.split_batches = 0
        self.concurrency = concurrency
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None  # model calls that may start now
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"loom-{name}")
        self._stats = threading.Lock()
        self._seconds_per_unit = 0.0  # recent model time per unit, for Retry-After

    @property
    def waiting(self) -> int:
        """Requests queued and not yet handed to the model."""
        return len(self._pending)

    def retry_after(self) -> int:
        """Whole seconds a refused client should wait: the time to drain the queue, >= 1."""
        units = sum(j.size for j in self._pending)
        return max(1, min(60, math.ceil(units * self._seconds_per_unit)))

    async def submit(self, item: Any, key: Hashable = None) -> Any:
        """The result of `item` (or its exception raised), once the model has run on it."""
        if len(self._pending) >= self.max_queue:
            raise QueueFull(len(self._pending), self.retry_after())
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._free = asyncio.Semaphore(self.concurrency)
            self._task = loop.create_task(self._loop(), name=f"loom-{self.name}-batcher")
        job = _Job(item, max(1, int(self.size(item))), key, loop.create_future())
        self._pending.append(job)
        self._gauge()
        assert self._wakeup is not None
        self._wakeup.set()
        return await job.future

    async def aclose(self) -> None:
        """Stop the worker (after the server drained its requests) and its thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for call in list(self._calls):
            call.cancel()
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=False)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))

    def _take(self) -> list[_Job]:
        """The oldest job and every waiting job with its key, up to max_batch units."""
        first = self._pending.popleft()
        jobs, units, keep = [first], first.size, deque()
        while self._pending:
            job = self._pending.popleft()
            if job.key == first.key and units + job.size <= self.max_batch:
                jobs.append(job)
                units += job.size
            else:
                keep.append(job)
        self._pending.extendleft(reversed(keep))
        self._gauge()
        return [j for j in jobs if not j.future.done()]  # drop requests already gone

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._free is not None
        loop = asyncio.get_running_loop()
        while True:
            idle = not self._pending and not self._calls
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # after an idle spell, wait a moment for concurrent requests to join; under load
            # the requests that came in during the last model call are taken at once
            if idle and self.max_wait and sum(j.size for j in self._pending) < self.max_batch:
                await asyncio.sleep(self.max_wait)
            await self._free.acquire()  # requests keep joining the queue meanwhile
            jobs = self._take() if self._pending else []
            if not jobs:
                self._free.release()
                continue
            call = loop.create_task(self._call(jobs))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, jobs: list[_Job]) -> None:
        """One model call in a worker thread; its results (or errors) to their requests."""
        assert self._free is not None
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, jobs)
        except Exception as e:  # noqa: BLE001 - the worker must survive anything
            results = [e] * len(jobs)
        finally:
            self._free.release()
        for job, res in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(res, BaseException):
                job.future.set_exception(res)
            else:
                job.future.set_result(res)

    def _run(self, jobs: list[_Job]) -> list[Any]:
        """In the worker thread: one call on all jobs; on failure, one call per job."""
        units = sum(j.size for j in jobs)
        start = time.perf_counter()
        try:
            results = list(self.run_batch([j.item for j in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch gave {len(results)} results for {len(jobs)} items")
        except Exception as e:  # noqa: BLE001 - isolated below, reported per request
            if len(jobs) == 1:
                return [e]
            with self._stats:
                self.split_batches += 1
            logger.warning(
                "a merged batch of %d requests failed (%s); running them one by one",
                len(jobs),
                e,
            )
            results = []
            for job in jobs:
                try:
                    results.append(self.run_batch([job.item])[0])
                except Exception as err:  # noqa: BLE001 - this request's own failure
                    results.append(err)
        seconds = time.perf_counter() - start
        with self._stats:
            self.batches += 1
            self._seconds_per_unit = seconds / units
        if self.metrics is not None:
            self.metrics.batch_size.observe(units)
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.model_seconds.observe(seconds)
            self.metrics.items_per_second.set(units / max(seconds, 1e-9))
        return results
