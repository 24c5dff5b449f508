"""`loom embed` (embed a table column into a workspace) and `loom embed-server`."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from apps.commands.server_flags import add_server_flags, config_from_args
from apps.options import at_least, check_device, failed_on_error, read_input
from toolkit.errors import LoomError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed a text column of a CSV/Parquet file into a workspace")
    p.add_argument("file", help="CSV, TSV, Parquet or JSON(L) file")
    p.add_argument("--column", default="text", help="text column to embed")
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument("--model", default=None, help="model folder, server URL, m2-bert:/path ...")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--query",
        action="append",
        default=[],
        help="also search the index for this text (repeatable)",
    )
    p.add_argument("--k", type=int, default=5, help="neighbours per query")
    p.set_defaults(func=cmd_embed)

    s = sub.add_parser(
        "embed-server", help="serve the embedding model over the OpenAI embeddings API"
    )
    s.add_argument("--model", default=None, help="model (default: all-MiniLM-L6-v2)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--device", default=None)
    add_server_flags(s)
    s.set_defaults(func=cmd_server)


def embed_into_workspace(
    ws,
    texts: pd.Series,
    model: str | None = None,
    device: str | None = None,
    queries: list[str] = (),
    k: int = 5,
    params: dict | None = None,
) -> tuple[str, pd.DataFrame]:
    """Embed `texts`, build an index, answer `queries`; store it all as an `embed` run."""
    from toolkit.embed import get_embedder
    from toolkit.index import VectorIndex

    embedder = get_embedder(model, device)
    run = ws.start_run("embed", {"model": embedder.name, "n": len(texts), **(params or {})})
    with failed_on_error(ws, run):
        vecs = embedder.encode(texts.tolist(), progress=True, cache=ws)
        index = VectorIndex(embedder.dim, "cosine").add(vecs)
        index.save(ws.run_dir(run) / "index")
        ws.save_table(
            run,
            "embeddings",
            pd.DataFrame(
                {"id": np.arange(len(texts)), "text": texts.to_numpy(), "embedding": list(vecs)}
            ),
        )
        rows = []
        if queries:
            scores, ids = index.search(embedder.encode(list(queries)), min(k, len(texts)))
            for q, sc, ii in zip(queries, scores, ids):
                rows += [
                    {
                        "query": q,
                        "rank": r + 1,
                        "id": int(i),
                        "text": texts.iloc[int(i)],
                        "score": float(s),
                    }
                    for r, (s, i) in enumerate(zip(sc, ii))
                ]
        hits = pd.DataFrame(rows, columns=["query", "rank", "id", "text", "score"])
        ws.save_table(run, "neighbours", hits)
        ws.finish_run(run, summary={"n": len(texts), "dim": embedder.dim, "queries": len(queries)})
    return run, hits


def cmd_embed(args: argparse.Namespace) -> int:
    from toolkit.workspace import Workspace

    at_least("--k", args.k, 1, "neighbours per query")
    args.device = check_device(args.device)
    df = read_input(args.file, "FILE", {"--column": [args.column]})
    texts = df[args.column]
    if texts.isna().any():
        bad = texts.index[texts.isna()].tolist()[:5]
        raise LoomError(
            f"--column {args.column}: {args.file} has {int(texts.isna().sum())} empty rows "
            f"(e.g. rows {bad}): fill or drop them first"
        )
    ws = Workspace(args.out)
    run, hits = embed_into_workspace(
        ws,
        texts.astype(str),
        args.model,
        args.device,
        args.query,
        args.k,
        {"file": str(args.file), "column": args.column},
    )
    if len(hits):
        print(hits.to_string(index=False, max_colwidth=60))
    print(f"embedded {len(texts)} texts -> run {run} in {ws.path}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from toolkit.embed_server import serve

    config = config_from_args(args)
    serve(
        args.model,
        args.host,
        args.port,
        args.device,
        announce=lambda line: print(line, flush=True),
        config=config,
    )
    return 0
