"""The end-to-end demo: every capability on bundled real data, written into one workspace."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from toolkit.datasets import sample_corpus
from toolkit.workspace import Workspace

CAPABILITY_DEMOS = ("apps.demo_labeling", "apps.demo_extraction", "apps.demo_linking")


def demo_embedding(ws: Workspace, quick: bool = False) -> dict:
    """Embed the bundled BBC sample, index it and answer a few queries."""
    from apps.commands.embed import embed_into_workspace

    df = sample_corpus()
    if quick:
        df = df.head(60)
    texts = df["title"] + ". " + df["summary"]
    queries = ["football match result", "new mobile phone technology", "election campaign"]
    run, hits = embed_into_workspace(ws, texts, queries=queries, k=3, params={"data": "bbc_sample"})
    for q in queries:
        top = hits[hits["query"] == q].iloc[0]
        print(f"  {q!r} -> {top['text'][:70]!r} (cosine {top['score']:.2f})")
    return {"run": run, "texts": len(texts)}


def run_demo(out: str | Path = "workspace", quick: bool = False) -> dict:
    """Run each capability's demo part that is installed; print where the results are."""
    ws = Workspace(out)
    results = {}
    parts = [("embedding", demo_embedding)]
    for name in CAPABILITY_DEMOS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        parts.append((name.rsplit("_", 1)[-1], module.run))
    for label, fn in parts:
        start = time.perf_counter()
        print(f"[loom demo] {label} ...", flush=True)
        results[label] = fn(ws, quick=quick)
        print(f"[loom demo] {label} done in {time.perf_counter() - start:.1f}s", flush=True)
    print(f"\nResults are in {ws.path}. Explore them with:\n  loom app {ws.path}")
    return results
