"""Store link and dedup results in a workspace with the table names the app reads."""

from __future__ import annotations

from typing import Any

import pandas as pd

from linking.evaluate import evaluate
from linking.keys import key_texts


def _metrics_summary(metrics: dict | None) -> dict:
    if not metrics:
        return {}
    return {k: round(float(v), 4) for k, v in metrics.items() if k in ("precision", "recall", "f1")}


def save_link_run(
    ws: Any,
    left: pd.DataFrame,
    right: pd.DataFrame,
    out: pd.DataFrame,
    key_columns: tuple[list[str], list[str]],
    params: dict,
    gold: pd.DataFrame | None = None,
) -> tuple[str, dict]:
    """Store a merge result as a `link` run (left, right, pairs, optional gold)."""
    run = ws.start_run("link", params)
    try:
        ws.save_table(run, "left", _with_row(left))
        ws.save_table(run, "right", _with_row(right))
        matched = out[out["right_row"].notna()]
        lcols, rcols = key_columns
        pairs = pd.DataFrame(
            {
                "left_row": matched["left_row"].to_numpy("int64"),
                "right_row": matched["right_row"].to_numpy("int64"),
                "score": matched["score"].to_numpy("float32"),
            }
        )
        lrows, rrows = pairs["left_row"].to_numpy(), pairs["right_row"].to_numpy()
        for c in lcols:
            pairs[f"left_{c}"] = left[c].iloc[lrows].fillna("").astype(str).to_numpy()
        for c in rcols:
            pairs[f"right_{c}"] = right[c].iloc[rrows].fillna("").astype(str).to_numpy()
        ws.save_table(run, "pairs", pairs)
        summary = {"pairs": len(pairs), **out.attrs.get("linking", {})}
        if gold is not None:
            ws.save_table(run, "gold", gold[["left_row", "right_row"]].astype("int64"))
            summary.update(_metrics_summary(evaluate(pairs, gold)))
        ws.finish_run(run, summary=summary)
    except BaseException:
        ws.finish_run(run, status="failed")
        raise
    return run, summary


def save_dedup_run(
    ws: Any,
    clusters: pd.DataFrame,
    pairs: pd.DataFrame,
    on: list[str],
    params: dict,
    gold: pd.DataFrame | None = None,
    *,
    kind: str = "dedup",
) -> tuple[str, dict]:
    """Store a dedup result as a `dedup` run (clusters, pairs, optional gold); `kind` names
    the run otherwise (`loom cluster` stores a `cluster` run with the same tables)."""
    run = ws.start_run(kind, params)
    try:
        table = clusters.reset_index(drop=True)
        texts, _ = key_texts(table, on)
        front = pd.DataFrame(
            {"row": range(len(table)), "cluster_id": table["cluster_id"], "key": texts}
        )
        rest = table.drop(columns=["cluster_id"]).rename(
            columns={c: f"{c}_" for c in ("row", "key") if c in table.columns}
        )
        ws.save_table(run, "clusters", pd.concat([front, rest], axis=1))
        ws.save_table(run, "pairs", pairs[["row_a", "row_b", "score"]])
        n_groups = int(table.loc[table["duplicate"], "cluster_id"].nunique())
        summary = {
            "rows": len(table),
            "clusters": int(table["cluster_id"].nunique()),
            "duplicate_groups": n_groups,
            "duplicate_rows": int(table["duplicate"].sum()),
            "pairs": len(pairs),
        }
        if gold is not None:
            ws.save_table(run, "gold", gold[["row_a", "row_b"]].astype("int64"))
            summary.update(_metrics_summary(evaluate(table, gold)))
        ws.finish_run(run, summary=summary)
    except BaseException:
        ws.finish_run(run, status="failed")
        raise
    return run, summary


def _with_row(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True)
    if "row" in out.columns:
        out = out.rename(columns={"row": "row_"})
    out.insert(0, "row", range(len(out)))
    return out
