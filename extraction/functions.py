"""The candidate extraction functions of a run: one table from creation to the workspace.

`write_candidates` creates it (one row per (attribute, function_id): source, code, the LLM's
raw answer), `score_candidates` adds the sample scores and the keep decision, and
`apply_functions` runs the kept ones over every document and ensembles their votes, adding
the estimated accuracy and coverage. The sandbox sees positional ids, never composed keys.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from extraction import prompts
from extraction.candidates import induce, normalize
from extraction.config import EvaporateConfig
from extraction.constrained import constrained_candidates
from extraction.ensemble import aggregate
from extraction.heldout import prior_accuracy
from extraction.sandbox import run_on_cluster
from extraction.structure import label_candidates
from extraction.webpage import structure_candidates
from toolkit.metrics import precision_recall_f1

log = logging.getLogger(__name__)
KEY = ["attribute", "function_id"]
#: The `functions` table as it is returned and saved.
FUNCTION_COLUMNS = [
    *KEY,
    "source",
    "code",
    "est_accuracy",
    "coverage",
    "sample_f1",
    "precision",  # on the sample, in-sample (the sample the induced ones came from)
    "recall",
    "heldout_precision",  # k-fold over the sample documents (extraction.heldout)
    "heldout_recall",
    "kept",
    "reason",
]
_CREATED = [*KEY, "source", "code", "raw"]


def attr_words(attribute: str) -> str:
    return attribute.replace("_", " ")


def _code_prompt(a: str, k: int, raws: list[str], values: list[str], rng: random.Random) -> str:
    with_vals = [i for i, v in enumerate(values) if v]
    pool = with_vals if (k % 2 == 1 and with_vals) else list(range(len(raws)))
    pick = rng.sample(pool, min(2, len(pool)))
    examples = "\n\n".join(f"--- document {j + 1} ---\n{raws[i][:700]}" for j, i in enumerate(pick))
    if k % 2 == 1 and with_vals:
        vals = ", ".join(f'"{values[i]}"' for i in pick)
        return prompts.CODE_WITH_VALUES.format(
            examples=examples, values=vals, attribute=attr_words(a)
        )
    return prompts.CODE_PLAIN.format(examples=examples, attribute=attr_words(a))


def write_candidates(
    llm: Any, raws: list[str], sample_vals: dict[str, list[str]], cfg: EvaporateConfig,
    budget: Callable[[], int] | None = None, progress: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """Induced (LLM-free), label-anchored (`extraction.structure`), constrained
    (`extraction.constrained`, a local LLM's choices) and LLM-written candidates for every
    attribute, one row each. budget() -> LLM tokens left: checked before each round (the
    k-th function of every attribute); none is written once spent."""
    rng = random.Random(cfg.seed)
    rows: list[dict] = []
    jobs = []
    for a, values in sample_vals.items():
        pairs = [(raws[i], v) for i, v in enumerate(values) if v]
        for k, (kind, code) in enumerate(induce(pairs, cfg.max_induced)):
            rows.append({"attribute": a, "function_id": f"induced_{kind}_{k}",
                         "source": "induced", "code": code, "raw": ""})  # fmt: skip
        for fid, code in label_candidates(a, raws):  # the documents' own `Label:` lines
            rows.append({"attribute": a, "function_id": fid, "source": "label", "code": code,
                         "raw": ""})  # fmt: skip
        for fid, code in structure_candidates(a, raws):  # web pages' og/JSON-LD/<title>/...
            rows.append({"attribute": a, "function_id": fid, "source": "structure",
                         "code": code, "raw": ""})  # fmt: skip
        for k in range(cfg.num_candidates):
            jobs.append((a, k, _code_prompt(a, k, raws, values, rng), 0.0 if k < 2 else 0.7))
    if cfg.constrained and getattr(llm, "can_score", False):
        with llm.stage("constrained"):
            rows += constrained_candidates(llm, raws, sample_vals, cfg, budget, progress)
    elif cfg.constrained:
        log.info("constrained functions skipped: %r cannot score options (a server)", llm)
    for k in sorted({j[1] for j in jobs}):
        if budget is not None and budget() <= 0:
            break
        part = [j for j in jobs if j[1] == k]
        comps = llm.complete(
            [j[2] for j in part], max_tokens=cfg.code_tokens, temperature=part[0][3], seed=cfg.seed
        )
        for (a, k, _, _), c in zip(part, comps):
            rows.append({"attribute": a, "function_id": f"llm_{k}", "source": "llm",
                         "code": prompts.parse_code(c.text) or "", "raw": c.text[:2000]})  # fmt: skip
    order = {a: i for i, a in enumerate(sample_vals)}
    frame = pd.DataFrame(rows, columns=_CREATED)
    frame["_order"] = frame["attribute"].map(order)
    return frame.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def run_functions(sandbox: Any, codes: list[str], texts: list[str], client: Any = None,
                  progress: bool = False) -> tuple[list[list | None], list[str]]:  # fmt: skip
    """Outputs (None for a failed function) and failure reasons ('' if none), by position."""
    ids = {str(i): code for i, code in enumerate(codes) if code}
    if client is not None:
        outs, failures = run_on_cluster(sandbox, ids, texts, client)
    else:
        outs, failures = sandbox.run(ids, texts, progress=progress)
    return ([outs.get(str(i)) for i in range(len(codes))],
            [failures.get(str(i), "") for i in range(len(codes))])  # fmt: skip


def score_candidates(
    sandbox: Any, funcs: pd.DataFrame, raws: list[str], sample_vals: dict[str, list[str]],
    cfg: EvaporateConfig,
) -> pd.DataFrame:  # fmt: skip
    """Add sample precision/recall/F1 and coverage, and keep the best of each attribute."""
    outs, failures = run_functions(sandbox, list(funcs["code"]), raws)
    f = funcs.copy()
    f["sample_f1"] = f["coverage"] = f["precision"] = f["recall"] = 0.0
    f["kept"], f["reason"] = False, ""
    for i, row in enumerate(f.itertuples()):
        if not row.code:
            f.loc[i, "reason"] = "no code in the LLM's answer"
            continue
        if failures[i]:
            f.loc[i, "reason"] = failures[i]
            continue
        target = [normalize(v) for v in sample_vals[row.attribute]]
        got = [normalize(v) for v in outs[i]]
        correct = sum(1 for g, t in zip(got, target) if g and g == t)
        npred, ngold = sum(1 for g in got if g), sum(1 for t in target if t)
        p, r, f1 = precision_recall_f1(correct, npred, ngold)
        if npred == 0:
            reason = "abstains on every sample document"
        elif correct == 0 or p < cfg.min_precision:
            reason = f"disagrees with direct extraction on the sample (precision {p:.2f})"
        else:
            reason = ""
        f.loc[i, ["sample_f1", "coverage", "precision", "recall", "kept", "reason"]] = [
            f1, npred / len(got) if got else 0.0, p, r, reason == "", reason
        ]  # fmt: skip
    f["est_accuracy"] = f["sample_f1"]
    # per attribute: unscored rows first (as created), then the scored ones best first
    scored = f["code"].ne("") & pd.Series([not x for x in failures], index=f.index)
    keys = pd.DataFrame({
        "order": f["attribute"].map({a: i for i, a in enumerate(sample_vals)}),
        "scored": scored,
        "f1": np.where(scored, -f["sample_f1"], 0.0),
        "p": np.where(scored, -f["precision"], 0.0),
        "fid": np.where(scored, f["function_id"], ""),
        "pos": np.arange(len(f)),
    })  # fmt: skip
    f = f.loc[keys.sort_values(list(keys.columns)).index]
    limit = 1 if cfg.mode == "code" else cfg.max_functions
    rank = f[scored.loc[f.index]].groupby("attribute", sort=False).cumcount()
    drop = [i for i in rank.index[(rank >= limit).to_numpy()] if f.loc[i, "kept"]]
    f.loc[drop, ["kept", "reason"]] = [False, f"not among the best {limit} on the sample"]
    return f.reset_index(drop=True)


def apply_functions(
    tools: Any, funcs: pd.DataFrame, texts: list[str], cfg: EvaporateConfig
) -> tuple[pd.DataFrame, dict[str, list], dict[str, list], list[str]]:
    """Run the kept functions over every document and ensemble their votes per attribute.

    Returns (functions with est_accuracy/coverage, values per attribute, the function that
    supplied each value, attributes no function could extract).
    """
    f = funcs.copy()
    kept = f.index[f["kept"]].tolist()
    outs, failures = run_functions(tools.sandbox, [f.loc[i, "code"] for i in kept], texts,
                                   tools.client, tools.progress)  # fmt: skip
    votes_of: dict[str, dict[str, list]] = {a: {} for a in dict.fromkeys(f["attribute"])}
    for i, out, why in zip(kept, outs, failures):
        if why:
            f.loc[i, ["kept", "reason"]] = [False, f"failed on the full run: {why}"]
        else:
            votes_of[f.loc[i, "attribute"]][f.loc[i, "function_id"]] = out
    n = len(texts)
    values: dict[str, list] = {}
    sources: dict[str, list] = {}
    unextractable: list[str] = []
    for a, votes in votes_of.items():
        if not votes:
            unextractable.append(a)
            values[a], sources[a] = [None] * n, [None] * n
            continue
        rows = f[f["attribute"].eq(a)].set_index("function_id")
        prior = {fid: prior_accuracy(rows.loc[fid]) for fid in votes}  # held-out precision
        if cfg.mode == "code":
            fid = next(iter(votes))
            values[a], sources[a] = votes[fid], [fid if v else None for v in votes[fid]]
            est = {fid: (prior[fid], float(np.mean([bool(v) for v in votes[fid]])))}
        else:
            vals, src, _, acc, cov = aggregate(votes, {g: max(p, 0.5) for g, p in prior.items()})
            values[a], sources[a] = vals, src
            est = {fid: (acc[fid], cov[fid]) for fid in votes}
        for fid, (acc_, cov_) in est.items():
            sel = f["attribute"].eq(a) & f["function_id"].eq(fid)
            f.loc[sel, ["est_accuracy", "coverage"]] = [acc_, cov_]
    return f, values, sources, unextractable
