"""Issue 22 grids, run by `python benchmarks/labeling.py --grids` (CPU, about a minute idle).

Dependency grid: LabelModel(dependencies="auto") on planted correlated LF groups (sizes 2-5,
copy probability 0.5-0.95, k = 2 and 3) vs the independent model, majority vote, TripletModel
and Snorkel 0.10 in the same run; plus the quality table's copied pairs and the
identifiability limit. Auto table: get_label_model("auto") with and without gold dev
labels, scored on held-out test rows, over synthetic settings and two real sets (Rotten
Tomatoes, BBC News with keyword LFs).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from benchmarks.common import print_table

DEP_SIZES = (2, 3, 4, 5)
DEP_CORRS = (0.5, 0.7, 0.8, 0.95)


def _acc_random(model, L: np.ndarray, Y: np.ndarray) -> float:
    """Accuracy on rows with a vote, ties broken at random (seed 0), as an end model sees them."""
    covered = (L >= 0).any(1)
    return float((model.predict(L, tie_break_policy="random") == Y)[covered].mean())


def dependency_grid(n: int, m: int, seeds: int, snorkel_epochs: int) -> list[dict]:
    """LabelModel with learned dependencies vs the independent model, MV and Snorkel."""
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel

    from labeling import LabelModel, MajorityVoter, TripletModel
    from labeling.synthetic import make_correlated

    rows = []
    for k in (2, 3):
        for size in DEP_SIZES:
            for corr in DEP_CORRS:
                for seed in range(seeds if k == 2 else 1):
                    d = make_correlated(
                        n, m, k, group_sizes=(size, size), correlation=corr, seed=seed
                    )
                    L, Y = d["L"], d["Y"]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t = time.perf_counter()
                        dep = LabelModel(k).fit(L, dependencies="auto")
                        sec_dep = time.perf_counter() - t
                        t = time.perf_counter()
                        ind = LabelModel(k).fit(L)
                        sec_ind = time.perf_counter() - t
                        tri = TripletModel(k).fit(L)
                    mv = MajorityVoter(k).fit(L)
                    peer = SnorkelLabelModel(cardinality=k, verbose=False)
                    t = time.perf_counter()
                    peer.fit(L, n_epochs=snorkel_epochs, seed=0, progress_bar=False)
                    sec_peer = time.perf_counter() - t
                    covered = (L >= 0).any(1)
                    edges = {tuple(sorted(e)) for e in d["edges"]}
                    found = set(dep.dependencies_)
                    row = {
                        "k": k,
                        "group_size": size,
                        "groups": 2,
                        "corr": corr,
                        "seed": seed,
                        "dep_acc": _acc_random(dep, L, Y),
                        "ind_acc": _acc_random(ind, L, Y),
                        "MV_acc": _acc_random(mv, L, Y),
                        "Triplet_acc": _acc_random(tri, L, Y),
                        "snorkel_acc": float(
                            (peer.predict_proba(L).argmax(1) == Y)[covered].mean()
                        ),
                        "dep_mae": float(np.abs(dep.get_weights() - d["acc"]).mean()),
                        "ind_mae": float(np.abs(ind.get_weights() - d["acc"]).mean()),
                        "snorkel_mae": float(np.abs(peer.get_weights() - d["acc"]).mean()),
                        "pairs_found": len(found),
                        "pairs_planted": len(edges),
                        "pairs_right": len(found & edges),
                        "dep_seconds": sec_dep,
                        "ind_seconds": sec_ind,
                        "snorkel_seconds": sec_peer,
                    }
                    row["target_met"] = bool(
                        row["dep_mae"] <= 0.03
                        and row["dep_acc"] >= row["MV_acc"]
                        and row["dep_acc"] >= row["ind_acc"]
                    )
                    rows.append(row)
                    print_table([row])
    return rows


def copied_pairs(n: int) -> list[dict]:
    """The quality table's correlated setting (20 binary LFs, 4 copied pairs) with dependencies,
    and the identifiability limit (every LF in one of two groups)."""
    from labeling.synthetic import make_correlated, make_synthetic

    m, k, corr = 20, 2, 4
    cases = [
        (
            {"setting": "quality table: 4 copied pairs", "m": m, "n": n},
            make_synthetic(n, m, k, n_correlated=corr, seed=7 + m + k),
        ),  # as in quality()
    ]
    for c in (0.5, 0.95):  # the identifiability limit: every LF in one of two groups
        cases.append(
            (
                {"setting": f"all 10 LFs in 2 groups of 5, corr {c}", "m": 10, "n": 20_000},
                make_correlated(20_000, 10, k, group_sizes=(5, 5), correlation=c, seed=3),
            )
        )
    return [_four_models(row, d, k) for row, d in cases]


def _four_models(row: dict, d: dict, k: int) -> dict:
    from labeling import LabelModel, MajorityVoter, TripletModel

    L, Y = d["L"], d["Y"]
    covered = (L >= 0).any(1)
    for name, model, kw in [
        ("dep", LabelModel(k), {"dependencies": "auto"}),
        ("ind", LabelModel(k), {}),
        ("Triplet", TripletModel(k), {}),
        ("MV", MajorityVoter(k), {}),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(L, **kw)
        if name == "MV":
            pred = model.predict(L, tie_break_policy="random")
        else:
            pred = model.predict_proba(L).argmax(1)
            row[f"{name}_mae"] = float(np.abs(model.get_weights() - d["acc"]).mean())
        row[f"{name}_acc"] = float((pred == Y)[covered].mean())
    print_table([row])
    return row


def _real_sets() -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(name, L, Y, k) of the real sets: Rotten Tomatoes and BBC News with keyword LFs."""
    from labeling import LFApplier, keyword_lf, regex_lf
    from toolkit.datasets import load_bbc_news, load_rotten_tomatoes

    rt = load_rotten_tomatoes()
    pos, neg = 1, 0
    lfs = [
        keyword_lf("kw_great", ["great", "masterpiece", "wonderful", "terrific", "superb"], pos),
        keyword_lf("kw_fun", ["funny", "hilarious", "charming", "delightful", "enjoyable"], pos),
        keyword_lf("kw_moving", ["moving", "touching", "powerful", "beautiful", "compelling"], pos),
        keyword_lf("kw_best", ["best", "brilliant", "excellent", "remarkable", "gorgeous"], pos),
        keyword_lf("kw_bad", ["bad", "worst", "awful", "terrible", "dreadful", "stupid"], neg),
        keyword_lf("kw_boring", ["boring", "dull", "tedious", "bland", "lifeless"], neg),
        keyword_lf("kw_mess", ["mess", "muddled", "incoherent", "pointless", "unfunny"], neg),
        regex_lf("rx_fails", r"\b(fails?|failed|falls? (flat|short)|disappoint\w*)\b", neg),
        regex_lf("rx_too", r"\btoo (long|slow|much|little|many)\b", neg),
        regex_lf("rx_recommend", r"\b(must[- ]see|worth (seeing|watching|it)|recommend\w*)\b", pos),
        regex_lf("rx_not_good", r"\bnot (very |that |particularly )?(good|funny|great)\b", neg),
    ]
    L_rt = LFApplier(lfs).apply(rt, progress=False)
    bbc = load_bbc_news()
    words = {
        0: ["company", "market", "shares", "profit", "economy", "bank", "firm", "sales"],
        1: ["film", "music", "star", "award", "band", "album", "actor", "show"],
        2: ["government", "election", "minister", "party", "labour", "tory", "mp", "blair"],
        3: ["match", "game", "cup", "team", "coach", "win", "player", "season"],
        4: ["software", "technology", "users", "computer", "mobile", "internet", "net", "digital"],
    }
    bbc_lfs = []
    for label, ws in words.items():
        for half in (ws[:4], ws[4:]):
            bbc_lfs.append(keyword_lf(f"kw_{label}_{half[0]}", half, label))
    L_bbc = LFApplier(bbc_lfs).apply(bbc, progress=False)
    return [
        ("rotten_tomatoes (11 keyword/regex LFs)", L_rt, rt["label"].to_numpy(), 2),
        ("bbc_news (10 keyword LFs)", L_bbc, bbc["label"].to_numpy(), 5),
    ]


def auto_table(n: int, seeds: int, dev_rows: int) -> list[dict]:
    """get_label_model("auto") with and without gold dev labels vs every candidate."""
    from labeling import LFAnalysis, MajorityVoter, get_label_model
    from labeling.model.auto import CANDIDATES
    from labeling.synthetic import make_correlated

    settings = [
        ("independent", dict(m=20, cardinality=2, group_sizes=()), n),
        ("independent k=4", dict(m=20, cardinality=4, group_sizes=()), n),
        (
            "equal LFs, few rows",
            dict(m=8, cardinality=2, group_sizes=(), acc_range=(0.7, 0.7)),
            200,
        ),
    ]
    settings += [
        (f"groups 2x{s}, corr {c}", dict(m=20, cardinality=2, group_sizes=(s, s), correlation=c), n)
        for s in DEP_SIZES
        for c in (0.5, 0.95)
    ]
    cases = []
    for name, cfg, n_train in settings:
        for seed in range(seeds):
            d = make_correlated(n_train + 2 * dev_rows + 5000, **cfg, seed=seed)
            L, Y = d["L"], d["Y"]
            a, b = n_train, n_train + dev_rows
            # train rows | dev rows (gold) | test rows (scored)
            cases.append(
                (f"{name} / seed {seed}", L[:a], L[a:b], Y[a:b], L[b:], Y[b:], cfg["cardinality"])
            )
    for name, L, Y, k in _real_sets():
        idx = np.random.default_rng(0).permutation(len(L))
        dev, test = idx[: len(L) // 5], idx[len(L) // 5 :]
        cases.append((name, L, L[dev], Y[dev], L[test], Y[test], k))
    rows = []
    for name, L, Ld, Yd, Lt, Yt, k in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            unsup = get_label_model("auto", k).fit(L)
            sec = time.perf_counter() - t
            sup = get_label_model("auto", k).fit(L, Y_dev=Yd, L_dev=Ld)
            pairs = [tuple(p) for p in unsup.fit_info["dependencies"]]
            every = {}
            for c, cls in CANDIDATES.items():
                if c == "LabelModel+dependencies":
                    if pairs:
                        every[c] = cls(k).fit(L, dependencies=pairs)
                else:
                    every[c] = cls(k).fit(L)
        test_acc = {c: _acc_random(mdl, Lt, Yt) for c, mdl in every.items()}
        row = {
            "setting": name,
            "k": k,
            "n_train": len(L),
            "auto": unsup.chosen_,
            "auto_test_acc": _acc_random(unsup, Lt, Yt),
            "auto_dev": sup.chosen_,
            "auto_dev_test_acc": _acc_random(sup, Lt, Yt),
            "auto_dev_dev_acc": sup.score(Ld, Yd, tie_break_policy="random")["accuracy"],
            "MV_dev_acc": MajorityVoter(k)
            .fit(L)
            .score(Ld, Yd, tie_break_policy="random")["accuracy"],
            "MV_test_acc": test_acc["MajorityVoter"],
            "best": max(test_acc, key=test_acc.get),
            "best_test_acc": max(test_acc.values()),
            "auto_seconds": sec,
            "lf_warnings": len(LFAnalysis(L).warnings(cardinality=k)),
        }
        row.update({f"{c}_test_acc": v for c, v in test_acc.items()})
        rows.append(row)
        print_table(
            [
                {
                    c: row[c]
                    for c in (
                        "setting",
                        "auto",
                        "auto_test_acc",
                        "auto_dev",
                        "auto_dev_test_acc",
                        "MV_test_acc",
                        "best",
                        "best_test_acc",
                    )
                }
            ]
        )
    return rows
