"""LabelModel vs Snorkel 0.10 speed over issue 22's grid, interleaved on a shared machine.

    python benchmarks/labeling_speed.py                         # n 2e5 and 1e6, k {2,4}, m {30,50}
    python benchmarks/labeling_speed.py --n 200000 --repeats 3 --baseline /tmp/loom-head
    python benchmarks/labeling_speed.py --many-classes          # k = 25: LabelModel vs MV

Each (n, m, k) setting runs `repeats` rounds; a round times Snorkel, then loom (then, with
--baseline, the loom copy in that folder, e.g. `git archive HEAD labeling toolkit kernels`
unpacked there), each fit + predict_proba in its own fresh process (benchmarks/labeling.py
--job), so load from other jobs hits both sides alike. Reported: medians of wall seconds
and of process CPU seconds, the speedups they give, accuracy and LF-accuracy MAE; with
--warm, also a second call in the same process (no first-call costs of torch/MKL).
Many classes: k = 25, LFs of accuracy 0.3-0.8 voting on 3-8% of rows (sparse generator):
LabelModel with its default pooled prior and with the former default (k - 2), majority
vote with random tie-breaks, and the posterior under the generator's true parameters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.labeling import run_child  # noqa: E402

KEYS = ("seconds", "cpu_seconds", "warm_seconds", "warm_cpu_seconds")


def setting(n: int, m: int, k: int, repeats: int, warm: bool, baseline: str) -> dict:
    """Interleaved rounds of one setting; medians and the speedups they give."""
    jobs = [("snorkel", "snorkel", ""), ("loom", "ours", "")]
    if baseline:
        jobs.append(("loom_before", "ours", baseline))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in jobs}
    for _ in range(repeats):
        for name, job, root in jobs:
            kw = {"n": n, "m": m, "k": k, "device": "cpu", "warm": int(warm)}
            if root:
                kw["code_root"] = root
            runs[name].append(run_child(job, **kw))
    row: dict = {"n": n, "m": m, "k": k, "repeats": repeats}
    for name, rs in runs.items():
        for key in KEYS:
            if key in rs[0]:
                row[f"{name}_{key}"] = statistics.median(r[key] for r in rs)
        row[f"{name}_accuracy"] = rs[0]["accuracy"]
        row[f"{name}_acc_mae"] = rs[0]["acc_mae"]
        row[f"{name}_peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
        row[f"{name}_all_seconds"] = [round(r["seconds"], 3) for r in rs]
        row[f"{name}_all_cpu_seconds"] = [round(r["cpu_seconds"], 3) for r in rs]
    for name in runs:
        if name == "snorkel":
            continue
        for key in KEYS:
            if f"{name}_{key}" in row:
                row[f"{name}_speedup_{key}"] = row[f"snorkel_{key}"] / row[f"{name}_{key}"]
    return row


def many_classes(settings: list[tuple[int, int, int]], k: int = 25) -> list[dict]:
    """Accuracy on rows with a vote: LabelModel (default and pooled = k - 2), MV, oracle."""
    import warnings

    import numpy as np

    from labeling import LabelModel, MajorityVoter
    from labeling.model.sparse import sparse_proba
    from labeling.synthetic import make_sparse_synthetic

    rows = []
    for n, m, seed in settings:
        d = make_sparse_synthetic(
            n, m, cardinality=k, acc_range=(0.3, 0.8), cov_range=(0.03, 0.08), seed=seed
        )
        S, Y, acc, cov = d["S"], d["Y"], d["acc"], d["cov"]
        voted = np.diff(S.indptr) > 0
        eye = np.eye(k)
        cond = np.zeros((m, k + 1, k))
        wrong = ((1 - acc) / (k - 1))[:, None, None]
        cond[:, 1:, :] = cov[:, None, None] * (eye * acc[:, None, None] + (1 - eye) * wrong)
        cond[:, 0, :] = 1 - cov[:, None]
        oracle = sparse_proba(S, cond, np.full(k, 1.0 / k)).argmax(1)
        row = {"n": n, "m": m, "k": k, "seed": seed}
        row["oracle_acc"] = float((oracle == Y)[voted].mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mv = MajorityVoter(k).fit(S).predict(S, tie_break_policy="random")
            row["MV_acc"] = float((mv == Y)[voted].mean())
            for name, pooled in (("LM_default", None), ("LM_pooled_k-2", float(k - 2))):
                model = LabelModel(k).fit(S, seed=0, pooled=pooled)
                pred = model.predict(S, tie_break_policy="random")
                row[f"{name}_acc"] = float((pred == Y)[voted].mean())
                row[f"{name}_mae"] = float(np.abs(model.get_weights() - acc).mean())
                row[f"{name}_pooled"] = model.fit_info["pooled"]
        rows.append(row)
        print_table([row])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="200000,1000000", help="comma-separated row counts")
    ap.add_argument("--m", default="30,50")
    ap.add_argument("--k", default="2,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="also time a second call per process")
    ap.add_argument("--baseline", default="", help="folder with another loom copy to time too")
    ap.add_argument("--tag", default="")
    ap.add_argument("--many-classes", action="store_true", help="only the k = 25 table")
    args = ap.parse_args()
    if args.many_classes:
        grid = [(5000, 60, 5), (20000, 120, 0), (20000, 120, 1), (20000, 120, 2)]
        results = {"args": vars(args), "many_classes": many_classes(grid)}
        name = "labeling-many-classes" + (f"-{args.tag}" if args.tag else "")
        print(f"\nwrote {write_results(name, 'cpu', results)}")
        return
    rows = []
    for n in (int(float(x)) for x in args.n.split(",")):
        for k in (int(x) for x in args.k.split(",")):
            for m in (int(x) for x in args.m.split(",")):
                row = setting(n, m, k, args.repeats, args.warm, args.baseline)
                rows.append(row)
                short = {c: v for c, v in row.items() if "all_" not in c and "rss" not in c}
                print_table([short])
    load = os.getloadavg()
    results = {"args": vars(args), "load_average_after": load, "label_model_speed": rows}
    name = "labeling-speed-grid" + (f"-{args.tag}" if args.tag else "")
    print(f"\nwrote {write_results(name, 'cpu', results)}")


if __name__ == "__main__":
    main()
