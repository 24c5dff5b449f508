"""Scale-out on Dask distributed: one helper that every capability uses.

`get_client()` connects to a scheduler (by address, or `LOOM_DASK_SCHEDULER`) or starts a
LocalCluster on 127.0.0.1; `parallel_map` runs a function over chunks of a list in order;
`embed_series` embeds a text column partition by partition with one model per worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from toolkit.errors import LoomError

_CLIENT: Any = None
_LOCK = threading.Lock()


def get_client(
    address: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    gpu: bool = False,
) -> Any:
    """A `dask.distributed.Client`: to `address` (or $LOOM_DASK_SCHEDULER) or a LocalCluster.

    gpu=True starts one worker per GPU with dask-cuda's LocalCUDACluster where installed.
    The local client is created once per process and reused.
    """
    global _CLIENT
    from dask.distributed import Client, LocalCluster

    address = address or os.environ.get("LOOM_DASK_SCHEDULER")
    if address:
        try:
            return Client(address, timeout=os.environ.get("LOOM_DASK_TIMEOUT", "10s"))
        except OSError as e:
            raise LoomError(
                f"cannot connect to the Dask scheduler at {address}: {e}. Start one "
                "with `dask scheduler` or leave the address out for a local "
                "cluster"
            ) from e
    with _LOCK:
        if _CLIENT is not None and _CLIENT.status == "running":
            wanted = n_workers or len(_CLIENT.scheduler_info()["workers"])
            if len(_CLIENT.scheduler_info()["workers"]) == wanted:
                return _CLIENT
            _CLIENT.close()
            _CLIENT.cluster.close()
        if gpu:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as e:
                raise LoomError("gpu=True needs dask-cuda: pip install dask-cuda") from e
            cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address=None)
        else:
            cluster = LocalCluster(
                n_workers=n_workers or max(1, (os.cpu_count() or 2)),
                threads_per_worker=threads_per_worker,
                processes=processes,
                host="127.0.0.1",
                dashboard_address=None,
            )
        _CLIENT = Client(cluster)
        return _CLIENT


def close_client() -> None:
    """Stop the local cluster started by `get_client` (if any)."""
    global _CLIENT
    with _LOCK:
        if _CLIENT is not None:
            cluster = getattr(_CLIENT, "cluster", None)
            _CLIENT.close()
            if cluster is not None:
                cluster.close()
            _CLIENT = None


def chunked(items: Sequence[Any], n_chunks: int) -> list[list[Any]]:
    """Split `items` into at most n_chunks contiguous, nearly equal lists."""
    n_chunks = max(1, min(n_chunks, len(items)))
    bounds = np.linspace(0, len(items), n_chunks + 1).astype(int)
    return [list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def parallel_map(
    fn: Callable[[list[Any]], list[Any]],
    items: Sequence[Any],
    client: Any = None,
    chunks_per_worker: int = 4,
    progress: bool = False,
) -> list[Any]:
    """`fn(chunk) -> list` over chunks of `items` on the cluster; results concatenated in order."""
    from dask.distributed import as_completed
    from tqdm.auto import tqdm

    if not items:
        return []
    client = client or get_client()
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    parts = chunked(items, n_workers * chunks_per_worker)
    futures = client.map(fn, parts, pure=False)
    bar = tqdm(total=len(items), disable=not progress, desc="dask", unit="item")
    for fut in as_completed(futures):
        bar.update(len(parts[futures.index(fut)]))
    bar.close()
    out: list[Any] = []
    for part, res in zip(parts, client.gather(futures)):
        if len(res) != len(part):
            raise LoomError(f"a task returned {len(res)} results for {len(part)} items")
        out.extend(res)
    return out


def _embed_chunk(
    texts: list[str], model: str | None, device: str | None, batch_size: int | None
) -> list[np.ndarray]:
    from toolkit.embed import get_embedder

    return list(get_embedder(model, device).encode(texts, batch_size=batch_size))


def embed_series(
    texts: Any,
    model: str | None = None,
    client: Any = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Embed a text column (list, pandas or dask Series) on the cluster, one model per worker.

    Returns the same (n, dim) float32 matrix, in the same order, as the in-process embedder.
    """
    import functools

    client = client or get_client()
    fn = functools.partial(_embed_chunk, model=model, device=device, batch_size=batch_size)
    if hasattr(texts, "map_partitions"):  # a dask Series: one task per partition
        parts = texts.to_delayed()
        futures = client.compute([_delayed_embed(p, fn) for p in parts])
        arrays = [np.asarray(a, np.float32) for a in client.gather(futures)]
        arrays = [a for a in arrays if len(a)]
        return np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)
    texts = list(texts)
    vecs = parallel_map(fn, texts, client)
    return np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), np.float32)


def _delayed_embed(part: Any, fn: Callable) -> Any:
    import dask

    @dask.delayed
    def run(series: Any) -> np.ndarray:
        texts = [str(t) for t in series.tolist()]
        return np.stack(fn(texts)) if texts else np.zeros((0, 0), np.float32)

    return run(part)
