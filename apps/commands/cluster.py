"""`loom cluster FILE --on name`: cluster the rows of one table by embedding similarity."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import pandas as pd

from apps.commands.link import decided, share_flag, threshold_flag
from apps.commands.linking_common import WRITERS as WRITERS  # re-exported
from apps.commands.linking_common import check_cosine, check_output, write_output
from apps.options import DefaultsFormatter, at_least, check_device, read_input
from toolkit.errors import LoomError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="cluster the rows of one table by embedding similarity (entity groups)",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("file", help="CSV, TSV, Parquet or JSON(L) file")
    p.add_argument("--on", required=True, help="key column(s), comma separated")
    p.add_argument(
        "--method",
        default="connected",
        choices=["connected", "agglomerative", "hdbscan"],
        help="connected components of pairs above --threshold, average-linkage clustering "
        "cut at --threshold (up to 50k rows per block), or HDBSCAN (no threshold)",
    )
    p.add_argument(
        "--threshold",
        type=threshold_flag,
        default=0.9,
        help="minimum cosine -1..1 of rows in one cluster, or 'auto' (with --method connected: "
        "chosen from the data, as loom dedup does)",
    )
    p.add_argument("--k", type=int, default=10, help="neighbours searched per row")
    p.add_argument("--min-cluster-size", type=int, default=2, help="smallest HDBSCAN cluster")
    p.add_argument("--blocking-on", default=None, help="only compare rows equal on these columns")
    p.add_argument(
        "--output",
        default=None,
        help="also write the rows with their cluster_id to this file (.csv, .tsv, .parquet, "
        ".json, .jsonl)",
    )
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument(
        "--model", default=None, help="model folder (e.g. from loom train-linker) or URL"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--char-weight",
        type=share_flag,
        default=0.0,
        help="share of spelling (character n-gram) similarity in the score, 0..1 ('auto' with "
        "--threshold auto: the cascade of loom dedup)",
    )
    p.set_defaults(func=cmd_cluster)


def config_from_args(args: argparse.Namespace):
    """The run's LinkConfig from the command's flags (a bad value names its flag)."""
    from linking import LinkConfig
    from linking.keys import as_columns

    if args.threshold is None:
        raise LoomError("--threshold none: clustering needs a cut; give a cosine (e.g. 0.9)")
    check_cosine(args.threshold)
    if args.threshold == "auto" and args.method != "connected":
        raise LoomError(
            f"--threshold auto works with --method connected only; give a cosine (e.g. 0.9) "
            f"for --method {args.method}"
        )
    if isinstance(args.char_weight, float) and not 0 <= args.char_weight < 1:
        raise LoomError(f"--char-weight {args.char_weight}: give a share in [0, 1)")
    if args.char_weight == "auto" and args.threshold != "auto":
        raise LoomError("--char-weight auto needs --threshold auto (the cascade); or give 0..1")
    at_least("--k", args.k, 1, "neighbours searched per row")
    at_least("--min-cluster-size", args.min_cluster_size, 2, "rows of the smallest cluster")
    return LinkConfig(
        model=args.model,
        k=args.k,
        threshold=args.threshold,
        char_weight=args.char_weight,
        blocking_on=as_columns(args.blocking_on, "--blocking-on"),
        device=check_device(args.device),
        progress=True,
    )


def cmd_cluster(args: argparse.Namespace) -> int:
    from linking.clustering import cluster_table
    from linking.duplicates import dedup_table
    from linking.evaluate import pairs_from_clusters
    from linking.keys import as_columns
    from linking.store import save_dedup_run
    from toolkit.workspace import Workspace

    cfg = config_from_args(args)  # the one place the flags become options
    output = check_output(args.output, inputs={"FILE": args.file})
    on = as_columns(args.on, "--on")
    df = read_input(args.file, "FILE", {"--on": on, "--blocking-on": cfg.blocking_on})
    if args.method == "connected":
        clusters, pairs = dedup_table(df, on, cfg, return_pairs=True)
        report = decided(clusters)
    else:
        clusters = cluster_table(df, on, cfg, args.method, args.min_cluster_size)
        pairs = pd.DataFrame(sorted(pairs_from_clusters(clusters)), columns=["row_a", "row_b"])
        pairs["score"] = float("nan")  # members of one cluster, not scored pairs
        report = dict(clusters.attrs.get("linking") or {})
    params = {
        "file": args.file,
        "on": on,
        "method": args.method,
        "min_cluster_size": args.min_cluster_size,
        "output": args.output,
        **asdict(cfg),
        "decided": report,
    }
    ws = Workspace(args.out)
    run, summary = save_dedup_run(ws, clusters, pairs, on, params, kind="cluster")
    if output is not None:
        write_output(clusters, output)
    print(
        f"{summary['rows']} rows -> {summary['clusters']} clusters ({args.method}); "
        f"{summary['duplicate_rows']} rows join an earlier row's cluster"
    )
    if output is not None:
        print(f"wrote {output}: the rows with cluster_id and duplicate")
    print(f"run {run} in {ws.path}: tables clusters, pairs")
    return 0
