"""Exact nearest-neighbour search on CUDA GPUs with torch, used when faiss has no GPU support.

The vectors are kept in float32 (the exact values) and, scaled by a power of two, in float16
for picking candidates: one half-precision matmul per block of queries scores every stored
vector, the best `2k + 16` of them are rescored in float64 from the float32 vectors, and the
top k of the rescored candidates are the answer when a bound on the half-precision error
proves that no vector left out can beat the k-th one. Where the bound does not prove it
(near-ties around the k-th place), the candidate set grows, and at last the query is scored
against every vector in float64. The results are the exact float64 top k (ties aside), the
same as FAISS's exact search on the CPU.

The bound: inputs rounded to float16 (relative error u = 2^-11, plus 2^-25 where they fall
below float16's normal range), products summed in float32 (error (d-1) 2^-24 times the sum
of |products|), the sum rounded to float16 once; with both sides scaled to max |value| <= 1
this is at most (3u + d 2^-24) |q| |x| plus the subnormal terms, doubled for safety.
cuBLAS is kept from reducing in half precision while the candidates are picked.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

U16 = 2.0**-11  # unit roundoff of float16
U32 = 2.0**-24  # unit roundoff of float32
SUB16 = 2.0**-24  # spacing of float16 subnormals
#: Candidate-set growth per round before a query is scored against every vector.
GROWTH = 4
ROUNDS = 3
#: cuBLAS settings that would let a half-precision matmul reduce or accumulate in float16.
HALF_REDUCTION_FLAGS = ("allow_fp16_reduced_precision_reduction", "allow_fp16_accumulation")


def pow2_scale(torch: Any, m: Any) -> Any:
    """The smallest power of two >= m (1 where m is 0), elementwise: dividing by it is exact."""
    m = torch.as_tensor(m, dtype=torch.float32)
    e = torch.ceil(torch.log2(torch.clamp(m, min=2.0**-100)))
    return torch.where(m > 0, torch.exp2(e), torch.ones_like(m))


@contextlib.contextmanager
def float32_accumulation(torch: Any, device: Any) -> Iterator[None]:
    """Half-precision matmuls accumulate and reduce in float32 inside this block (CUDA)."""
    if getattr(device, "type", str(device)) != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul
    old = {}
    for name in HALF_REDUCTION_FLAGS:
        with contextlib.suppress(AttributeError, RuntimeError, TypeError):
            old[name] = getattr(flags, name)
            setattr(flags, name, False)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(flags, name, value)


class TorchFlat:
    """Exact search with torch on CUDA GPUs (or the CPU, in tests): see the module docstring.

    `device="cuda"` shards the vectors over every visible GPU (each search runs on all
    shards at once and the per-shard top-k lists are merged); "cuda:1" uses that GPU only.
    A list of devices gives the shards explicitly. `rounds` counts, per search, the queries
    whose first candidates did not prove the answer (they were searched wider).
    """

    is_trained = True

    def __init__(self, dim: int, metric: str, device: str | list[str]) -> None:
        import torch

        if isinstance(device, str):
            n_gpu = torch.cuda.device_count() if device == "cuda" else 0
            device = [f"cuda:{g}" for g in range(n_gpu)] if n_gpu > 1 else [device]
        self.torch, self.metric, self.devices = torch, metric, list(device)
        self.dim = int(dim)
        self.x = [torch.empty((0, dim), dtype=torch.float32, device=d) for d in self.devices]
        self.x16 = [torch.empty((0, dim), dtype=torch.float16, device=d) for d in self.devices]
        self.scale = [1.0 for _ in self.devices]  # x16 = x / scale, a power of two
        self.sq = [torch.empty((0,), dtype=torch.float32, device=d) for d in self.devices]
        self.gid = [torch.empty((0,), dtype=torch.int64, device=d) for d in self.devices]
        self.rounds = 0

    @property
    def ntotal(self) -> int:
        return sum(int(x.shape[0]) for x in self.x)

    def add(self, x: np.ndarray) -> None:
        """Append rows, split evenly over the shards; each shard keeps its rows' positions."""
        torch, start = self.torch, self.ntotal
        bounds = np.linspace(0, len(x), len(self.devices) + 1).astype(int)
        for i, d in enumerate(self.devices):
            part = torch.from_numpy(np.ascontiguousarray(x[bounds[i] : bounds[i + 1]]))
            part = part.to(d).float()
            pos = torch.arange(start + bounds[i], start + bounds[i + 1], device=d)
            self.x[i] = torch.cat([self.x[i], part])
            self.sq[i] = torch.cat([self.sq[i], (part**2).sum(1)])
            self.gid[i] = torch.cat([self.gid[i], pos])
            top = float(part.abs().max()) if part.numel() else 0.0
            if top > self.scale[i] or not len(self.x16[i]):  # a new power-of-two scale
                whole = float(self.x[i].abs().max()) if self.x[i].numel() else 0.0
                self.scale[i] = float(pow2_scale(torch, whole))
                self.x16[i] = (self.x[i] / self.scale[i]).half()
            else:
                self.x16[i] = torch.cat([self.x16[i], (part / self.scale[i]).half()])

    def vectors(self) -> np.ndarray:
        """All stored vectors (float32, exactly as added) in insertion order."""
        out = np.empty((self.ntotal, self.dim), np.float32)
        for x, g in zip(self.x, self.gid):
            out[g.cpu().numpy()] = x.cpu().numpy()
        return out

    # one shard ------------------------------------------------------------------------------
    def _exact(self, i: int, q64: Any, cand: Any, piece: int) -> Any:
        """float64 scores (higher is closer) of candidate positions `cand` (r, c) of shard i:
        q.x for ip, 2 q.x - |x|^2 for l2; computed in row pieces of `piece` elements."""
        torch, x = self.torch, self.x[i]
        out = torch.empty(cand.shape, dtype=torch.float64, device=x.device)
        rows = max(1, piece // max(1, cand.shape[1] * self.dim))
        for s in range(0, cand.shape[0], rows):
            xg = x[cand[s : s + rows]].double()
            dot = torch.einsum("bd,bkd->bk", q64[s : s + rows], xg)
            out[s : s + rows] = 2 * dot - (xg**2).sum(-1) if self.metric == "l2" else dot
        return out

    def _full(self, i: int, q64: Any, k: int, block: int) -> tuple[Any, Any]:
        """Exact float64 top-k of queries q64 against every vector of shard i, in blocks."""
        torch, x = self.torch, self.x[i]
        best_s = torch.full((len(q64), 0), -math.inf, dtype=torch.float64, device=x.device)
        best_i = torch.empty((len(q64), 0), dtype=torch.int64, device=x.device)
        for s in range(0, x.shape[0], block):
            xb = x[s : s + block].double()
            sc = q64 @ xb.T
            if self.metric == "l2":
                sc = 2 * sc - (xb**2).sum(1)[None, :]
            pos = torch.arange(s, s + xb.shape[0], device=x.device).expand(len(q64), -1)
            best_s = torch.cat([best_s, sc], 1)
            best_i = torch.cat([best_i, pos], 1)
            best_s, order = best_s.topk(min(k, best_s.shape[1]), dim=1)
            best_i = best_i.gather(1, order)
        return best_s, best_i

    def _bound(self, q: Any, qs: Any, i: int) -> Any:
        """Per query, the largest error of a half-precision selection score of shard i."""
        torch, d = self.torch, self.dim
        xs = self.scale[i]
        nx = float(torch.sqrt(self.sq[i].max())) if self.sq[i].numel() else 0.0
        root = math.sqrt(d) * SUB16
        a = torch.linalg.vector_norm(q.double(), dim=1) / qs.double() + root
        b = nx / xs + root
        err = 2 * ((3 * U16 + d * U32) * a * b + root * (a + b) + SUB16)
        if self.metric != "l2":
            return err  # in units of the scaled selection scores
        qn = torch.linalg.vector_norm(q.double(), dim=1)
        # selection score 2 q.x - |x|^2 in float32: the scaled dot times 2 qs xs, |x|^2 and
        # the subtraction each rounded in float32
        return 2 * qs.double() * xs * err + 2 * ((d + 3) * U32 * nx**2 + 4 * U32 * qn * nx)

    def _search_shard(self, i: int, q: np.ndarray, k: int, budget: int) -> tuple[Any, Any]:
        """(scores, global ids) of shard i's exact top-k: float64 on that shard's device,
        similarities for ip, squared distances for l2."""
        torch, x16 = self.torch, self.x16[i]
        n = int(x16.shape[0])
        kk = min(k, n)
        first = min(n, 2 * kk + 16)
        rows = int(max(1, min(8192, budget // max(1, n))))
        out_s, out_i = [], []
        for s in range(0, len(q), rows):
            qt = torch.from_numpy(q[s : s + rows]).to(x16.device)
            qs = pow2_scale(torch, qt.abs().amax(1))
            with float32_accumulation(torch, x16.device):
                sel = (qt / qs[:, None]).half() @ x16.T
            if self.metric == "l2":
                sel = sel.float() * (2 * qs * self.scale[i])[:, None] - self.sq[i][None, :]
            err = self._bound(qt, qs, i)
            # the exact scores come back in units of `sel`: ip scaled by qs * xs
            unit = qs.double() * self.scale[i] if self.metric != "l2" else torch.ones_like(err)
            top, idx = self._prove(i, qt.double(), sel, err, unit, kk, first, budget)
            if self.metric == "l2":
                top = (qt.double() ** 2).sum(1, keepdim=True) - top  # squared distances
            out_s.append(top)
            out_i.append(self.gid[i][idx])
        return torch.cat(out_s), torch.cat(out_i)

    def _prove(
        self, i: int, q64: Any, sel: Any, err: Any, unit: Any, k: int, first: int, budget: int
    ) -> tuple[Any, Any]:
        """Exact top-k (float64 scores, shard positions) of each query from the candidates of
        `sel`, widened until the error bound `err` proves them, else from every vector."""
        torch, n = self.torch, int(sel.shape[1])
        top = torch.empty((len(q64), k), dtype=torch.float64, device=q64.device)
        idx = torch.empty((len(q64), k), dtype=torch.int64, device=q64.device)
        todo = torch.arange(len(q64), device=q64.device)
        width = first
        for r in range(ROUNDS):
            if not len(todo):
                return top, idx
            if r:
                self.rounds += len(todo)
            cand_s, cand = sel[todo].topk(width, dim=1)
            exact = self._exact(i, q64[todo], cand, budget // 8)
            best, order = exact.topk(k, dim=1)
            # a vector left out scores at most (its selection score <= the last candidate's)
            # + err: the k-th exact score at or above that proves the top k
            done = (width >= n) | (best[:, -1] / unit[todo] >= cand_s[:, -1].double() + err[todo])
            top[todo[done]] = best[done]
            idx[todo[done]] = cand.gather(1, order)[done]
            todo = todo[~done]
            width = min(n, width * GROWTH)
        if len(todo):
            self.rounds += len(todo)
            block = max(1, min(65536, budget // max(1, 4 * len(todo))))
            top[todo], idx[todo] = self._full(i, q64[todo], k, block)
        return top, idx

    def search(self, q: np.ndarray, k: int, budget: int = 1 << 31) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k per query; query blocks sized so one block of selection scores holds
        `budget` halfs (the float64 rescoring of candidates is kept to budget / 8 values)."""
        torch = self.torch
        scores = np.full((len(q), k), np.nan, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        shards = [i for i, x in enumerate(self.x) if x.shape[0]]
        if not shards or not len(q):
            return scores, ids
        q = np.ascontiguousarray(q, np.float32)
        with torch.inference_mode():
            parts = [self._search_shard(i, q, k, budget) for i in shards]  # async per GPU
            home = self.x[shards[0]].device
            top = torch.cat([p[0].to(home) for p in parts], 1)
            idx = torch.cat([p[1].to(home) for p in parts], 1)
            top, order = top.sort(dim=1, descending=self.metric != "l2", stable=True)
            kk = min(k, top.shape[1])
            scores[:, :kk] = top[:, :kk].float().cpu().numpy()
            ids[:, :kk] = idx.gather(1, order)[:, :kk].cpu().numpy()
        return scores, ids
