"""One vector index for every module: FAISS, exact by default, IVF/HNSW/IVF-PQ for large n.

Uses FAISS on the GPU when faiss-gpu and a GPU are present (sharded over several GPUs),
exact torch search on the GPU without faiss-gpu (`toolkit.index_torch`), FAISS on the CPU
otherwise, with the same results for exact search. `save` writes a folder that a reader
never sees half written (`toolkit.index_files`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import LoomError
from toolkit.index_checks import (
    BUILD_PARAMS,
    check_ids,
    check_params,
    check_positive_int,
    check_tune,
)
from toolkit.index_files import read_index_files, write_index_files
from toolkit.index_torch import TorchFlat

log = logging.getLogger(__name__)

METRICS = ("cosine", "ip", "l2")
KINDS = ("flat", "ivf", "hnsw", "ivfpq")
#: The largest k FAISS searches on a GPU.
GPU_MAX_K = 2048


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise LoomError("FAISS is not installed: pip install faiss-cpu (or faiss-gpu)") from e
    return faiss


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu, or without FAISS: exact search on a GPU then
    runs in torch)."""
    try:
        faiss = _faiss()
    except LoomError:
        return 0
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def as_matrix(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 (n, d) matrix, or a clear error naming `what`."""
    arr = np.asarray(x)
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise LoomError(f"{what} must be a 2-D array (n, dim), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise LoomError(f"{what} must be real numbers, got dtype {arr.dtype}")
    if arr.dtype.itemsize > 4 and arr.size and np.isfinite(arr).all():
        top = float(np.abs(arr).max())
        if top > float(np.finfo(np.float32).max):
            raise LoomError(
                f"{what} hold values up to {top:.3g}, beyond float32's range (3.4e38) that "
                "the index stores: rescale them"
            )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dim is not None and arr.shape[1] != dim:
        raise LoomError(
            f"{what} have dimension {arr.shape[1]} but the index has dimension {dim}: "
            "embed with the same model the index was built with"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise LoomError(f"{what} contain NaN or infinite values in {bad} rows: fix or drop them")
    return arr


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class VectorIndex:
    """Nearest-neighbour search over vectors with user ids.

    kind="flat" is exact; "ivf" (nlist, nprobe), "hnsw" (M, ef_search) and "ivfpq"
    (nlist, nprobe, pq_m, pq_bits, refine) trade recall for speed and memory at large n
    (see docs/scale.md for measured trade-offs).
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        kind: str = "flat",
        device: str | None = None,
        **params: Any,
    ) -> None:
        check_positive_int("dim", dim)
        if metric not in METRICS:
            raise LoomError(f"metric={metric!r}: use one of {METRICS}")
        if kind not in KINDS:
            raise LoomError(f"kind={kind!r}: use one of {KINDS}")
        self.dim, self.metric, self.kind = int(dim), metric, kind
        self.params = check_params(kind, params)
        self.device = device or ("cuda" if gpu_count() > 0 or _torch_cuda() else "cpu")
        self._index: Any = None
        self._ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self.dim}, metric={self.metric!r}, kind={self.kind!r}, n={len(self)})"

    # building ---------------------------------------------------------------------------
    def _faiss_metric(self) -> int:
        faiss = _faiss()
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _build(self, train: np.ndarray) -> Any:
        if self.kind == "flat" and self._torch_gpu():  # needs no FAISS
            return TorchFlat(self.dim, self.metric, self.device)
        faiss = _faiss()
        metric, d, n = self._faiss_metric(), self.dim, train.shape[0]
        if self.kind == "flat":
            index = faiss.IndexFlat(d, metric)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(self.params.get("M", 32)), metric)
            index.hnsw.efConstruction = int(self.params.get("ef_construction", 80))
        else:
            # FAISS wants about 39 training points per centroid
            nlist = int(self.params.get("nlist") or min(65536, 4 * np.sqrt(n), n / 39))
            nlist = max(1, min(nlist, n))
            if self.kind == "ivf":
                spec = f"IVF{nlist},Flat"
            else:
                m = int(self.params.get("pq_m") or _pq_m(d))
                if d % m:
                    raise LoomError(f"pq_m={m} must divide the dimension {d}")
                bits = int(self.params.get("pq_bits", 8))
                if "pq_bits" not in self.params:
                    bits = int(np.clip(np.log2(max(n / 39, 2)), 1, 8))
                # re-rank the PQ candidates with exact vectors unless memory matters more
                spec = f"IVF{nlist},PQ{m}x{bits}" + (
                    ",RFlat" if self.params.get("refine", True) else ""
                )
            index = faiss.index_factory(d, spec, metric)
            faiss.extract_index_ivf(index).nprobe = int(self.params.get("nprobe", min(nlist, 16)))
            if hasattr(index, "k_factor"):
                index.k_factor = float(self.params.get("refine_k_factor", 16))
        if self.device.startswith("cuda") and gpu_count() > 0 and self.kind != "hnsw":
            index = self._to_gpu(index)
        if not index.is_trained:
            sample = train
            limit = int(
                self.params.get("train_size", 256 * index.nlist if hasattr(index, "nlist") else n)
            )
            if n > limit:
                sample = train[np.random.default_rng(0).choice(n, limit, replace=False)]
            index.train(sample)
        return index

    def _torch_gpu(self) -> bool:
        """Exact search on the GPU through torch when faiss has no GPU support."""
        if not self.device.startswith("cuda") or gpu_count() > 0:
            return False
        import torch

        return torch.cuda.is_available()

    def _to_gpu(self, index: Any) -> Any:
        faiss = _faiss()
        opts = faiss.GpuMultipleClonerOptions()
        opts.shard = True
        opts.useFloat16 = bool(self.params.get("gpu_float16", False))
        return faiss.index_cpu_to_all_gpus(index, co=opts)

    def _prep(self, x: Any, what: str) -> np.ndarray:
        arr = as_matrix(x, what, self.dim)
        return normalize_rows(arr) if self.metric == "cosine" else arr

    def add(self, vectors: Any, ids: Any = None) -> VectorIndex:
        """Add vectors (n, dim) with optional int64 ids (default: 0..n-1 continuing)."""
        x = self._prep(vectors, "vectors")
        if ids is None:  # never -1, the id of 'no vector'
            start = max(0, int(self._ids.max()) + 1) if len(self._ids) else 0
            new_ids = np.arange(start, start + len(x), dtype=np.int64)
        else:
            new_ids = check_ids(ids, len(x))
        if len(x) == 0:
            return self
        if self._index is None:
            self._index = self._build(x)
        self._index.add(x)
        self._ids = np.concatenate([self._ids, new_ids])
        return self

    # searching --------------------------------------------------------------------------
    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest stored vectors per query: (scores (nq, k), ids (nq, k)).

        Scores are similarities (higher is closer) for cosine/ip and squared L2 distances
        for l2. Where fewer than k vectors exist, ids are -1 and scores -inf (inf for l2).
        """
        k = check_positive_int("k", k)
        q = self._prep(queries, "queries")
        worst = np.inf if self.metric == "l2" else -np.inf
        if self._index is None or len(q) == 0:
            return (np.full((len(q), k), worst, np.float32), np.full((len(q), k), -1, np.int64))
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = int(self.params.get("ef_search", max(64, 2 * k)))
        on_faiss_gpu = not isinstance(self._index, TorchFlat) and (
            self.device.startswith("cuda") and gpu_count() > 0 and self.kind != "hnsw"
        )
        if on_faiss_gpu and min(k, len(self)) > GPU_MAX_K:
            raise LoomError(
                f"k={k}: FAISS searches at most {GPU_MAX_K} neighbours on a GPU; use k <= "
                f"{GPU_MAX_K}, or build the index with device='cpu'"
            )
        kk = min(k, GPU_MAX_K) if on_faiss_gpu else k
        scores, pos = self._index.search(q, kk)
        if kk < k:  # only where fewer than k vectors exist
            pad = k - kk
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=worst)
            pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        missing = pos < 0
        ids = np.where(missing, -1, self._ids[np.where(missing, 0, pos)])
        scores = np.where(missing, worst, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def tune(self, **params: Any) -> VectorIndex:
        """Change search-time settings of a built index, trading recall for speed.

        nprobe (ivf, ivfpq: inverted lists visited per query), refine_k_factor (ivfpq: PQ
        candidates re-ranked exactly, per result) and ef_search (hnsw). See docs/scale.md
        for measured recall@10 and queries/s at 1M and 10M vectors.
        """
        check_tune(self.kind, params)
        self.params.update(params)
        index = self._index
        if index is None:
            return self
        if "nprobe" in params and self.kind in ("ivf", "ivfpq"):
            try:
                _faiss().extract_index_ivf(index).nprobe = int(params["nprobe"])
            except RuntimeError:  # a GPU index: the setting lives on the index itself
                index.nprobe = int(params["nprobe"])
        if "refine_k_factor" in params and hasattr(index, "k_factor"):
            index.k_factor = float(params["refine_k_factor"])
        return self

    # persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to a folder: the FAISS index and the ids under new names, then
        meta.json naming them with their sizes and sha256 (written last, by an atomic rename),
        so a reader sees the old index or the new one, never a mix; old files are removed."""
        faiss = _faiss()
        index = self._index
        if isinstance(index, TorchFlat):
            cpu = faiss.IndexFlat(self.dim, self._faiss_metric())
            cpu.add(index.vectors())
            index = cpu
        elif index is not None and self.device.startswith("cuda") and gpu_count() > 0:
            if self.kind != "hnsw":
                index = faiss.index_gpu_to_cpu(index)
        meta = {
            "dim": self.dim,
            "metric": self.metric,
            "kind": self.kind,
            "params": self.params,
            "n": len(self),
        }
        write = None if index is None else (lambda p: faiss.write_index(index, str(p)))
        return write_index_files(Path(path).expanduser(), meta, self._ids, write)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str | None = None, *, verify: bool = True
    ) -> VectorIndex:
        """Read an index written by `save`; a missing, cut or altered file is a LoomError
        naming it (verify=False skips the sha256 check of each file, not the size check)."""
        faiss = _faiss()
        meta, ids, index_file = read_index_files(Path(path).expanduser(), verify)
        obj = cls(meta["dim"], meta["metric"], meta["kind"], device=device)
        # settings of other kinds that tune() used to accept did nothing: leave them out
        obj.params = {k: v for k, v in meta["params"].items() if k in BUILD_PARAMS[obj.kind]}
        obj._ids = ids
        if index_file is not None:
            try:
                index = faiss.read_index(str(index_file))
            except RuntimeError as e:
                raise LoomError(
                    f"{index_file} is not a readable FAISS index ({str(e).splitlines()[0]}): "
                    "save the index again"
                ) from None
            if index.ntotal != len(ids):
                raise LoomError(
                    f"{index_file} holds {index.ntotal} vectors but the ids file {len(ids)}: "
                    "save the index again"
                )
            if index.d != obj.dim or index.metric_type != obj._faiss_metric():
                raise LoomError(
                    f"{index_file} holds a FAISS index of dimension {index.d} and metric type "
                    f"{index.metric_type}, but {Path(path) / 'meta.json'} says dimension "
                    f"{obj.dim} and metric {obj.metric!r} (edited or mixed up): save the "
                    "index again"
                )
            if obj.device.startswith("cuda") and gpu_count() > 0 and obj.kind != "hnsw":
                index = obj._to_gpu(index)
            elif obj.kind == "flat" and obj._torch_gpu():
                flat = TorchFlat(obj.dim, obj.metric, obj.device)
                flat.add(index.reconstruct_n(0, index.ntotal))
                index = flat
            obj._index = index
        return obj


def _pq_m(d: int) -> int:
    for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1):
        if d % m == 0 and d // m >= 4:
            return m
    return 1


def knn(
    vectors: Any,
    k: int,
    metric: str = "cosine",
    exclude_self: bool = True,
    kind: str = "flat",
    device: str | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among the rows themselves (self excluded by default)."""
    k = check_positive_int("k", k)
    x = as_matrix(vectors, "vectors")
    n = len(x)
    limit = n - 1 if exclude_self else n
    if limit < 1:
        raise LoomError(
            f"knn() got {n} rows: it needs at least {2 if exclude_self else 1} to find "
            f"neighbours{' other than each row itself' if exclude_self else ''}"
        )
    if k > limit:
        raise LoomError(
            f"k={k} neighbours asked for but only {limit} points can be neighbours: "
            f"use k <= {limit}"
        )
    index = VectorIndex(x.shape[1], metric, kind, device=device, **params).add(x)
    scores, ids = index.search(x, k + 1 if exclude_self else k)
    if not exclude_self:
        return scores, ids
    rows = np.arange(n)[:, None]
    is_self = ids == rows
    # drop the self match (or, where ties hid it, the last column)
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(n), drop] = False
    return scores[keep].reshape(n, k), ids[keep].reshape(n, k)
