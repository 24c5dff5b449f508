"""The end-to-end demo: every capability on bundled real data, written into one workspace."""

from __future__ import annotations

import importlib
import importlib.util
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.datasets import sample_corpus
from toolkit.errors import LoomError
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


def demo_liger(ws: Workspace, quick: bool = False) -> dict:
    """The labeling demo's LFs and data again, smoothed with Liger (vote extension within a
    radius in embedding space, per-partition LF accuracies), as a second `label` run."""
    from apps.commands.label import label_into_workspace
    from apps.demo_labeling import rotten_tomatoes_lfs
    from toolkit.datasets import load_rotten_tomatoes

    df = load_rotten_tomatoes().sample(300 if quick else 1500, random_state=0)
    run_id, summary = label_into_workspace(
        ws,
        df.reset_index(drop=True),
        rotten_tomatoes_lfs(),
        gold_column="label",
        smooth="liger",
        params={"data": "rotten_tomatoes", "sample": len(df)},
        progress=False,
    )
    acc = summary.get("accuracy")
    print(
        f"  Liger on {summary['n']} reviews: coverage {summary['coverage']:.2f} before smoothing, "
        f"labeled {summary['labeled']:.2f} after"
        + (f", accuracy {acc:.3f}" if isinstance(acc, float) else "")
    )
    return {"run": run_id, **summary}


def add_label_projections(
    ws: Workspace, max_rows: int = 2000, model: str | None = None, method: str = "auto"
) -> list[str]:
    """Give every complete label run without `embeddings_2d` a 2-D projection of its texts
    (the app's Embeddings page draws it); at most `max_rows` rows, a repeatable sample."""
    from toolkit.embed import get_embedder
    from toolkit.plots import project_2d

    done = []
    runs = ws.runs("label")
    for run in runs.loc[runs["status"] == "complete", "run_id"]:
        names = set(ws.tables(run)["name"])
        if "embeddings_2d" in names or "data" not in names:
            continue
        data = ws.load_table(run, "data", columns=["row", "text"])
        if len(data) < 3:
            continue
        if len(data) > max_rows:
            data = data.sample(max_rows, random_state=0).sort_values("row")
        vecs = get_embedder(model).encode(
            data["text"].astype(str).tolist(), progress=True, cache=ws
        )
        coords, used = project_2d(vecs, method=method)
        ws.save_table(
            run,
            "embeddings_2d",
            pd.DataFrame(
                {
                    "row": data["row"].to_numpy(),
                    "x": coords[:, 0].astype(np.float32),
                    "y": coords[:, 1].astype(np.float32),
                }
            ),
        )
        print(f"  {run}: {used.upper()} projection of {len(data)} texts for the Embeddings page")
        done.append(run)
    return done


def demo_parts() -> list[tuple[str, object]]:
    """(name, run function) of the embedding part and each capability demo in the tree."""
    parts = [("embedding", demo_embedding)]
    for name in CAPABILITY_DEMOS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        parts.append((name.rsplit("_", 1)[-1], module.run))
        if name == "apps.demo_labeling" and importlib.util.find_spec("labeling.liger"):
            parts.append(("liger", demo_liger))
    return parts


def run_demo(out: str | Path = "workspace", quick: bool = False) -> dict:
    """Run each capability's demo part that is installed; print where the results are.

    A part that fails is reported and the others still run; the demo then ends with a
    LoomError naming the failed parts (exit code 2), after saying where the results are.
    """
    ws = Workspace(out)
    results: dict = {}
    failed: dict[str, str] = {}
    total = time.perf_counter()
    parts = demo_parts() + [("label projections", add_label_projections)]
    for label, fn in parts:
        start = time.perf_counter()
        print(f"[loom demo] {label} ...", flush=True)
        try:
            if label == "label projections":
                results[label] = fn(ws, max_rows=300 if quick else 1000)
            else:
                results[label] = fn(ws, quick=quick)
        except Exception as e:  # one broken part must not hide the others' results
            failed[label] = f"{type(e).__name__}: {e}"
            if not isinstance(e, LoomError):
                traceback.print_exc()
            print(f"[loom demo] {label} FAILED: {failed[label]}", flush=True)
            continue
        print(f"[loom demo] {label} done in {time.perf_counter() - start:.1f}s", flush=True)
    print(f"[loom demo] all parts in {time.perf_counter() - total:.1f}s")
    print(f"\nResults are in {ws.path}. Explore them with:\n  loom app {ws.path}")
    if failed:
        raise LoomError(
            "demo part(s) failed: "
            + "; ".join(f"{k} ({v})" for k, v in failed.items())
            + ". The other parts' results are in the workspace."
        )
    return results
