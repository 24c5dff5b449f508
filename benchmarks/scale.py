"""Scale-out: throughput versus Dask workers, and large-index recall and queries/s.

    python benchmarks/scale.py --quick                         # CPU, small
    python benchmarks/scale.py --parts embed,label --workers 1,2,4 --n 4000
    python benchmarks/scale.py --parts index --sizes 1000000,10000000 --device cuda

Workers run on a LocalCluster on this machine (one process each); the ratio is to the
single-process path on the same inputs. The index part uses clustered synthetic vectors
(d=384) and reports recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402


def bench_embed(n: int, workers: list[int]) -> list[dict]:
    from benchmarks.embed import make_texts
    from toolkit.distributed import close_client, embed_series, get_client
    from toolkit.embed import get_embedder

    texts = make_texts(n, seed=1)
    emb = get_embedder()
    emb.encode(texts[:32])
    start = time.perf_counter()
    ref = emb.encode(texts)
    single = time.perf_counter() - start
    rows = [{"part": "embed", "workers": "1 process", "items/s": n / single, "ratio": 1.0}]
    for w in workers:
        client = get_client(n_workers=w, threads_per_worker=1)
        embed_series(texts[: 8 * w], client=client)  # load the model on every worker
        start = time.perf_counter()
        out = embed_series(texts, client=client)
        took = time.perf_counter() - start
        assert np.allclose(out, ref, atol=1e-4), "dask embeddings differ from in-process ones"
        rows.append({"part": "embed", "workers": w, "items/s": n / took, "ratio": single / took})
        close_client()
    return rows


def bench_label(n: int, workers: list[int]) -> list[dict]:
    import dask.dataframe as dd
    import pandas as pd

    try:
        from labeling import DaskLFApplier, LFApplier, keyword_lf, regex_lf
    except ImportError as e:
        print(f"label part skipped: {e}")
        return []
    from toolkit.datasets import load_rotten_tomatoes
    from toolkit.distributed import close_client, get_client

    base = load_rotten_tomatoes()
    df = pd.concat([base] * int(np.ceil(n / len(base))), ignore_index=True).head(n)
    words = ["great", "bad", "boring", "fun", "best", "worst", "funny", "dull", "brilliant", "mess"]
    lfs = [keyword_lf(f"kw_{w}", [w], i % 2, "text") for i, w in enumerate(words)]
    lfs += [regex_lf(f"re_{w}", rf"\b{w}\w*", i % 2, "text") for i, w in enumerate(words)]
    start = time.perf_counter()
    ref = LFApplier(lfs).apply(df, progress=False)
    single = time.perf_counter() - start
    rows = [{"part": "label (20 LFs)", "workers": "1 process", "items/s": n / single, "ratio": 1.0}]
    for w in workers:
        client = get_client(n_workers=w, threads_per_worker=1)
        ddf = dd.from_pandas(df, npartitions=4 * w)
        start = time.perf_counter()
        out = DaskLFApplier(lfs).apply(ddf, scheduler=client)
        took = time.perf_counter() - start
        assert np.array_equal(np.asarray(out), ref), "dask label matrix differs"
        rows.append(
            {"part": "label (20 LFs)", "workers": w, "items/s": n / took, "ratio": single / took}
        )
        close_client()
    return rows


def clustered(n: int, d: int, seed: int, centers: int = 1000, device: str = "cpu") -> np.ndarray:
    """n unit vectors around `centers` random centres (a stand-in for real embeddings).

    Drawn with torch on `device` (a GPU makes 10M x 384 in a second instead of a minute).
    """
    import torch

    dev = device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)
    c = torch.randn(centers, d, generator=g, device=dev)
    out = np.empty((n, d), np.float32)
    step = 1_000_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = c[torch.randint(0, centers, (m,), generator=g, device=dev)]
        x += 0.7 * torch.randn(m, d, generator=g, device=dev)
        out[s : s + m] = torch.nn.functional.normalize(x, dim=1).cpu().numpy()
    return out


def torch_reference_search(
    x: np.ndarray, q: np.ndarray, k: int, device: str
) -> tuple[float, np.ndarray]:
    """(seconds, ids) of the plain exact search a user would write: float32 matmul + top-k."""
    import torch

    xt, qt = torch.from_numpy(x).to(device), torch.from_numpy(q).to(device)
    chunk = max(1, (1 << 30) // len(x))
    torch.cuda.synchronize()
    start = time.perf_counter()
    ids = [(qt[s : s + chunk] @ xt.T).topk(k, dim=1).indices.cpu() for s in range(0, len(q), chunk)]
    torch.cuda.synchronize()
    took = time.perf_counter() - start
    del xt
    return took, torch.cat(ids).numpy()


# search-time settings swept on each built approximate index (recall/speed trade-off)
SWEEPS = {
    "ivf": [{"nprobe": p} for p in (8, 32, 128)],
    "ivfpq": [
        {"nprobe": 32, "refine_k_factor": 4},
        {"nprobe": 32, "refine_k_factor": 16},
        {"nprobe": 128, "refine_k_factor": 16},
    ],  # fmt: skip
    "hnsw": [{"ef_search": e} for e in (32, 128)],
}


def bench_index(sizes: list[int], device: str, kinds: list[str], nq: int = 1000) -> list[dict]:
    from toolkit.index import VectorIndex

    rows = []
    d = 384
    for n in sizes:
        x = clustered(n, d, seed=0, device=device)
        q = clustered(nq, d, seed=1, device=device)
        truth = None
        if "flat" not in kinds and device.startswith("cuda"):
            _, truth = torch_reference_search(x, q, 10, device)
        for kind in kinds if truth is not None else ["flat", *[k for k in kinds if k != "flat"]]:
            params = {}
            if kind in ("ivf", "ivfpq"):
                params["nlist"] = int(min(16384, np.sqrt(n)))
                params["train_size"] = min(n, 64 * params["nlist"])
            dev = device if kind == "flat" else "cpu"
            start = time.perf_counter()
            index = VectorIndex(d, "cosine", kind=kind, device=dev, **params).add(x)
            build = time.perf_counter() - start
            print(f"[index] {kind} n={n}: built in {build:.1f}s", flush=True)
            for setting in SWEEPS.get(kind, [{}]):
                index.tune(**setting)
                index.search(q[:10], 10)
                start = time.perf_counter()
                _, ids = index.search(q, 10)
                took = time.perf_counter() - start
                if kind == "flat":
                    truth = ids
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
                rows.append(
                    {
                        "part": "index",
                        "n": n,
                        "kind": kind,
                        "device": dev,
                        "search": ",".join(f"{a}={b}" for a, b in setting.items()) or "exact",
                        "build_s": build,
                        "queries/s": nq / took,
                        "recall@10": recall,
                    }
                )
                if kind == "flat" and dev.startswith("cuda"):
                    ref, _ = torch_reference_search(x, q, 10, dev)
                    rows[-1]["torch_fp32_queries/s"] = nq / ref
                    rows[-1]["ratio_vs_torch_fp32"] = ref / took
                print(rows[-1], flush=True)
            del index
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="embed,label,index")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--n", type=int, default=4000, help="texts/rows for embed and label")
    ap.add_argument("--n-label", type=int, default=200_000)
    ap.add_argument("--sizes", default="100000", help="index sizes")
    ap.add_argument("--kinds", default="flat,ivf,hnsw,ivfpq")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tag", default="", help="suffix for the results file name")
    args = ap.parse_args()
    parts = args.parts.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        workers, args.n, args.n_label, sizes = [1, 2], 200, 20_000, [20_000]
    rows: list[dict] = []
    if "embed" in parts:
        rows += bench_embed(args.n, workers)
    if "label" in parts:
        rows += bench_label(args.n_label, workers)
    if "index" in parts:
        rows += bench_index(sizes, args.device, args.kinds.split(","))
    print_table(rows)
    name = "scale" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    print(f"wrote {write_results(name, args.device, {'rows': rows, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
