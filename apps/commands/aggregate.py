"""`loom aggregate FILE REFERENCE --on name`: classify every row to its closest reference row."""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import asdict

import numpy as np
import pandas as pd

from apps.commands.link import threshold_flag
from apps.commands.linking_common import check_cosine, check_output, write_output
from apps.options import DefaultsFormatter, check_device, failed_on_error, read_input
from toolkit.errors import LoomError

NEW_COLUMNS = ("ref_row", "ref_score")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "aggregate",
        help="classify the rows of a table to a reference list (best reference row + score)",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("file", help="rows to classify: CSV, TSV, Parquet or JSON(L)")
    p.add_argument("reference", help="the reference list (e.g. industry names): one row a class")
    p.add_argument("--on", required=True, help="key column(s) of FILE, comma separated")
    p.add_argument(
        "--ref-on",
        default=None,
        help="key column(s) of REFERENCE, in the order of --on (default: the --on columns)",
    )
    p.add_argument(
        "--threshold",
        type=threshold_flag,
        default=None,
        help="minimum cosine -1..1 of an assignment: a row whose best reference row scores "
        "less gets none (default: none, every row gets its nearest reference row)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="also write the rows with ref_row, ref_score and the reference columns (ref_<col>) "
        "to this file (.csv, .tsv, .parquet, .json, .jsonl)",
    )
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument(
        "--model", default=None, help="model folder (e.g. from loom train-linker) or URL"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_aggregate)


def config_from_args(args: argparse.Namespace):
    """The run's LinkConfig from the command's flags (a bad value names its flag)."""
    from linking import LinkConfig

    if args.threshold == "auto":
        raise LoomError(
            "--threshold auto is not available for aggregate: give a cosine (e.g. 0.7) or none"
        )
    check_cosine(args.threshold)
    return LinkConfig(
        model=args.model, threshold=args.threshold, device=check_device(args.device), progress=True
    )


def key_columns(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Key columns of FILE (--on) and REFERENCE (--ref-on, default --on), the same number."""
    from linking.keys import as_columns

    on = as_columns(args.on, "--on")
    ref_on = as_columns(args.ref_on, "--ref-on") if args.ref_on is not None else on
    if len(ref_on) != len(on):
        raise LoomError(
            f"--on has {len(on)} column(s) {on} but --ref-on has {len(ref_on)} {ref_on}: give "
            "the same number, in matching order"
        )
    return on, ref_on


def reference_texts(reference: pd.DataFrame, ref_on: list[str], on: list[str], path: str) -> list:
    """One text per reference row, serialised with the --on names so both sides read alike."""
    from linking.keys import key_texts

    texts, empty = key_texts(reference, ref_on, labels=on)
    if empty.any():
        rows = np.flatnonzero(empty).tolist()
        raise LoomError(
            f"REFERENCE {path}: {len(rows)} row(s) have an empty key in {ref_on} (rows "
            f"{rows[:10]}, counted from 0): fill them in or remove them"
        )
    return texts


def assign(
    df: pd.DataFrame, reference: pd.DataFrame, on: list[str], classes: list[str], cfg
) -> pd.DataFrame:
    """`df` with each row's best reference row (`ref_row`, <NA> = none close enough or an
    empty key), its cosine (`ref_score`) and the reference's columns as `ref_<col>`."""
    from linking import EmptyKeyWarning, aggregate
    from linking.keys import key_texts

    texts, empty = key_texts(df, on)
    keys = pd.DataFrame({"key": texts})
    if empty.any():
        print(
            f"note: {int(empty.sum())} of {len(df)} rows have an empty key in {on}: they are "
            "kept, with no reference row",
            file=sys.stderr,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyKeyWarning)  # said above, with the flag's names
        found = aggregate(
            keys,
            classes,
            "key",
            model=cfg.model,
            threshold=cfg.threshold,
            device=cfg.device,
            progress=cfg.progress,
            cache=cfg.cache,
        )
    ids = found["class_id"].to_numpy()
    out = df.reset_index(drop=True).copy()
    out["ref_row"] = pd.array([int(i) if i >= 0 else None for i in ids], dtype="Int64")
    out["ref_score"] = found["class_score"].to_numpy()
    picked = reference.reset_index(drop=True).reindex(np.where(ids >= 0, ids, -1))
    for col in reference.columns:
        out[f"ref_{col}"] = picked[col].to_numpy()
    out.attrs["linking"] = found.attrs.get("linking", {})
    return out


def cmd_aggregate(args: argparse.Namespace) -> int:
    from toolkit.workspace import Workspace

    cfg = config_from_args(args)  # the one place the flags become options
    output = check_output(args.output, inputs={"FILE": args.file, "REFERENCE": args.reference})
    on, ref_on = key_columns(args)
    df = read_input(args.file, "FILE", {"--on": on})
    flag = "--ref-on" if args.ref_on is not None else "--on"
    reference = read_input(args.reference, "REFERENCE", {flag: ref_on})
    clash = [c for c in (*NEW_COLUMNS, *(f"ref_{c}" for c in reference.columns)) if c in df]
    if clash:
        raise LoomError(
            f"FILE {args.file} has column(s) {clash} that the output adds: rename them first"
        )
    classes = reference_texts(reference, ref_on, on, args.reference)
    params = {
        "file": args.file,
        "reference": args.reference,
        "on": on,
        "ref_on": ref_on,
        "output": args.output,
        **asdict(cfg),
    }
    ws = Workspace(args.out)
    run = ws.start_run("aggregate", params)
    with failed_on_error(ws, run):
        out = assign(df, reference, on, classes, cfg)
        assigned = int(out["ref_row"].notna().sum())
        ws.save_table(run, "assignments", with_row(out))
        ws.save_table(run, "reference", with_row(reference))
        summary = {
            "rows": len(out),
            "reference_rows": len(reference),
            "assigned": assigned,
            "unassigned": len(out) - assigned,
            **out.attrs["linking"],
        }
        if assigned:
            summary["mean_score"] = round(float(out["ref_score"][out["ref_row"].notna()].mean()), 4)
        if output is not None:
            write_output(out, output)
        ws.finish_run(run, summary=summary)
    print(f"assigned {assigned} of {len(out)} rows to {len(reference)} reference rows")
    if output is not None:
        print(f"wrote {output}: the rows with ref_row, ref_score and ref_<column>")
    print(f"run {run} in {ws.path}: tables assignments, reference")
    return 0


def with_row(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its position as a leading `row` column (an own `row` column becomes `row_`)."""
    out = df.reset_index(drop=True).rename(columns={"row": "row_"})
    out.insert(0, "row", range(len(out)))
    return out
