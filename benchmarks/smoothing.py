"""Liger and Embroid against the vanilla label model, on real data and at scale.

Quality (`--part quality`): Rotten Tomatoes (12,808 snippets, binary) and BBC News (2,225
articles, 5 classes) with two kinds of weak sources:
  * keyword LFs (sparse, hand-written word lists; see LF_WORDS below),
  * prompt-like sources: 3 weak classifiers, each trained on a few labelled examples per class
    with a different bag-of-words view (dense, noisy; a stand-in for few-shot prompts).
For each seed a random 80% of the rows is used (and new few-shot sets are drawn). Methods:
majority vote, the vanilla label model, Liger (no gold), Liger with 100 gold dev rows, and
Embroid over MiniLM + TF-IDF/SVD spaces. Accuracy and macro-F1 over all rows (a row
without votes gets the model's class prior), mean and std over seeds.

Speed (`--part speed`): synthetic clustered embeddings (d=384), 10 LFs, n rows; Liger and
Embroid end to end against the vanilla label model, plus the reference Liger extension (dense
sklearn cosine matrix, as in HazyResearch/liger) at a size it can hold in memory, with the
agreement of its extended votes and ours.

  .venv/bin/python benchmarks/smoothing.py --quick
  .venv/bin/python benchmarks/smoothing.py                     # both parts, CPU, n=1e5
  .venv/bin/python benchmarks/smoothing.py --part speed --device cuda --n 1000000
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, write_results  # noqa: E402

# labelled examples per class for each prompt-like source: chosen so the sources are noisy
# but better than chance, like small prompted LMs (accuracy about 0.55-0.65 on Rotten
# Tomatoes, 0.55-0.80 on BBC News)
SHOTS = {"rotten_tomatoes": 100, "bbc_news": 2}
CACHE = Path(__file__).resolve().parent.parent / ".loom_cache" / "embeddings"

# keyword LFs: (name, class, words); a word matches as a whole word, case-insensitive
LF_WORDS: dict[str, list[tuple[str, int, list[str]]]] = {
    "rotten_tomatoes": [
        ("pos_great", 1, ["great", "greatest", "best", "excellent", "terrific", "superb"]),
        ("pos_fun", 1, ["funny", "fun", "hilarious", "entertaining", "enjoyable", "delightful"]),
        ("pos_beauty", 1, ["beautiful", "beautifully", "gorgeous", "stunning", "lovely"]),
        ("pos_craft", 1, ["masterpiece", "brilliant", "remarkable", "wonderful", "triumph"]),
        ("pos_heart", 1, ["moving", "touching", "charming", "heartfelt", "powerful", "compelling"]),
        ("neg_bad", 0, ["bad", "worst", "awful", "terrible", "horrible", "lousy"]),
        ("neg_bore", 0, ["boring", "dull", "tedious", "tiresome", "bland", "lifeless"]),
        ("neg_mess", 0, ["mess", "fails", "failure", "waste", "pointless", "disappointing"]),
        ("neg_dumb", 0, ["stupid", "silly", "lame", "unfunny", "inept", "clumsy"]),
        ("neg_stale", 0, ["predictable", "cliched", "formulaic", "generic", "stale", "flat"]),
    ],
    "bbc_news": [
        ("biz_money", 0, ["profit", "profits", "shares", "sales", "market", "economy", "growth"]),
        ("biz_firm", 0, ["firm", "bank", "deal", "oil", "prices", "dollar", "bid", "jobs"]),
        ("ent_film", 1, ["film", "films", "movie", "oscar", "actor", "actress", "box"]),
        ("ent_music", 1, ["music", "band", "album", "singer", "chart", "star", "tv", "show"]),
        ("pol_party", 2, ["labour", "tory", "tories", "party", "election", "blair", "brown"]),
        ("pol_gov", 2, ["minister", "government", "mps", "lords", "howard", "plan", "bill"]),
        ("sport_game", 3, ["match", "cup", "win", "wins", "victory", "final", "champion"]),
        ("sport_team", 3, ["england", "coach", "injury", "club", "rugby", "chelsea", "open"]),
        ("tech_net", 4, ["net", "internet", "web", "online", "broadband", "virus", "spam"]),
        (
            "tech_device",
            4,
            ["mobile", "phone", "phones", "software", "computer", "gadget", "games"],
        ),
    ],
}


# ---- data -----------------------------------------------------------------------------------
def load_task(name: str, rt_rows: int | None = 4000) -> dict[str, Any]:
    """texts to embed, texts for the LFs, gold labels, class count."""
    from toolkit.datasets import load_bbc_news, load_rotten_tomatoes

    if name == "rotten_tomatoes":
        df = load_rotten_tomatoes()
        if rt_rows and rt_rows < len(df):  # a fixed random subset: MiniLM on 2 CPU cores is slow
            keep = np.sort(np.random.default_rng(0).permutation(len(df))[:rt_rows])
            df = df.iloc[keep].reset_index(drop=True)
        texts = df["text"].tolist()
        return {"texts": texts, "lf_texts": texts, "y": df["label"].to_numpy(), "k": 2}
    df = load_bbc_news()
    texts = (df["title"] + ". " + df["text"]).tolist()
    # LFs read the headline only, so they are sparse like real keyword rules
    return {"texts": texts, "lf_texts": df["title"].tolist(), "y": df["label"].to_numpy(), "k": 5}


def embed(texts: list[str], device: str) -> np.ndarray:
    from toolkit.embed import get_embedder

    return get_embedder(device=device).encode(
        texts, long_text="truncate", cache=str(CACHE), show_progress=True, batch_size=64
    )


def keyword_L(task: str, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    lfs = LF_WORDS[task]
    L = np.full((len(texts), len(lfs)), -1, np.int64)
    for j, (_, cls, words) in enumerate(lfs):
        pat = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I)
        L[:, j] = [cls if pat.search(t) else -1 for t in texts]
    return L, [n for n, _, _ in lfs]


def prompt_like_P(texts: list[str], y: np.ndarray, k: int, seed: int, shots: int = 8) -> np.ndarray:
    """3 weak few-shot classifiers with different bag-of-words views (dense, noisy)."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    views = [
        TfidfVectorizer(sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=3, max_features=50_000),
        CountVectorizer(binary=True, min_df=2, stop_words="english"),
    ]
    rng = np.random.default_rng(1000 + seed)
    P = np.empty((len(texts), len(views)), np.int64)
    for j, vec in enumerate(views):
        F = vec.fit_transform(texts)
        idx = np.concatenate(
            [rng.choice(np.nonzero(y == c)[0], shots, replace=False) for c in range(k)]
        )
        clf = LogisticRegression(max_iter=500, C=10.0).fit(F[idx], y[idx])
        P[:, j] = clf.predict(F)
    return P


# ---- quality -------------------------------------------------------------------------------
def scores(probs: np.ndarray, y: np.ndarray, k: int, Lm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over all rows (rows without votes get the class prior), and
    accuracy on the rows where the method's label matrix Lm has a vote."""
    from sklearn.metrics import f1_score

    pred = np.asarray(probs).argmax(1)
    cov = (Lm >= 0).any(1)
    return {
        "acc": float((pred == y).mean()),
        "f1": float(f1_score(y, pred, average="macro")),
        "acc_covered": float((pred[cov] == y[cov]).mean()) if cov.any() else float("nan"),
    }


def new_vote_accuracy(L: np.ndarray, Lm: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the votes a method added (extended or neighbourhood votes)."""
    new = (L < 0) & (Lm >= 0)
    yy = np.broadcast_to(y[:, None], L.shape)
    return float((Lm[new] == yy[new]).mean()) if new.any() else float("nan")


def run_quality(
    tasks: list[str],
    seeds: int,
    frac: float,
    device: str,
    base: str,
    quick: bool,
    rt_rows: int | None = 4000,
) -> list[dict]:
    from labeling.embroid import Embroid, tfidf_svd_embeddings
    from labeling.liger import Liger
    from labeling.model import get_label_model

    out = []
    for task in tasks:
        data = load_task(task, rt_rows)
        n_all = len(data["y"])
        if quick:
            keep = np.random.default_rng(0).choice(n_all, min(n_all, 600), replace=False)
            data = {
                "texts": [data["texts"][i] for i in keep],
                "lf_texts": [data["lf_texts"][i] for i in keep],
                "y": data["y"][keep],
                "k": data["k"],
            }
        k = data["k"]
        E_all = embed(data["texts"], device)
        L_all, names = keyword_L(task, data["lf_texts"])
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            n = len(data["y"])
            rows = np.sort(rng.choice(n, int(frac * n), replace=False))
            y, E = data["y"][rows], E_all[rows]
            texts = [data["texts"][i] for i in rows]
            T = tfidf_svd_embeddings(texts, 256, seed=seed)
            dev = np.full(len(rows), -1)
            dev_rows = rng.choice(len(rows), 100, replace=False)
            dev[dev_rows] = y[dev_rows]
            sources = {
                "keyword LFs": (L_all[rows], names),
                "prompt-like": (
                    prompt_like_P(texts, y, k, seed, SHOTS[task]),
                    ["bow", "char", "binary"],
                ),
            }
            for kind, (L, _names) in sources.items():
                res: dict[str, tuple[dict, float, float]] = {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = time.perf_counter()
                    mv = get_label_model("MajorityVoter", k).fit(L)
                    res["majority vote"] = (
                        scores(mv.predict_proba(L), y, k, L),
                        time.perf_counter() - t,
                        (L >= 0).any(1).mean(),
                    )
                    t = time.perf_counter()
                    lm = get_label_model(base, k).fit(L, seed=seed)
                    res[f"vanilla {base}"] = (
                        scores(lm.predict_proba(L), y, k, L),
                        time.perf_counter() - t,
                        (L >= 0).any(1).mean(),
                    )
                    for label, q, ydev in (
                        ("Liger (radius q=0.5)", 0.5, None),
                        ("Liger (radius q=0.8)", 0.8, None),
                        ("Liger + 100 gold", 0.5, dev),
                    ):
                        t = time.perf_counter()
                        lg = Liger(k, base=base, seed=seed, device=device, radius_quantile=q).fit(
                            L, E, Y_dev=ydev
                        )
                        p = lg.predict_proba(L, E)
                        res[label] = (
                            {
                                **scores(p, y, k, lg.extended_L),
                                "new_vote_acc": new_vote_accuracy(L, lg.extended_L, y),
                            },
                            time.perf_counter() - t,
                            (lg.extended_L >= 0).any(1).mean(),
                        )
                    t = time.perf_counter()
                    em = Embroid(k_neighbors=10, base=base, cardinality=k, seed=seed, device=device)
                    p, _ = em.fit_predict(L, [E, T], space_names=["minilm", "tfidf-svd"])
                    nb = np.concatenate(em.neighbor_votes_, 1)
                    res["Embroid"] = (
                        {
                            **scores(p, y, k, em.L_aug_),
                            "new_vote_acc": new_vote_accuracy(np.full_like(nb, -1), nb, y),
                        },
                        time.perf_counter() - t,
                        (em.L_aug_ >= 0).any(1).mean(),
                    )
                for method, (sc, secs, cov) in res.items():
                    out.append(
                        {
                            "task": task,
                            "sources": kind,
                            "method": method,
                            "seed": seed,
                            "n": len(rows),
                            "row_coverage": float(cov),
                            "seconds": secs,
                            **sc,
                        }
                    )
                print(
                    f"{task} seed {seed} {kind}: "
                    + ", ".join(f"{m} {r[0]['acc']:.3f}" for m, r in res.items()),
                    flush=True,
                )
    return out


def summarise(rows: list[dict]) -> list[dict]:
    import pandas as pd

    df = pd.DataFrame(rows)
    g = df.groupby(["task", "sources", "method"], sort=False)
    s = g.agg(
        acc=("acc", "mean"),
        acc_std=("acc", "std"),
        f1=("f1", "mean"),
        f1_std=("f1", "std"),
        acc_cov=("acc_covered", "mean"),
        new_vote_acc=("new_vote_acc", "mean"),
        row_cov=("row_coverage", "mean"),
        seconds=("seconds", "mean"),
        seeds=("seed", "count"),
    ).reset_index()
    van = s[s["method"].str.startswith("vanilla")].set_index(["task", "sources"])
    s["acc_lift"] = [r.acc - van["acc"].get((r.task, r.sources), np.nan) for r in s.itertuples()]
    s["f1_lift"] = [r.f1 - van["f1"].get((r.task, r.sources), np.nan) for r in s.itertuples()]
    return s.round(4).to_dict("records")


# ---- speed ---------------------------------------------------------------------------------
def synthetic(
    n: int, d: int = 384, m: int = 10, k: int = 2, clusters: int = 200, seed: int = 0
) -> tuple:
    """Clustered vectors with cluster-constant labels; sparse LFs (coverage 10%, accuracy 0.7)
    for Liger and dense prompt-like sources (3, accuracy 0.65) for Embroid."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(clusters, d)).astype(np.float32)
    cl = rng.integers(clusters, size=n)
    Y = rng.integers(k, size=clusters)[cl]
    X = C[cl] + 0.6 * rng.normal(size=(n, d)).astype(np.float32)
    L = np.full((n, m), -1, np.int64)
    for j in range(m):
        fires = rng.random(n) < 0.1
        right = rng.random(n) < 0.7
        L[:, j] = np.where(fires, np.where(right, Y, (Y + 1) % k), -1)
    P = np.where(rng.random((n, 3)) < 0.65, Y[:, None], (Y[:, None] + 1) % k).astype(np.int64)
    return X, L, Y, P


def reference_extension(L: np.ndarray, X: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """HazyResearch/liger's expand_lfs in our vote convention: dense cosine to every voted point."""
    from sklearn.metrics import pairwise

    out = L.copy()
    S = pairwise.cosine_similarity(X, X)
    np.fill_diagonal(S, -np.inf)
    for j in range(L.shape[1]):
        voted = np.nonzero(L[:, j] >= 0)[0]
        ab = np.nonzero(L[:, j] < 0)[0]
        sub = S[np.ix_(ab, voted)]
        best = sub.argmax(1)
        sim = sub[np.arange(len(ab)), best]
        take = sim >= 1.0 - radius[j] - 1e-7
        out[ab[take], j] = L[voted[best[take]], j]
    return out


def run_speed(n: int, device: str, base: str, ref_n: int) -> list[dict]:
    from labeling.embroid import Embroid
    from labeling.liger import Liger
    from labeling.model import get_label_model

    rows = []
    sync = device.startswith("cuda")
    X, L, Y, P = synthetic(n)
    k = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_label_model(base, k, device=device).fit(L[:1000])  # warm-up (imports, kernels)
        t = time.perf_counter()
        lm = get_label_model(base, k, device=device).fit(L)
        p = lm.predict_proba(L)
        t_van = time.perf_counter() - t
        rows.append(
            {
                "what": f"vanilla {base}",
                "n": n,
                "seconds": t_van,
                "ratio_vs_vanilla": 1.0,
                "acc": float((p.argmax(1) == Y).mean()),
            }
        )
        if sync:
            import torch

            torch.cuda.synchronize()
        t = time.perf_counter()
        lg = Liger(k, base=base, device=device).fit(L, X)
        p = lg.predict_proba(L, X)
        t_lg = time.perf_counter() - t
        rows.append(
            {
                "what": "Liger fit+predict",
                "n": n,
                "seconds": t_lg,
                "ratio_vs_vanilla": t_lg / t_van,
                "acc": float((p.argmax(1) == Y).mean()),
            }
        )
        t = time.perf_counter()
        p = get_label_model(base, k, device=device).fit(P).predict_proba(P)
        t_vp = time.perf_counter() - t
        rows.append(
            {
                "what": f"vanilla {base}, 3 dense sources",
                "n": n,
                "seconds": t_vp,
                "ratio_vs_vanilla": 1.0,
                "acc": float((p.argmax(1) == Y).mean()),
            }
        )
        t = time.perf_counter()
        p, _ = Embroid(k_neighbors=10, base=base, cardinality=k, device=device).fit_predict(P, [X])
        t_em = time.perf_counter() - t
        rows.append(
            {
                "what": "Embroid fit_predict, 3 dense sources",
                "n": n,
                "seconds": t_em,
                "ratio_vs_vanilla": t_em / t_vp,
                "acc": float((p.argmax(1) == Y).mean()),
            }
        )
        # reference dense extension vs ours, at a size the n x n matrix fits in memory
        Xs, Ls = X[:ref_n], L[:ref_n]
        lg_s = Liger(k, base="MajorityVoter", device=device, k_neighbors=20).fit(Ls, Xs)
        t = time.perf_counter()
        ref = reference_extension(Ls, Xs / np.linalg.norm(Xs, axis=1, keepdims=True), lg_s.radius_)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = Liger(
            k, base="MajorityVoter", device=device, k_neighbors=20, radius=lg_s.radius_
        ).fit(Ls, Xs)
        t_ours = time.perf_counter() - t
        new_ref = (Ls < 0) & (ref >= 0)
        agree = float((ours.extended_L[new_ref] == ref[new_ref]).mean()) if new_ref.any() else 1.0
        rows.append(
            {
                "what": "reference dense extension (sklearn)",
                "n": ref_n,
                "seconds": t_ref,
                "ratio_vs_vanilla": float("nan"),
                "acc": float("nan"),
            }
        )
        rows.append(
            {
                "what": "ours kNN extension (+MV fit)",
                "n": ref_n,
                "seconds": t_ours,
                "ratio_vs_vanilla": float("nan"),
                "acc": float("nan"),
                "speedup_vs_reference": t_ref / t_ours,
                "agreement_with_reference": agree,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--part", choices=["quality", "speed", "all"], default="all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100_000, help="rows for the speed run")
    ap.add_argument("--ref-n", type=int, default=8_000, help="rows for the dense reference")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--rt-rows", type=int, default=4000, help="Rotten Tomatoes subset (0 = all 12,808)"
    )
    ap.add_argument("--frac", type=float, default=0.8)
    ap.add_argument("--base", default="LabelModel", help="label model for every method")
    ap.add_argument("--tasks", default="rotten_tomatoes,bbc_news")
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 min on CPU")
    args = ap.parse_args()
    if args.quick:
        if args.tasks == ap.get_default("tasks"):
            args.tasks = "rotten_tomatoes"  # short texts: embedding 600 of them takes seconds
        args.n, args.ref_n, args.seeds = min(args.n, 5_000), min(args.ref_n, 2_000), 1
    payload: dict[str, Any] = {"args": vars(args)}
    if args.part in ("quality", "all"):
        rows = run_quality(
            args.tasks.split(","),
            args.seeds,
            args.frac,
            args.device,
            args.base,
            args.quick,
            args.rt_rows,
        )
        summary = summarise(rows)
        print_table(summary)
        payload["quality_runs"], payload["quality"] = rows, summary
    if args.part in ("speed", "all"):
        speed = run_speed(args.n, args.device, args.base, args.ref_n)
        print_table(speed)
        payload["speed"] = speed
    name = (
        "smoothing-quick"
        if args.quick
        else ("smoothing" if args.part == "all" else f"smoothing-{args.part}")
    )
    print("wrote", write_results(name, args.device, payload))


if __name__ == "__main__":
    main()
