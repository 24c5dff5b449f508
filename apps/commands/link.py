"""`loom link LEFT RIGHT --on name,city` and `loom dedup FILE --on name` into a workspace."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd

from apps.options import DefaultsFormatter, check_device, read_input
from toolkit.errors import LoomError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "link",
        help="link two tables on noisy key fields (nearest neighbours)",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("left", help="left table: CSV, TSV, Parquet or JSON(L)")
    p.add_argument("right", help="right table")
    p.add_argument("--on", default=None, help="key column(s) in both tables, comma separated")
    p.add_argument("--left-on", default=None, help="key column(s) of the left table")
    p.add_argument("--right-on", default=None, help="key column(s) of the right table")
    p.add_argument("--blocking-on", default=None, help="only pair rows equal on these columns")
    p.add_argument("--k", type=int, default=1, help="matches per left row")
    p.add_argument(
        "--threshold",
        type=threshold_flag,
        default="auto",
        help="'auto' (chosen from the data with --char-weight auto: rows whose best candidate "
        "is not a match get none), a minimum cosine -1..1, or 'none' (every nearest match kept)",
    )
    p.add_argument("--one-to-one", action="store_true", help="each right row matched once")
    p.add_argument("--gold", default=None, help="gold pairs file (left_row,right_row) to score")
    p.add_argument(
        "--images",
        default=None,
        metavar="COLUMN",
        help="image path column of both tables: link image + text records (CLIPPINGS) with the "
        "CLIP model folder given as --model",
    )
    p.add_argument(
        "--image-weight", type=float, default=0.5, help="with --images: share of the image, 0..1"
    )
    p.add_argument(
        "--image-root", default=None, help="with --images: folder of relative image paths"
    )
    _common(p)
    p.set_defaults(func=cmd_link)

    d = sub.add_parser(
        "dedup", help="find duplicate rows of one table", formatter_class=DefaultsFormatter
    )
    d.add_argument("file", help="CSV, TSV, Parquet or JSON(L) file")
    d.add_argument("--on", required=True, help="key column(s), comma separated")
    d.add_argument("--blocking-on", default=None, help="only compare rows equal on these columns")
    d.add_argument(
        "--threshold",
        type=threshold_flag,
        default="auto",
        help="'auto' (chosen from the data with --char-weight auto) or a minimum cosine -1..1",
    )
    d.add_argument(
        "--method",
        default="connected",
        choices=["connected", "agglomerative", "hdbscan"],
        help="connected components of close pairs, or a clustering of the k-NN graph",
    )
    d.add_argument("--gold", default=None, help="gold duplicate pairs file (row_a,row_b)")
    _common(d)
    d.set_defaults(func=cmd_dedup)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument("--model", default=None, help="model folder (e.g. from linking.train) or URL")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--char-weight",
        type=share_flag,
        default="auto",
        help="share of spelling (character n-gram) similarity in the score, 0..1, or 'auto' "
        "(with --threshold auto: character candidates first, the encoder only on unsure pairs; "
        "0 for other languages or paraphrases)",
    )
    p.add_argument(
        "--recall",
        type=float,
        default=None,
        help="target share of true matches the candidates must hold, in (0, 1], e.g. 0.99: "
        "candidates per row are chosen per block (cascade only; default: 2 per row for link, "
        "--k / 10 neighbours for dedup)",
    )
    p.add_argument(
        "--recall-gold",
        default=None,
        metavar="FILE",
        help="labelled pairs that choose the candidates for --recall (link: left_row,right_row; "
        "dedup: row_a,row_b; row positions); without it recall is estimated from two halves "
        "of the key fields",
    )


def _gold(path: str | None, cols: tuple[str, str]) -> pd.DataFrame | None:
    if path is None:
        return None
    return read_input(path, "--gold", {"the gold pairs format": cols})


def _labels(path: str | None, cols: tuple[str, str]) -> pd.DataFrame | None:
    """--recall-gold: the labelled pairs file, its two row-position columns."""
    if path is None:
        return None
    frame = read_input(path, "--recall-gold", {"the labelled pairs format": list(cols)})
    return frame[list(cols)]


def threshold_flag(value: str) -> float | str | None:
    """--threshold: 'auto', 'none' or a number."""
    low = value.strip().lower()
    if low in ("auto", "none"):
        return None if low == "none" else "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give 'auto', 'none' or a cosine similarity between -1 and 1"
        ) from None


def share_flag(value: str) -> float | str:
    """--char-weight: 'auto' or a number."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give 'auto' or a share in [0, 1)") from None


def _check_options(args: argparse.Namespace) -> None:
    """Flags whose values the library would reject later, named as flags."""
    if isinstance(args.threshold, float) and not -1 <= args.threshold <= 1:
        raise LoomError(f"--threshold {args.threshold}: give a cosine similarity between -1 and 1")
    if isinstance(args.char_weight, float) and not 0 <= args.char_weight < 1:
        raise LoomError(
            f"--char-weight {args.char_weight}: give a share in [0, 1) (0.5 suits names, dates "
            "and codes with typos)"
        )
    from linking.config import check_recall

    check_recall(args.recall, "--recall")
    if args.recall_gold is not None and args.recall is None:
        raise LoomError("--recall-gold FILE chooses the candidates for --recall: give --recall too")
    if args.recall is not None and (args.threshold != "auto" or args.char_weight != "auto"):
        raise LoomError(
            f"--recall {args.recall} tunes the cascade's candidates, which run with --threshold "
            "auto and --char-weight auto: leave those at auto (or drop --recall)"
        )
    args.device = check_device(args.device)


def _link_columns(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from linking.keys import as_columns

    if args.on is not None and (args.left_on is not None or args.right_on is not None):
        raise LoomError("give either --on or --left-on and --right-on, not both")
    if args.on is None and (args.left_on is None or args.right_on is None):
        raise LoomError(
            "say which columns to link on: --on name,city (both tables), or --left-on and "
            "--right-on"
        )
    if args.on is not None:
        on = as_columns(args.on, "--on")
        return on, on
    lcols, rcols = as_columns(args.left_on, "--left-on"), as_columns(args.right_on, "--right-on")
    if len(lcols) != len(rcols):
        raise LoomError(
            f"--left-on has {len(lcols)} column(s) {lcols} but --right-on has {len(rcols)} "
            f"{rcols}: give the same number, in matching order"
        )
    return lcols, rcols


def _config(args: argparse.Namespace, **options: Any) -> Any:
    """The one LinkConfig of a command, from its flags (progress bars on)."""
    from linking import LinkConfig
    from linking.keys import as_columns

    return LinkConfig(
        model=args.model,
        threshold=args.threshold,
        char_weight=args.char_weight,
        blocking_on=as_columns(args.blocking_on, "--blocking-on"),
        device=args.device,
        progress=True,
        recall=args.recall,
        **options,
    )


def decided(frame: pd.DataFrame) -> dict[str, Any]:
    """What the library chose (threshold, char_weight, expected precision), printed to stderr."""
    report = dict(frame.attrs.get("linking") or {})
    if report:
        parts = [f"threshold {report.get('threshold')} ({report.get('threshold_source', 'given')})"]
        parts.append(f"char_weight {report.get('char_weight')}")
        for key in ("expected_precision", "expected_recall", "recall_k", "candidate_recall"):
            if key in report:
                parts.append(f"{key.replace('_', ' ')} {report[key]}")
        print("chose " + ", ".join(parts), file=sys.stderr)
    return report


def cmd_link(args: argparse.Namespace) -> int:
    from linking.keys import as_columns
    from linking.matching import merge_tables
    from toolkit.workspace import Workspace

    if args.images is not None:  # image + text records: apps/commands/link_images.py
        from apps.commands.link_images import cmd_link_images

        if args.recall is not None or args.recall_gold is not None:
            raise LoomError("--recall does not work with --images: leave it out")
        return cmd_link_images(args)
    _check_options(args)
    if args.k < 1:
        raise LoomError(f"--k {args.k}: give a positive number of matches per left row")
    if args.one_to_one and args.k != 1:
        raise LoomError("--one-to-one keeps one match per row: use it with --k 1")
    lcols, rcols = _link_columns(args)
    blocking = as_columns(args.blocking_on, "--blocking-on")
    key = "--on" if args.on is not None else "--left-on"
    left = read_input(args.left, "LEFT", {key: lcols, "--blocking-on": blocking})
    key = "--on" if args.on is not None else "--right-on"
    right = read_input(args.right, "RIGHT", {key: rcols, "--blocking-on": blocking})
    gold = _gold(args.gold, ("left_row", "right_row"))
    labels = _labels(args.recall_gold, ("left_row", "right_row"))
    cfg = _config(args, k=args.k, one_to_one=args.one_to_one)
    out = merge_tables(left, right, cfg, left_on=lcols, right_on=rcols, gold=labels)
    report = decided(out)
    ws = Workspace(args.out)
    params = {
        "left": args.left,
        "right": args.right,
        "left_on": lcols,
        "right_on": rcols,
        "model": args.model,
        "char_weight": args.char_weight,
        "k": args.k,
        "threshold": args.threshold,
        "blocking_on": args.blocking_on,
        "one_to_one": args.one_to_one,
        "recall": args.recall,
        "recall_gold": args.recall_gold,
        "decided": report,
    }
    from linking.store import save_link_run

    run, summary = save_link_run(ws, left, right, out, (lcols, rcols), params, gold)
    matched = out["right_row"].notna().sum()
    print(
        f"linked {matched} of {len(left)} left rows to {len(right)} right rows "
        f"({summary['pairs']} pairs)"
    )
    if "f1" in summary:
        print(
            f"against gold: precision {summary['precision']:.3f} recall {summary['recall']:.3f} "
            f"F1 {summary['f1']:.3f}"
        )
    print(f"run {run} in {ws.path}: tables left, right, pairs")
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from linking.clustering import cluster_table
    from linking.config import DEFAULT_DEDUP_K
    from linking.duplicates import dedup_table
    from linking.keys import as_columns
    from toolkit.workspace import Workspace

    _check_options(args)
    on = as_columns(args.on, "--on")
    df = read_input(
        args.file,
        "FILE",
        {"--on": on, "--blocking-on": as_columns(args.blocking_on, "--blocking-on")},
    )
    gold = _gold(args.gold, ("row_a", "row_b"))
    if args.recall is not None and args.method != "connected":
        raise LoomError(
            f"--recall tunes the candidates of --method connected; --method {args.method} "
            "clusters the k-NN graph: leave --recall out"
        )
    labels = _labels(args.recall_gold, ("row_a", "row_b"))
    cfg = _config(args, k=DEFAULT_DEDUP_K)
    if args.method == "connected":
        clusters, pairs = dedup_table(df, on, cfg, return_pairs=True, gold=labels)
    else:
        clusters = cluster_table(df, on, cfg, args.method)
        from linking.evaluate import pairs_from_clusters

        pairs = pd.DataFrame(sorted(pairs_from_clusters(clusters)), columns=["row_a", "row_b"])
        pairs["score"] = float("nan")
    report = decided(clusters)
    ws = Workspace(args.out)
    params = {
        "file": args.file,
        "on": on,
        "threshold": args.threshold,
        "method": args.method,
        "model": args.model,
        "char_weight": args.char_weight,
        "blocking_on": args.blocking_on,
        "recall": args.recall,
        "recall_gold": args.recall_gold,
        "decided": report,
    }
    from linking.store import save_dedup_run

    run, summary = save_dedup_run(ws, clusters, pairs, on, params, gold)
    print(
        f"{summary['rows']} rows -> {summary['clusters']} clusters; "
        f"{summary['duplicate_rows']} duplicate rows in {summary['duplicate_groups']} groups"
    )
    if "f1" in summary:
        print(
            f"against gold: precision {summary['precision']:.3f} recall {summary['recall']:.3f} "
            f"F1 {summary['f1']:.3f}"
        )
    print(f"run {run} in {ws.path}: tables clusters, pairs")
    return 0
