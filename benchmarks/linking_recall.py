"""The recall= section of benchmarks/linking.py: blocking tuned to a target recall.

For each target, on the FEBRL4 test split (link) and the FEBRL3 test rows (dedup): the
candidates per row chosen (k), the expected candidate recall and its 95% lower bound, the
recall measured on all gold pairs, the candidate count, the time and F1; the defaults
(no recall=), then each target from labelled test pairs and without labels.
"""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.common import timed
from toolkit.datasets import FEBRL_FIELDS


def f1(pred: set, gold: set) -> float:
    tp = len(pred & gold)
    return 2 * tp / (len(pred) + len(gold)) if pred or gold else 0.0


RECALL_FIELDS = {  # all fields (easy: the true match is first) and three ambiguous ones
    "all 10 fields": FEBRL_FIELDS,
    "given_name,surname,suburb": ["given_name", "surname", "suburb"],
}
RECALL_LABELS = 500  # labelled test pairs given as gold= (the recall is measured on all)


def measured_candidate_recall(df_a, df_b, on, gold, rep, same) -> float:
    """Share of the gold pairs among the candidates the cascade searched with the report's k
    (every row's top k by the same character vectors; one table: from either side)."""
    from linking.cascade import link_char_vectors, self_char_vectors
    from linking.keys import field_values
    from linking.recall import pair_ranks

    if same:
        valid = np.ones(len(df_a), bool)
        x = self_char_vectors(field_values(df_a, on), valid)
        vecs, valids = (x, x), (valid, valid)
    else:
        valids = (np.ones(len(df_a), bool), np.ones(len(df_b), bool))
        vecs = link_char_vectors((field_values(df_a, on), field_values(df_b, on)), valids)
    a, b = (np.asarray(x) for x in zip(*sorted(gold)))
    ranks = pair_ranks(vecs, valids, (None, None), a, b, rep["recall_k"], same)
    return float((ranks <= rep["recall_k"]).mean())


def recall_run(data: dict, on: list, same: bool, opts: dict, device: str | None) -> tuple:
    """One merge / dedup of the recall section: (its report, predicted pairs, seconds, the last
    warning or None)."""
    import linking

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if same:
            out, secs = timed(
                lambda: linking.dedup(data["test"], on, device=device, progress=False, **opts)
            )
            pred = linking.pairs_from_clusters(out)
        else:
            out, secs = timed(
                lambda: linking.merge(
                    data["a"], data["b"], on=on, device=device, progress=False, **opts
                )
            )
            m = out["right_row"].notna()
            pred = set(zip(out.loc[m, "left_row"].astype(int), out.loc[m, "right_row"].astype(int)))
    warned = [str(w.message) for w in caught if type(w.message).__name__ == "RecallWarning"]
    return out.attrs["linking"], pred, secs, (warned[-1][:160] if warned else None)


def recall_section(d4: dict, d3: dict, targets: list[float], device: str | None) -> list[dict]:
    """recall= on FEBRL4 (link) and FEBRL3 (dedup): k, expected vs measured recall, candidate
    count, time, F1; the defaults (no recall=), then each target with RECALL_LABELS labelled
    pairs and without labels."""
    out_rows = []
    rng = np.random.default_rng(0)
    for task, same, data in (("febrl4 link", False, d4), ("febrl3 dedup", True, d3)):
        gold = sorted(data["gold"])
        labels = [gold[i] for i in rng.choice(len(gold), min(RECALL_LABELS, len(gold)), False)]
        size = len(data["test"]) if same else len(data["a"])
        for fname, on in RECALL_FIELDS.items():
            runs = [(None, {})]
            for t in targets:
                runs += [(t, {"recall": t, "gold": labels}), (t, {"recall": t})]
            for target, opts in runs:
                rep, pred, secs, warned = recall_run(data, on, same, opts, device)
                k = rep.get("recall_k", 10 if same else 2)  # the defaults: 2 / k=10
                row = {
                    "task": f"{task} {size}",
                    "fields": fname,
                    "target": target,
                    "labels": len(labels) if "gold" in opts else 0,
                    "k": k,
                    "expected": rep.get("candidate_recall"),
                    "lower": rep.get("candidate_recall_lower"),
                    "measured": measured_candidate_recall(
                        data["test"] if same else data["a"],
                        None if same else data["b"],
                        on,
                        data["gold"],
                        {"recall_k": k},
                        same,
                    ),  # fmt: skip
                    "reached": rep.get("recall_reached"),
                    "candidates": rep.get("candidate_pairs"),
                    "seconds": secs,
                    "f1": f1(pred, data["gold"]),
                }
                if rep.get("recall_k_blocks"):
                    row["k_blocks"] = rep["recall_k_blocks"]
                if warned:
                    row["warning"] = warned
                print(f"   {row}", flush=True)
                out_rows.append(row)
    return out_rows
