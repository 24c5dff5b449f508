"""CUDA graphs for an encoder's inference forward: one captured graph per input shape.

A fixed-shape forward (M2-BERT pads every text to `long_conv_l_max`) launches the same few
hundred kernels on every batch; replaying them from a CUDA graph removes the host's launch
cost and the gaps between kernels. `GraphedForward(fn, version)` captures `fn` once per input
shape (the caller picks the shapes: the M2 embedder pads a short last batch up to a power of
two of rows, so a run meets at most log2(rows) + 1 shapes), replays it afterwards, and
recaptures when `version()` changes (the weights were replaced or updated in place: a graph
bakes in the addresses of everything the forward read, e.g. cached filter spectra).

Capture follows PyTorch's recipe (torch.cuda.graphs): warm-up calls on a side stream, then
`torch.cuda.graph` with one memory pool shared by every graph of this object, so the
activations of all buckets take the space of the largest. Autocast inside `fn` must run with
`cache_enabled=False` (PyTorch's rule for graphs). A forward that cannot be captured (a
host synchronisation inside, an unsupported op) runs eagerly from then on, with one warning
in the log: slower, never wrong.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

import torch

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

log = logging.getLogger(__name__)


class GraphedForward:
    """`fn(x) -> Tensor` on CUDA, replayed from one captured graph per (shape, dtype) of x.

    version: returns something that changes whenever what fn reads besides x changes (e.g.
    `weights_key(model)`); all graphs are dropped and recaptured then. keep: returns the
    tensors fn cached outside its inputs (held with each graph). max_graphs: shapes kept
    (least recently used dropped past it). Calls are serialised (one lock): the input and
    output buffers are shared. The tensor returned is a copy, safe to keep.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        version: Callable[[], Hashable],
        max_graphs: int = 16,
        warmup: int = 2,
        keep: Callable[[], list[torch.Tensor]] | None = None,
    ) -> None:
        # max_graphs=0 made the first capture pop from an empty dict (a StopIteration)
        if not is_whole_number(max_graphs) or max_graphs < 1:
            raise LoomError(f"max_graphs={max_graphs!r}: give the number of shapes kept, >= 1")
        if not is_whole_number(warmup) or warmup < 0:
            raise LoomError(f"warmup={warmup!r}: give the warm-up calls before capture, >= 0")
        self.fn = fn
        self.version = version
        self.keep = keep
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: dict[tuple, tuple] = {}  # key -> (graph, input, output, kept tensors)
        self._lock = threading.Lock()  # one replay at a time: the buffers are shared
        self._seen: Hashable = None
        self._pool = None
        self.eager = False  # set after a failed capture: fn runs eagerly from then on
        self.captures = 0  # graphs captured so far (a test and the benchmark read it)
        self._said_eager = False  # the CPU fallback is logged once

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            if not self._said_eager:
                self._said_eager = True
                log.info("input on %s: CUDA graphs need CUDA tensors; running eagerly", x.device)
            return self.fn(x)
        if self.eager:
            return self.fn(x)
        with self._lock:
            version = self.version()
            if version != self._seen:
                self.clear()
                self._seen = version
            key = (tuple(x.shape), x.dtype, x.device)
            entry = self._graphs.pop(key, None)
            if entry is None:
                entry = self._capture(x)
                if entry is None:
                    return self.fn(x)
            self._graphs[key] = entry  # most recently used last
            graph, static_in, static_out, _ = entry
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()

    def clear(self) -> None:
        """Drop every graph (and the memory pool's hold on their activations)."""
        self._graphs.clear()
        self._pool = None

    def _capture(self, x: torch.Tensor):
        while len(self._graphs) >= self.max_graphs:
            self._graphs.pop(next(iter(self._graphs)))
        static_in = x.clone()
        try:
            with torch.cuda.device(x.device):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.fn(static_in)
                torch.cuda.current_stream().wait_stream(side)
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    static_out = self.fn(static_in)
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager
            log.warning(
                "CUDA graph capture failed (%s: %s); running the forward eagerly from now on",
                type(e).__name__,
                str(e)[:200],
            )
            self.eager = True
            self.clear()
            return None
        self.captures += 1
        # the graph reads tensors the forward cached outside its inputs (filter spectra,
        # transposed weight blocks): hold them, so a cache replaced later (another length or
        # dtype, same weights) cannot free memory this graph still reads
        kept = self.keep() if self.keep is not None else []
        return graph, static_in, static_out, kept
