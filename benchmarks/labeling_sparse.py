"""Sparse votes with many classes (issue 22): LabelModel and MajorityVoter on a CSR label matrix.

    python benchmarks/labeling_sparse.py                          # n=1e6, m=200, k=100, CPU
    python benchmarks/labeling_sparse.py --n 100000 --k 20        # smaller
    PYTHONPATH=. python3 benchmarks/labeling_sparse.py --device cuda --n 10000000

The label matrix comes from labeling.synthetic.make_sparse_synthetic (independent LFs,
accuracies 0.55-0.95, coverage 0.01-0.1, so ~11 votes per row at m=200) as a CSR storing
vote + 1; nothing n x m is ever dense. Wall and CPU seconds (user + system) are both
reported: on a shared machine the CPU seconds say more. Each job runs in its own process, so its peak RSS
(resource.getrusage ru_maxrss, generator included) is its own. Accuracy is against the
generator's truth on rows with a vote; acc_mae is the mean absolute error of the estimated
LF accuracies. Snorkel needs the dense (n, m) matrix and an (n, m*k) one-hot: at
n=1e6, m=200, k=100 that is 80 GB, so it is only run where --snorkel-n rows fit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process so far (user + system): less load-dependent than wall."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _job(args: argparse.Namespace) -> dict:
    """One fit + predict_proba (in a child process)."""
    import torch

    from labeling.model import LabelModel, MajorityVoter
    from labeling.synthetic import make_sparse_synthetic

    torch.set_num_threads(args.threads) if args.threads else None
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    d = make_sparse_synthetic(args.n, args.m, args.k, seed=args.seed)
    gen = time.perf_counter() - t
    S, Y = d["S"], d["Y"]
    n_rows = args.snorkel_n if args.job == "snorkel" else args.n
    covered = np.diff(S.indptr) > 0
    out = {"job": args.job, "n": n_rows, "m": args.m, "k": args.k, "nnz": int(S.nnz)}
    out["generate_s"] = round(gen, 2)
    cuda = args.device.startswith("cuda")
    if args.job == "snorkel":
        from snorkel.labeling.model import LabelModel as SnorkelLabelModel

        from labeling.model import from_sparse_votes

        S, Y, covered = S[:n_rows], Y[:n_rows], covered[:n_rows]
        L = from_sparse_votes(S)
        t = time.perf_counter()
        model = SnorkelLabelModel(cardinality=args.k, verbose=False)
        model.fit(L, seed=0, progress_bar=False)
        probs = model.predict_proba(L)
        fit_s, proba_s = time.perf_counter() - t, 0.0
        est = model.get_weights()
    else:
        cls = LabelModel if args.job == "ours" else MajorityVoter
        model = cls(args.k, device=args.device) if args.job == "ours" else cls(args.k)
        cpu = _cpu_s()
        t = time.perf_counter()
        model.fit(S, seed=0)
        if cuda:
            torch.cuda.synchronize()
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        probs = model.predict_proba(S)
        if cuda:
            torch.cuda.synchronize()
        proba_s = time.perf_counter() - t
        out["fit_predict_cpu_s"] = round(_cpu_s() - cpu, 1)
        est = model.get_weights()
        out["fit_info"] = {
            k: v for k, v in model.fit_info.items() if k in ("fit_rows", "em_iterations")
        }
    out.update(
        fit_s=round(fit_s, 2),
        predict_proba_s=round(proba_s, 2),
        total_s=round(fit_s + proba_s, 2),
        accuracy=round(float((probs.argmax(1) == Y)[covered].mean()), 4),
        acc_mae=round(float(np.abs(est - d["acc"]).mean()), 4),
        peak_rss_mb=round(_peak_mb(), 1),
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--m", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--snorkel-n", type=int, default=0, help="rows for Snorkel (0 = skip)")
    ap.add_argument("--job", default="", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.job:
        print(json.dumps(_job(args)))
        return
    rows = []
    jobs = ["majority", "ours"] + (["snorkel"] if args.snorkel_n else [])
    for job in jobs:
        cmd = [sys.executable, __file__, "--job", job] + [
            f"--{a}={getattr(args, a.replace('-', '_'))}"
            for a in ("n", "m", "k", "seed", "device", "threads", "snorkel-n")
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            rows.append({"job": job, "error": res.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print_table([{k: v for k, v in r.items() if k != "fit_info"} for r in rows])
    if not args.no_write:
        load = Path("/proc/loadavg").read_text().split()[:3]
        path = write_results(
            "labeling-sparse",
            args.device,
            {"settings": vars(args), "load_average_after": load, "rows": rows},
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
