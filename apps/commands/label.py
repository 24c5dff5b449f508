"""`loom label`: apply LFs from a Python file to a table, fit a label model, store it all.

    loom label --data reviews.csv --lfs lfs.py --out workspace [--label-model LabelModel]
               [--text-column text] [--gold-column label] [--smooth none|liger|embroid]

lfs.py defines labeling functions (loom's or Snorkel's) at module level, or a list `lfs`;
an optional `cardinality = k` sets the number of classes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.label_checks import degenerate_fit, gold_labels, lf_file_cardinality, lf_frame
from apps.options import check_device, failed_on_error, read_input
from toolkit.errors import LoomError

MODEL_CHOICES = ("LabelModel", "DawidSkene", "TripletModel", "MajorityVoter", "AutoLabelModel")
#: lower-case names and the short names users type (`--label-model triplet`)
MODEL_NAMES = {
    **{m.lower(): m for m in MODEL_CHOICES},
    "triplet": "TripletModel",
    "flyingsquid": "TripletModel",
    "ds": "DawidSkene",
    "majority": "MajorityVoter",
    "mv": "MajorityVoter",
    "snorkel": "LabelModel",
    "auto": "AutoLabelModel",
}


def model_name(value: str) -> str:
    """The label model a `--label-model` value names (any case, snake_case or a short name)."""
    return MODEL_NAMES.get(value.strip().lower().replace("_", ""), value)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="apply labeling functions and fit a label model into a workspace",
        description="Apply the labeling functions of a Python file to a table, fit a label "
        "model on their votes and store it all in a workspace. The LF file may set "
        "`cardinality = k`; --cardinality must then agree with it.",
    )
    p.add_argument("--data", required=True, help="CSV, TSV, Parquet or JSON(L) file")
    p.add_argument("--lfs", required=True, help="Python file defining labeling functions")
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument(
        "--label-model",
        default="LabelModel",
        type=model_name,
        choices=MODEL_CHOICES,
        help="label model (any case; short names triplet, ds, mv work too; auto fits them all "
        "and keeps the one with the best held-out likelihood of the votes)",
    )
    p.add_argument(
        "--text-column",
        default="text",
        help="the column the LFs read as x.text (the data keeps it under its own name too) "
        "and the app shows",
    )
    p.add_argument(
        "--gold-column", default=None, help="optional gold label column (ints, -1 unknown)"
    )
    p.add_argument(
        "--cardinality",
        type=int,
        default=None,
        help="number of classes (default: `cardinality = k` of the LF file, else from the votes; "
        "when both are given they must agree)",
    )
    p.add_argument(
        "--smooth",
        default="none",
        choices=("none", "liger", "embroid"),
        help="sharpen the labels with embeddings (docs/smoothing.md)",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="processes for row LFs")
    p.add_argument(
        "--fault-tolerant",
        action="store_true",
        help="an LF that raises on a row abstains there (faults counted in the summary) "
        "instead of stopping the run",
    )
    p.add_argument(
        "--device", default=None, help="cpu or cuda for the label model (default: cuda if present)"
    )
    p.set_defaults(func=cmd_label)


def load_lfs(path: str | Path) -> tuple[list[Any], int | None]:
    """LFs defined in a Python file (its `lfs` list, else every LF at module level) and its `cardinality`."""
    path = Path(path)
    if not path.exists():
        raise LoomError(f"LF file {path} does not exist")
    spec = importlib.util.spec_from_file_location(
        f"loom_user_lfs_{abs(hash(str(path.resolve())))}", path
    )
    if spec is None or spec.loader is None:
        raise LoomError(f"cannot import {path}: give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # lets forked workers and pickling find the functions
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise LoomError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    if hasattr(module, "lfs"):
        lfs = list(module.lfs)
    else:
        lfs = [v for v in vars(module).values() if _is_lf(v)]
    if not lfs:
        raise LoomError(
            f"{path} defines no labeling functions: decorate functions with @labeling_function() "
            "or define a list `lfs`"
        )
    card = getattr(module, "cardinality", None)
    return lfs, (int(card) if card is not None else None)


def _is_lf(obj: Any) -> bool:
    from labeling.lf import LabelingFunction

    if isinstance(obj, LabelingFunction):
        return True
    cls = type(obj)
    return cls.__name__ == "LabelingFunction" and cls.__module__.startswith("snorkel")


def label_into_workspace(
    ws: Any,
    df: pd.DataFrame,
    lfs: list[Any],
    label_model: str = "LabelModel",
    text_column: str = "text",
    gold_column: str | None = None,
    cardinality: int | None = None,
    smooth: str = "none",
    n_jobs: int = 1,
    device: str | None = None,
    params: dict | None = None,
    progress: bool = True,
    fault_tolerant: bool = False,
) -> tuple[str, dict]:
    """Apply `lfs` to `df`, fit the label model, write a `label` run; return (run_id, summary).

    The LFs read `text_column` as `x.text`. The summary's `warnings` lists what makes the
    labels doubtful (a model that could estimate nothing, LF faults, rows without votes);
    each is also printed to stderr. A run that fails part-way is marked `failed`.
    """
    from labeling import LFApplier
    from labeling.apply import LFError

    source = (params or {}).get("data", "the data")
    df = lf_frame(df, text_column, source)
    gold = gold_labels(df, gold_column, cardinality, source)
    df = df.reset_index(drop=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            L, meta = LFApplier(lfs, cardinality=cardinality).apply(
                df,
                n_jobs=n_jobs,
                progress=progress,
                fault_tolerant=fault_tolerant,
                return_meta=True,
            )
    except LFError as e:
        where = f"--lfs {params['lfs']}: " if params and "lfs" in params else ""
        hint = "" if fault_tolerant else " (on the command line: --fault-tolerant)"
        raise LoomError(f"{where}{e}{hint}") from e
    names = [lf.name for lf in lfs]
    k = cardinality or max(2, int(L.max()) + 1, int(gold.max()) + 1 if gold is not None else 0)
    run = ws.start_run(
        "label",
        {
            "label_model": label_model,
            "n": len(df),
            "m": len(lfs),
            "cardinality": k,
            "smooth": smooth,
            "fault_tolerant": fault_tolerant,
            **(params or {}),
        },
    )
    with failed_on_error(ws, run):
        summary = _fit_and_save(
            ws, run, df, L, names, k, gold, label_model, text_column, smooth, device, progress
        )
        faults = {n: int(c) for n, c in meta.faults.items() if c}
        applied = [str(w.message) for w in caught]
        if faults:
            summary["lf_faults"] = faults
            if not applied:
                applied = [f"LFs raised on some rows and abstained there: {faults}"]
        summary["warnings"][:0] = applied
        for w in summary["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        ws.finish_run(run, summary=summary)
    return run, summary


def _fit_and_save(ws, run, df, L, names, k, gold, label_model, text_column, smooth, device,
                  progress) -> dict[str, Any]:  # fmt: skip
    from labeling import LFAnalysis, MajorityVoter, get_label_model
    from labeling.analysis import summary_table

    data = pd.DataFrame({"row": np.arange(len(df)), "text": df[text_column].astype(str).to_numpy()})
    if gold is not None:
        data["gold"] = gold
    ws.save_table(run, "data", data)
    ws.save_table(run, "L", pd.DataFrame(L, columns=names))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = get_label_model(
            label_model, k, **({"device": device} if label_model != "MajorityVoter" else {})
        )
        model.fit(L, lf_names=names, progress=progress)
        probs = model.predict_proba(L)
        pred = model.predict(L)
    notes = [str(w) for w in getattr(model, "fit_warnings_", None) or []]
    if not notes:
        notes = degenerate_fit(label_model, model.get_weights(), L, pred)
    notes += [str(w.message) for w in caught if str(w.message) not in notes]
    smoother = None
    if smooth != "none":
        try:
            from labeling.smoothing import smooth as run_smoothing
        except ImportError as e:
            raise LoomError(
                f"--smooth {smooth} needs labeling.smoothing, which this build lacks"
            ) from e
        probs, pred, smoother = run_smoothing(
            smooth,
            L,
            k,
            texts=data["text"].tolist(),
            lf_names=names,
            ws=ws,
            run=run,
            progress=progress,
            base=label_model,
        )
        probs = np.asarray(probs)
        pred = np.asarray(pred)
    analysis = LFAnalysis(L, names)
    summary_df = analysis.lf_summary(Y=gold, est_weights=model.get_weights())
    ws.save_table(run, "lf_summary", summary_table(summary_df))
    probs_df = pd.DataFrame({"row": np.arange(len(df))})
    for c in range(k):
        probs_df[f"prob_{c}"] = probs[:, c]
    probs_df["pred"] = pred
    ws.save_table(run, "probs", probs_df)
    ws.save_table(run, "weights", model.weights_frame())
    model.save(ws.run_dir(run) / "label_model.npz")
    summary: dict[str, Any] = {
        "n": len(df),
        "m": len(names),
        "cardinality": k,
        "label_model": label_model,
        "coverage": analysis.label_coverage(),
        "overlap": analysis.label_overlap(),
        "conflict": analysis.label_conflict(),
        "labeled": float((pred >= 0).mean()),
    }
    if getattr(model, "chosen_", None):  # --label-model auto: which one it kept, and why
        summary["chosen_model"] = str(model.chosen_)
        summary["chosen_because"] = str(getattr(model, "reason_", ""))
    if smoother is not None:
        summary["smooth"] = smooth
    if gold is not None:
        known = gold >= 0
        mv = MajorityVoter(k).predict(L, tie_break_policy="random")
        summary["accuracy"] = (
            float((pred == gold)[known & (pred >= 0)].mean())
            if (known & (pred >= 0)).any()
            else None
        )
        summary["accuracy_all"] = float((np.where(pred >= 0, pred, -2) == gold)[known].mean())
        summary["mv_accuracy"] = (
            float((mv == gold)[known & (mv >= 0)].mean()) if (known & (mv >= 0)).any() else None
        )
    summary["warnings"] = notes
    return summary


def cmd_label(args: argparse.Namespace) -> int:
    from toolkit.workspace import Workspace

    lfs, declared = load_lfs(args.lfs)
    card = lf_file_cardinality(args.cardinality, declared, args.lfs)
    device = check_device(args.device)
    cols = {"--text-column": [args.text_column]}
    if args.gold_column:
        cols["--gold-column"] = [args.gold_column]
    df = read_input(args.data, "--data", cols)
    lf_frame(df, args.text_column, args.data)  # checked before the workspace is touched
    gold_labels(df, args.gold_column, card, args.data)
    ws = Workspace(args.out)
    run, summary = label_into_workspace(
        ws,
        df,
        lfs,
        label_model=args.label_model,
        text_column=args.text_column,
        gold_column=args.gold_column,
        cardinality=card,
        smooth=args.smooth,
        n_jobs=args.n_jobs,
        device=device,
        params={"data": str(args.data), "lfs": str(args.lfs)},
        fault_tolerant=args.fault_tolerant,
    )
    print(ws.load_table(run, "lf_summary").to_string(index=False, float_format="%.3f"))
    line = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if k not in ("warnings", "lf_faults")
    )
    print(f"label run {run} in {ws.path}: {line}")
    if summary["warnings"]:
        print(
            f"{len(summary['warnings'])} warning(s) above, also in the run's summary",
            file=sys.stderr,
        )
    return 0
