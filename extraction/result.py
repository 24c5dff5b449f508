"""What an extraction run returns (`ExtractionResult`) and how it is scored against gold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from extraction.candidates import normalize
from toolkit.errors import LoomError
from toolkit.llm import token_total
from toolkit.metrics import precision_recall_f1


@dataclass
class ExtractionResult:
    """The table and everything needed to trust or debug it."""

    table: pd.DataFrame
    functions: pd.DataFrame
    provenance: pd.DataFrame
    tokens: pd.DataFrame
    report: dict[str, Any]
    documents: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    run_id: str | None = None

    def evaluate(self, gold: pd.DataFrame) -> pd.DataFrame:
        """Per-attribute precision/recall/F1 against `gold` (by `path` or `doc_id`)."""
        return evaluate(self.table, gold, documents=self.documents)

    def __repr__(self) -> str:
        return (
            f"ExtractionResult({len(self.table)} documents, attributes "
            f"{self.report.get('attributes')}, mode {self.report.get('mode')!r}, "
            f"{self.report.get('functions_kept', 0)}/{self.report.get('functions_total', 0)} "
            f"functions kept, run {self.run_id!r})"
        )

    def _repr_html_(self, rows: int = 10) -> str:
        """Notebook view: headline numbers, the first rows, functions and provenance."""
        import html

        n_tok = token_total(self.tokens)
        parts = [f"<b>{html.escape(repr(self))}</b>", f"<p>LLM tokens: {n_tok:,}</p>"]
        if self.report.get("isolation"):
            on = [k for k, v in self.report["isolation"].items() if v["active"]]
            off = [k for k, v in self.report["isolation"].items() if not v["active"]]
            parts.append(
                f"<p>sandbox layers on: {', '.join(on)}"
                + (f"; <b>OFF: {', '.join(off)}</b>" if off else "")
                + "</p>"
            )
        if self.report.get("evaluation"):
            ev = pd.DataFrame(self.report["evaluation"])
            parts += ["<p>against gold:</p>", ev.to_html(index=False, float_format="{:.3f}".format)]
        parts += [f"<p>table (first {rows} rows):</p>", self.table.head(rows).to_html(index=False)]
        if len(self.functions):
            cols = ["attribute", "function_id", "source", "sample_f1", "est_accuracy", "coverage"]
            cols += ["kept", "reason"]
            f = self.functions[[c for c in cols if c in self.functions.columns]]
            parts += [
                "<p>candidate functions:</p>",
                f.to_html(index=False, float_format="{:.3f}".format),
            ]
        parts += [
            f"<p>provenance (first {rows} rows):</p>",
            self.provenance.head(rows).to_html(index=False),
        ]
        return "\n".join(parts)


def evaluate(
    table: pd.DataFrame, gold: pd.DataFrame, documents: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Precision, recall and F1 per attribute (normalized exact match; '' = no value).

    precision = correct / predicted values, recall = correct / gold values.
    """
    if not isinstance(gold, pd.DataFrame):
        raise LoomError(
            f"gold is a {type(gold).__name__}, not a DataFrame: give a table with a `path` (or "
            "`doc_id`) column and one column per attribute, e.g. pd.read_csv(file, dtype=str)"
        )
    if "doc_id" not in gold.columns and "path" not in gold.columns:
        raise LoomError(
            f"gold has no `path` or `doc_id` column to join it to the documents (its columns: "
            f"{list(map(str, gold.columns))}): add the document path relative to the folder"
        )
    key = "doc_id" if "doc_id" in gold.columns else "path"
    twice = gold[key][gold[key].duplicated()].unique()
    if len(twice):
        raise LoomError(
            f"gold has more than one row for {key} {', '.join(map(str, twice[:5]))}: keep one "
            "row per document (each would be counted again)"
        )
    pred = table
    if key == "path" and "path" not in pred.columns:
        if documents is None:
            raise LoomError("gold has `path` but the table has no path: pass documents")
        pred = pred.merge(documents[["doc_id", "path"]], on="doc_id")
    attrs = [c for c in gold.columns if c in pred.columns and c not in ("doc_id", "path")]
    if not attrs:
        raise LoomError("gold and table share no attribute columns")
    merged = gold.merge(pred, on=key, how="left", suffixes=("_gold", "_pred"))
    rows = []
    for a in attrs:
        g = [normalize(_whole(v)) for v in merged[f"{a}_gold"]]
        p = [normalize(v) for v in merged[f"{a}_pred"]]
        correct = sum(1 for x, y in zip(g, p) if x and x == y)
        npred, ngold = sum(1 for y in p if y), sum(1 for x in g if x)
        prec, rec, f1 = precision_recall_f1(correct, npred, ngold)
        rows.append(
            {
                "attribute": a,
                "precision": prec,
                "recall": rec,
                "f1": f1,
                "predicted": npred,
                "gold": ngold,
            }
        )
    out = pd.DataFrame(rows)
    mean = out[["precision", "recall", "f1"]].mean()
    out.loc[len(out)] = {
        "attribute": "(mean)",
        **mean.to_dict(),
        "predicted": out["predicted"].sum(),
        "gold": out["gold"].sum(),
    }
    return out


def _whole(v: Any) -> Any:
    """A whole float as its integer: pandas reads a numeric column with a gap as floats, and
    the postcode 2600 must not become '2600.0' against the extracted '2600'."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
