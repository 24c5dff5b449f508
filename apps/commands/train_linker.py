"""`loom train-linker FILE`: fine-tune the linking encoder on matching pairs or cluster ids.

The model folder it writes is a `--model` for `loom link`, `loom dedup`, `loom cluster` and
`loom aggregate` (and `model=` in Python)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from apps.options import DefaultsFormatter, at_least, check_device, failed_on_error, read_input
from toolkit.errors import LoomError


@dataclass(frozen=True)
class TrainLinkerConfig:
    """The keywords of `linking.train` that the command sets, built once from the flags."""

    output_dir: str
    base_model: str | None = None
    columns: tuple[str, str] | None = None
    cluster_col: str | None = None
    on: tuple[str, ...] | None = None
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    eval_fraction: float = 0.2
    max_steps: int | None = None
    seed: int = 0
    device: str | None = None
    progress: bool = True


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-linker",
        help="fine-tune the linking encoder on matching pairs or cluster ids; writes a model "
        "folder for --model",
        formatter_class=DefaultsFormatter,
    )
    p.add_argument(
        "file",
        help="matching pairs (two text columns, one pair a row) or rows with a cluster id column "
        "(--cluster-col): CSV, TSV, Parquet or JSON(L)",
    )
    p.add_argument(
        "--columns", default=None, help="the two text columns of a pairs file (default: its two)"
    )
    p.add_argument(
        "--cluster-col", default=None, help="cluster id column: rows sharing an id are matches"
    )
    p.add_argument(
        "--on", default=None, help="with --cluster-col: text column(s) of a row (default: text)"
    )
    p.add_argument(
        "--output",
        default=None,
        help="model folder to write (default: linking-model-<date>-<time> here)",
    )
    p.add_argument("--base-model", default=None, help="model to start from (default: the encoder)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the pairs")
    p.add_argument(
        "--batch-size", type=int, default=32, help="pairs per batch (in-batch negatives)"
    )
    p.add_argument("--learning-rate", type=float, default=2e-5, help="AdamW learning rate")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of the pairs held out to score before and after (top-1, MRR), 0..1",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many batches")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the batches")
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=cmd_train_linker)


def config_from_args(args: argparse.Namespace) -> TrainLinkerConfig:
    """The run's TrainLinkerConfig from the command's flags (a bad value names its flag)."""
    import time

    from linking.keys import as_columns

    at_least("--epochs", args.epochs, 1)
    at_least("--batch-size", args.batch_size, 2, "in-batch negatives need other pairs")
    if args.max_steps is not None:
        at_least("--max-steps", args.max_steps, 1)
    if not args.learning_rate > 0:
        raise LoomError(f"--learning-rate {args.learning_rate}: give a positive rate, e.g. 2e-5")
    if not 0 <= args.eval_fraction < 1:
        raise LoomError(f"--eval-fraction {args.eval_fraction}: give a share in [0, 1)")
    if args.cluster_col is not None and args.columns is not None:
        raise LoomError("give --columns (a pairs file) or --cluster-col (cluster ids), not both")
    if args.on is not None and args.cluster_col is None:
        raise LoomError("--on names the text of rows with cluster ids: use it with --cluster-col")
    columns = as_columns(args.columns, "--columns")
    if columns is not None and len(columns) != 2:
        raise LoomError(f"--columns {args.columns}: name the two text columns of a pair, a,b")
    on = as_columns(args.on, "--on") if args.cluster_col is not None else None
    output = args.output or f"linking-model-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (out / "linking_train.json").exists():
            raise LoomError(
                f"--output {output} exists and is not a model written by train-linker: give an "
                "empty or new folder"
            )
    return TrainLinkerConfig(
        output_dir=output,
        base_model=args.base_model,
        columns=tuple(columns) if columns else None,
        cluster_col=args.cluster_col,
        on=tuple(on or ["text"]) if args.cluster_col is not None else None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        eval_fraction=args.eval_fraction,
        max_steps=args.max_steps,
        seed=args.seed,
        device=check_device(args.device),
    )


def read_pairs(path: str, cfg: TrainLinkerConfig):
    """The training table, checked to have the columns the flags name (or imply)."""
    if cfg.cluster_col is not None:
        on_flag = "--on" if cfg.on != ("text",) else "--on (default text)"
        return read_input(path, "FILE", {"--cluster-col": [cfg.cluster_col], on_flag: cfg.on})
    df = read_input(path, "FILE", {"--columns": cfg.columns})
    if cfg.columns is None and len(df.columns) != 2:
        raise LoomError(
            f"FILE {path} has {len(df.columns)} columns {list(map(str, df.columns))}: name the "
            "two text columns of each pair with --columns a,b, or give --cluster-col for rows "
            "with cluster ids"
        )
    return df


def cmd_train_linker(args: argparse.Namespace) -> int:
    import linking
    from toolkit.workspace import Workspace

    cfg = config_from_args(args)  # the one place the flags become options
    pairs = read_pairs(args.file, cfg)
    ws = Workspace(args.out)
    run = ws.start_run("train-linker", {"file": args.file, **asdict(cfg)})
    with failed_on_error(ws, run):
        try:
            path = linking.train(pairs, **asdict(cfg))
        except LoomError as e:
            raise LoomError(f"FILE {args.file}: {e}") from e
        report = json.loads((path / "linking_train.json").read_text())
        ws.finish_run(run, summary={"model": str(path), **report})
    before, after = report["before"], report["after"]
    loss = report["final_loss"]
    print(
        f"trained on {report['train_pairs']} pairs ({report['steps']} steps"
        + (f", final loss {loss:.3f})" if loss is not None else ")")
    )
    if report["eval_pairs"]:
        print(
            f"held-out {report['eval_pairs']} pairs: top-1 {before['top1']:.3f} -> "
            f"{after['top1']:.3f}, MRR {before['mrr']:.3f} -> {after['mrr']:.3f}"
        )
    print(f"model {path}: use it with --model {path} (loom link, dedup, cluster, aggregate)")
    print(f"run {run} in {ws.path}")
    return 0
