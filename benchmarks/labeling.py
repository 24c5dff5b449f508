"""Label models and LF appliers vs Snorkel 0.10, in the same run.

    python benchmarks/labeling.py --quick                       # < 1 min on CPU
    python benchmarks/labeling.py                               # quality n=1e5, speed n=1e6 m=50, applier 200k rows
    python benchmarks/labeling.py --device cuda --n 10000000 --m 100 --skip-quality --skip-applier
    python benchmarks/labeling.py --grids                       # dependency grid + auto table, CPU

Quality: synthetic L with known truth (binary and multi-class, 10-100 LFs, accuracies
0.55-0.95, coverage 0.05-0.6, with and without correlated LF pairs): accuracy of the argmax
on rows with a vote, and the mean absolute error of the estimated LF accuracies.
Speed: fit + predict_proba; LFApplier vs PandasLFApplier with 20 keyword/regex LFs.
Grids (issue 22): LabelModel(dependencies="auto") on planted correlated LF groups (sizes
2-5, copy probability 0.5-0.95) vs the independent model, majority vote and Snorkel; and
get_label_model("auto") with and without gold dev labels, scored on held-out test rows,
over synthetic settings and two real sets (Rotten Tomatoes, BBC News with keyword LFs).
Each timed job runs in its own process, so its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402

QUALITY_SETTINGS = [
    # (m, k, correlated pairs, class balance)
    (10, 2, 0, None),
    (30, 2, 0, None),
    (100, 2, 0, None),
    (20, 2, 4, None),
    (10, 2, 0, [0.8, 0.2]),
    (15, 3, 0, None),
    (50, 4, 5, None),
    (30, 5, 0, [0.35, 0.25, 0.2, 0.1, 0.1]),
]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _job_model(args: argparse.Namespace) -> dict:
    """One fit + predict_proba timing (in a child process)."""
    if args.code_root:  # time another copy of loom (e.g. the previous commit's) instead
        sys.path.insert(0, args.code_root)
    import torch

    from labeling.synthetic import make_synthetic

    d = make_synthetic(args.n, args.m, args.k, seed=1)
    L, Y = d["L"], d["Y"]
    before = _rss_mb()
    warnings.simplefilter("ignore")
    cuda = args.device.startswith("cuda")
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    from labeling import LabelModel

    def run_ours():
        model = LabelModel(args.k, device=args.device).fit(L)
        return model, model.predict_proba(L)

    def run_snorkel():
        model = SnorkelLabelModel(cardinality=args.k, verbose=False, device=args.device)
        model.fit(L, seed=0, progress_bar=False)
        return model, model.predict_proba(L)

    run = run_ours if args.job == "ours" else run_snorkel
    if args.job == "ours" and cuda:  # warm up kernels and the allocator
        LabelModel(args.k, device=args.device).fit(L[:10000]).predict_proba(L[:10000])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, c = time.perf_counter(), time.process_time()
    model, probs = run()
    if cuda:
        torch.cuda.synchronize()
    sec, cpu = time.perf_counter() - t, time.process_time() - c
    est = model.get_weights()
    warm = {}
    if args.warm:  # the same call again in this process: no first-call costs of torch/MKL
        t, c = time.perf_counter(), time.process_time()
        run()
        warm = {
            "warm_seconds": time.perf_counter() - t,
            "warm_cpu_seconds": time.process_time() - c,
        }
    covered = (L >= 0).any(1)
    out = {
        "seconds": sec,
        "cpu_seconds": cpu,
        **warm,
        "accuracy": float((probs.argmax(1) == Y)[covered].mean()),
        "acc_mae": float(np.abs(est - d["acc"]).mean()),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
    }
    if cuda:
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def applier_lfs() -> tuple[list, list]:
    """20 keyword/regex LFs as loom vectorized LFs and as equivalent Snorkel row LFs."""
    from snorkel.labeling import labeling_function as snorkel_lf

    from labeling import regex_lf

    specs = [
        (r"\b(?:great|superb|terrific)\b", 1),
        (r"\b(?:funny|hilarious)\b", 1),
        (r"\b(?:moving|touching)\b", 1),
        (r"\b(?:beautiful|gorgeous)\b", 1),
        (r"\b(?:charming|delightful)\b", 1),
        (r"\b(?:best|excellent)\b", 1),
        (r"\b(?:smart|clever)\b", 1),
        (r"\b(?:fun|enjoyable)\b", 1),
        (r"\bmust[- ]see\b", 1),
        (r"\bworth (?:it|seeing)\b", 1),
        (r"\b(?:bad|awful)\b", 0),
        (r"\b(?:boring|dull)\b", 0),
        (r"\b(?:worst|terrible)\b", 0),
        (r"\b(?:mess|muddled)\b", 0),
        (r"\b(?:tedious|tiresome)\b", 0),
        (r"\b(?:fails?|failed)\b", 0),
        (r"\b(?:stupid|dumb)\b", 0),
        (r"\btoo (?:long|slow)\b", 0),
        (r"\b(?:bland|flat)\b", 0),
        (r"\bdisappoint\w*", 0),
    ]
    ours = [regex_lf(f"lf{i}", p, lab) for i, (p, lab) in enumerate(specs)]
    theirs = []
    for i, (p, lab) in enumerate(specs):
        rx = re.compile(p, re.IGNORECASE)

        def f(x, rx=rx, lab=lab):
            return lab if rx.search(x.text) else -1

        theirs.append(snorkel_lf(name=f"lf{i}")(f))
    return ours, theirs


def _job_applier(args: argparse.Namespace) -> dict:
    from toolkit.datasets import load_rotten_tomatoes

    base = load_rotten_tomatoes()[["text"]]
    df = base.sample(args.rows, replace=args.rows > len(base), random_state=0).reset_index(
        drop=True
    )
    ours, theirs = applier_lfs()
    from snorkel.labeling import PandasLFApplier

    from labeling import LFApplier

    before = _rss_mb()
    t = time.perf_counter()
    if args.job == "applier_ours":
        L = LFApplier(ours).apply(df, progress=False)
    elif args.job == "applier_ours_rows":
        L = LFApplier(theirs).apply(df, n_jobs=2, progress=False)
    else:
        L = PandasLFApplier(theirs).apply(df, progress_bar=False)
    sec = time.perf_counter() - t
    return {
        "seconds": sec,
        "rows_per_s": len(df) / sec,
        "votes": int((L >= 0).sum()),
        "checksum": int((L * np.arange(1, L.shape[1] + 1)).sum() % 1_000_003),
        "rss_before_mb": before,
        "peak_rss_mb": _peak_mb(),
    }


def run_child(job: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--job", job] + [
        f"--{k.replace('_', '-')}={v}" for k, v in kw.items()
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    if out.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def quality(n: int, settings: list, snorkel_epochs: int) -> list[dict]:
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    from labeling import DawidSkene, LabelModel, MajorityVoter, TripletModel
    from labeling.synthetic import make_synthetic

    rows = []
    for m, k, corr, bal in settings:
        d = make_synthetic(n, m, k, class_balance=bal, n_correlated=corr, seed=7 + m + k)
        L, Y = d["L"], d["Y"]
        covered = (L >= 0).any(1)
        row = {
            "m": m,
            "k": k,
            "corr_pairs": corr,
            "balance": "uniform" if bal is None else "skewed",
        }
        for name, model in [
            ("loom_LM", LabelModel(k)),
            ("DS", DawidSkene(k)),
            ("Triplet", TripletModel(k)),
            ("MV", MajorityVoter(k)),
        ]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(L)
            probs = model.predict_proba(L)
            if name == "MV":  # ties broken at random, as an end model would see them
                pred = model.predict(L, tie_break_policy="random")
            else:
                pred = probs.argmax(1)
            row[f"{name}_acc"] = float((pred == Y)[covered].mean())
            if name != "MV":
                row[f"{name}_mae"] = float(np.abs(model.get_weights() - d["acc"]).mean())
        peer = SnorkelLabelModel(cardinality=k, verbose=False)
        peer.fit(L, n_epochs=snorkel_epochs, seed=0, progress_bar=False)
        row["snorkel_acc"] = float((peer.predict_proba(L).argmax(1) == Y)[covered].mean())
        row["snorkel_mae"] = float(np.abs(peer.get_weights() - d["acc"]).mean())
        row["acc_gain"] = row["loom_LM_acc"] - row["snorkel_acc"]
        rows.append(row)
        print_table([row])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1_000_000, help="rows for the label-model speed test")
    ap.add_argument("--m", type=int, default=50, help="LFs for the label-model speed test")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--quality-n", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=200_000, help="rows for the applier test")
    ap.add_argument(
        "--peer-max-n", type=int, default=1_000_000, help="largest n Snorkel is timed at"
    )
    ap.add_argument("--snorkel-epochs", type=int, default=100)
    ap.add_argument("--warm", type=int, default=0, help="also time a second call per process")
    ap.add_argument("--code-root", default="", help=argparse.SUPPRESS)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-applier", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="only the quality table")
    ap.add_argument("--skip-lm", action="store_true", help="no label-model speed test")
    ap.add_argument(
        "--grids",
        action="store_true",
        help="only the dependency grid and the auto-selection table (issue 22)",
    )
    ap.add_argument("--grid-n", type=int, default=20_000, help="rows per grid setting")
    ap.add_argument("--grid-seeds", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.job:
        fn = _job_applier if args.job.startswith("applier") else _job_model
        print(json.dumps(fn(args)))
        return
    if args.quick:
        args.n, args.m, args.quality_n, args.rows = 20_000, 20, 5_000, 3_000
        args.grid_n, args.grid_seeds = 5_000, 1
    results: dict = {"args": vars(args)}
    if args.grids:
        from benchmarks.labeling_grids import auto_table, copied_pairs, dependency_grid

        print(f"== dependency grid, n={args.grid_n}, m=20, two groups per setting")
        results["dependency_grid"] = dependency_grid(
            args.grid_n, 20, args.grid_seeds, args.snorkel_epochs
        )
        print(
            f"\n== copied pairs (the quality table, n={args.quality_n}) and the identifiability limit"
        )
        results["dependency_cases"] = copied_pairs(args.quality_n)
        print(f"\n== auto selection, n={args.grid_n} training rows")
        results["auto_selection"] = auto_table(args.grid_n, args.grid_seeds, 1_000)
        name = "labeling" + ("-quick" if args.quick else "") + "-grids"
        path = write_results(name + (f"-{args.tag}" if args.tag else ""), args.device, results)
        print(f"\nwrote {path}")
        return

    if not args.skip_quality:
        settings = QUALITY_SETTINGS[:3] if args.quick else QUALITY_SETTINGS
        print(f"== quality on synthetic data, n={args.quality_n}")
        results["quality"] = quality(args.quality_n, settings, args.snorkel_epochs)

    if args.skip_speed:
        args.skip_applier = True
    elif not args.skip_lm:
        results["label_model_speed"] = label_model_speed(args)
    if not args.skip_applier:
        results["applier_speed"] = applier_speed(args)
    name = "labeling" + ("-quick" if args.quick else "")
    name += "-quality" if args.skip_speed else "-speed" if args.skip_quality else ""
    path = write_results(name + (f"-{args.tag}" if args.tag else ""), args.device, results)
    print(f"\nwrote {path}")


def label_model_speed(args: argparse.Namespace) -> list[dict]:
    print(
        f"\n== LabelModel fit + predict_proba, n={args.n}, m={args.m}, k={args.k}, device={args.device}"
    )
    speed = []
    ours = run_child("ours", n=args.n, m=args.m, k=args.k, device=args.device)
    speed.append({"method": f"loom LabelModel ({args.device})", **ours})
    if args.n <= args.peer_max_n:
        peer = run_child("snorkel", n=args.n, m=args.m, k=args.k, device="cpu")
        speed.append({"method": "snorkel LabelModel (cpu)", **peer})
        speed[0]["speedup"] = peer["seconds"] / ours["seconds"]
    print_table(speed)
    return speed


def applier_speed(args: argparse.Namespace) -> list[dict]:
    if args.rows:
        print(f"\n== LF applier, 20 regex/keyword LFs, {args.rows} rows")
        app = [
            {
                "method": "loom LFApplier (vectorized LFs)",
                **run_child("applier_ours", rows=args.rows),
            },
            {
                "method": "loom LFApplier (Snorkel row LFs, n_jobs=2)",
                **run_child("applier_ours_rows", rows=args.rows),
            },
            {"method": "snorkel PandasLFApplier", **run_child("applier_snorkel", rows=args.rows)},
        ]
        for r in app[:2]:
            r["speedup"] = r["rows_per_s"] / app[2]["rows_per_s"]
            r["same_L"] = r["checksum"] == app[2]["checksum"]
        print_table(app)
    return app


if __name__ == "__main__":
    main()
