"""Two tables: `link` (the pairs), `merge` (pairs joined back to both tables), `merge_knn`.

Stages: check the tables (`checks.check_link_tables`), turn key columns into texts and
masks (`link_keys`), embed (`search.embed_keys`), search (`search.match_pairs`), join back
(`assemble`). The options travel as one `LinkConfig`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from linking.cascade import cascade_link, link_char_vectors
from linking.checks import (
    check_cardinality,
    check_char_weight,
    check_how,
    check_link_options,
    check_link_tables,
    check_merge_how,
    check_recall_use,
    warn_empty_keys,
)
from linking.config import AUTO, LinkConfig, renamed_keyword
from linking.decide import ScoreMixture
from linking.keys import RESERVED, block_keys, field_values, key_texts
from linking.recall import labelled_pairs, plan_candidates
from linking.search import embed_keys, masked_texts, match_pairs, search_pairs
from linking.select import (
    best_per,
    choose_threshold,
    first_scores,
    quality_report,
    select_pairs,
)
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress

logger = logging.getLogger(__name__)


def link_keys(
    left: pd.DataFrame,
    right: pd.DataFrame,
    lcols: list[str],
    rcols: list[str],
    bcols: list[str] | None,
) -> tuple[tuple[list[str], list[str]], tuple[np.ndarray, np.ndarray], tuple, dict[str, Any]]:
    """(left, right) key texts, validity masks and blocking keys, and the report counts.

    Both sides are serialised with the left column names as field labels; a row with an
    empty key or a missing blocking value is invalid (kept, never matched).
    """
    ltexts, lempty = key_texts(left, lcols, lcols)
    rtexts, rempty = key_texts(right, rcols, lcols)
    lvalid, rvalid = ~lempty, ~rempty
    report: dict[str, Any] = {
        "left_rows": len(left),
        "right_rows": len(right),
        "left_empty_keys": int(lempty.sum()),
        "right_empty_keys": int(rempty.sum()),
    }
    lb = rb = None
    if bcols is not None:
        lb, lmiss = block_keys(left, bcols)
        rb, rmiss = block_keys(right, bcols)
        lvalid &= ~lmiss
        rvalid &= ~rmiss
        report["left_missing_block"] = int((lmiss & ~lempty).sum())
        report["right_missing_block"] = int((rmiss & ~rempty).sum())
    return (ltexts, rtexts), (lvalid, rvalid), (lb, rb), report


def link_pairs(
    left: pd.DataFrame,
    right: pd.DataFrame,
    cfg: LinkConfig,
    on: Any = None,
    left_on: Any = None,
    right_on: Any = None,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
    gold: Any = None,
) -> tuple[pd.DataFrame, dict]:
    """`link` with its options as a `LinkConfig`: the pairs and a report dict.

    gold: labelled pairs (left_row, right_row positions) that choose the candidates for
    cfg.recall (`linking.recall`)."""
    lcols, rcols, bcols = check_link_tables(left, right, on, left_on, right_on, cfg.blocking_on)
    check_link_options(cfg)
    check_char_weight(cfg.char_weight)
    check_cardinality(cfg)
    check_recall_use(cfg, gold, vectors is not None)
    if gold is not None:  # checked before any work
        gold = list(zip(*labelled_pairs(gold, (len(left), len(right)), False)))
    (ltexts, rtexts), (lvalid, rvalid), (lb, rb), report = link_keys(
        left, right, lcols, rcols, bcols
    )
    warn_empty_keys("left", report["left_empty_keys"], len(left))
    warn_empty_keys("right", report["right_empty_keys"], len(right))
    card = cfg.link_cardinality()
    swap = card == "one_to_many"  # candidates of each right row among the left rows
    m = max(cfg.k, 5 if card == "one_to_one" else 2)
    if cfg.uses_cascade(vectors is not None):
        values = (field_values(left, lcols), field_values(right, rcols))
        sides = [values, (ltexts, rtexts), (lvalid, rvalid), (lb, rb)]
        if swap:
            sides = [tuple(reversed(x)) for x in sides]
            gold = None if gold is None else [(y, x) for x, y in gold]
        m_blocks = vecs = None
        recall_info: dict[str, Any] = {}
        if cfg.recall is not None:
            vecs = link_char_vectors(sides[0], sides[2])
            m, m_blocks, recall_info = plan_candidates(
                vecs, sides[0], sides[2], sides[3], cfg.recall, gold, m
            )
        cands, mixture, info = cascade_link(*sides[:3], cfg, sides[3], m, m_blocks, vecs)
        info.update(recall_info)
        mode, fallback = "cascade", None
    else:
        ecfg = cfg.encoder_only()
        if vectors is None:
            lv, rv = embed_keys([masked_texts(ltexts, lvalid), masked_texts(rtexts, rvalid)], ecfg)
        else:
            lv, rv = vectors
        if cfg.threshold != AUTO and cfg.cardinality is None:
            pairs = match_pairs(lv, rv, lvalid, rvalid, ecfg, lb, rb)  # as before
            return pairs, _finish(report, pairs, ecfg, "encoder", cfg.threshold, "given")
        sides = [(lv, rv), (lvalid, rvalid), (lb, rb)]
        if swap:
            sides = [tuple(reversed(x)) for x in sides]
        cands = search_pairs(*sides[0], *sides[1], ecfg, *sides[2], m)
        mixture = None
        if cfg.threshold == AUTO:
            top2 = best_per(cands, "left_row", 2)
            first = top2.groupby("left_row").cumcount().to_numpy() == 0
            mixture = ScoreMixture.fit(top2["score"].to_numpy(), likely=first)
        mode, fallback, info = "encoder", None, {"char_weight": ecfg.char_weight}
    if swap:
        cands = cands.rename(columns={"left_row": "right_row", "right_row": "left_row"})
    threshold, source = choose_threshold(cfg.threshold, mixture, fallback)
    pairs = select_pairs(cands, threshold, cfg.k, card)
    best = first_scores(cands, "right_row" if swap else "left_row", 1)
    report.update(info)
    report.update(quality_report(mixture, pairs["score"].to_numpy(), best))
    return pairs, _finish(report, pairs, cfg.encoder_only(), mode, threshold, source)


def _finish(
    report: dict, pairs: pd.DataFrame, cfg: LinkConfig, mode: str, threshold: Any, source: str
) -> dict:
    """The report's counts and choices; logged at INFO."""
    report.setdefault("char_weight", cfg.char_weight)
    report.update(mode=mode, threshold=threshold, threshold_source=source)
    report["pairs"] = len(pairs)
    report["matched_left_rows"] = int(pairs["left_row"].nunique())
    logger.info(
        "link: %s, threshold %s (%s), char_weight %s, %d pairs%s",
        mode, threshold, source, report["char_weight"], len(pairs),
        f", expected precision {report['expected_precision']}"
        if "expected_precision" in report else "",
    )  # fmt: skip
    return report


def merge_tables(
    left: pd.DataFrame,
    right: pd.DataFrame,
    cfg: LinkConfig,
    on: Any = None,
    left_on: Any = None,
    right_on: Any = None,
    how: str = "left",
    suffixes: tuple[str, str] = ("_left", "_right"),
    gold: Any = None,
) -> pd.DataFrame:
    """`merge` with its search options as a `LinkConfig` (e.g. built once by the CLI).

    how: the join ("left", "inner") or a cardinality ("one_to_one", "one_to_many",
    "many_to_one": matches by threshold, every left row kept). gold: labelled pairs for
    cfg.recall (see `link_pairs`)."""
    join, card = check_merge_how(how)
    if card is not None:
        cfg = replace(cfg, cardinality=card)
    pairs, report = link_pairs(left, right, cfg, on, left_on, right_on, gold=gold)
    ranked = cfg.k > 1 or cfg.link_cardinality() == "one_to_many"
    out = assemble(left, right, pairs, join, suffixes, with_rank=ranked)
    out.attrs["linking"] = report
    return out


def assemble(
    left: pd.DataFrame,
    right: pd.DataFrame,
    pairs: pd.DataFrame,
    how: str = "left",
    suffixes: tuple[str, str] = ("_left", "_right"),
    with_rank: bool = False,
) -> pd.DataFrame:
    """Join pairs back to both tables: all columns of both, in left row order then rank."""
    check_how(how)
    if len(suffixes) != 2 or suffixes[0] == suffixes[1]:
        raise LoomError(f"suffixes={suffixes!r}: give two different strings")
    L = left.reset_index(drop=True)
    R = right.reset_index(drop=True)
    common = set(L.columns) & set(R.columns)
    L = L.rename(columns={c: f"{c}{suffixes[0]}" for c in common})
    R = R.rename(columns={c: f"{c}{suffixes[1]}" for c in common})
    names = list(L.columns) + list(R.columns)
    clash = [c for c in names if c in RESERVED]
    if len(set(names)) != len(names) or clash:
        raise LoomError(
            f"output columns would collide ({clash or 'after adding suffixes'}): rename these "
            f"columns or pass other suffixes= (now {suffixes})"
        )
    if how == "left":
        matched = np.zeros(len(L), dtype=bool)
        matched[pairs["left_row"].to_numpy()] = True
        missing = np.flatnonzero(~matched)
        extra = pd.DataFrame(
            {
                "left_row": missing,
                "right_row": np.full(len(missing), -1),
                "score": np.full(len(missing), np.nan, np.float32),
                "rank": np.zeros(len(missing), np.int64),
            }
        )
        pairs = pd.concat([pairs, extra], ignore_index=True) if len(missing) else pairs
        pairs = pairs.sort_values(["left_row", "rank"], kind="stable").reset_index(drop=True)
    lr = pairs["left_row"].to_numpy(np.int64)
    rr = pairs["right_row"].to_numpy(np.int64)
    lpart = L.take(lr).reset_index(drop=True)
    rpart = R.reindex(rr).reset_index(drop=True)  # -1 -> a row of NaN
    out = pd.concat([lpart, rpart], axis=1)
    out["score"] = pairs["score"].to_numpy(np.float32)
    out["left_row"] = lr
    out["right_row"] = pd.array(np.where(rr >= 0, rr, 0), dtype="Int64")
    out.loc[rr < 0, "right_row"] = pd.NA
    if with_rank:
        out["rank"] = pd.array(np.where(rr >= 0, pairs["rank"].to_numpy(), 0), dtype="Int64")
        out.loc[rr < 0, "rank"] = pd.NA
    return out


def link(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    model: Any = None,
    k: int = 1,
    threshold: float | str | None = AUTO,
    blocking_on: str | Sequence[str] | None = None,
    one_to_one: bool = False,
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float | str = AUTO,
    vectors: tuple[np.ndarray, np.ndarray] | None = None,
    client: Any = None,
    *,
    how: str | None = None,
    recall: float | None = None,
    gold: Any = None,
    one_to_one_matching: bool | None = None,
    show_progress: bool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The pairs behind `merge` (left_row, right_row, score, rank) and a report dict (the
    counts, the threshold and char_weight in force, expected precision; see `merge`).

    how: None or a cardinality as in `merge` ("many_to_one", "one_to_many", "one_to_one").
    recall, gold: candidates for a target recall, as in `merge`.
    one_to_one_matching= and show_progress= are deprecated spellings of one_to_one=, progress=.
    """
    if how is not None and check_merge_how(how)[1] is None:
        raise LoomError(
            f"link(how={how!r}): link returns pairs, so how= is a cardinality: "
            "'many_to_one', 'one_to_many' or 'one_to_one' (joins are merge's)"
        )
    cardinality = how
    one_to_one = renamed_keyword(
        one_to_one, "one_to_one_matching", one_to_one_matching, "one_to_one", "link"
    )
    progress = deprecated_progress(progress, "show_progress", show_progress, "link")
    cfg = LinkConfig.from_options(locals())
    return link_pairs(left, right, cfg, on, left_on, right_on, vectors, gold)


def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    model: Any = None,
    k: int = 1,
    threshold: float | str | None = AUTO,
    blocking_on: str | Sequence[str] | None = None,
    how: str = "left",
    one_to_one: bool = False,
    suffixes: tuple[str, str] = ("_left", "_right"),
    device: str | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float | str = AUTO,
    client: Any = None,
    *,
    recall: float | None = None,
    gold: Any = None,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """Link two tables on noisy key fields: character n-grams for spelling, a sentence
    encoder for meaning, a threshold chosen from the data.

    Returns every column of both tables (shared names get `suffixes`) plus `score`,
    `left_row` and `right_row` (row positions), ordered by left row; `k>1` adds `rank` and
    up to k rows per left row. how="left" keeps left rows without a match (NaN right side);
    how="inner" keeps matches only; how="many_to_one" (each left row its best right row),
    "one_to_many" (each right row its best left row; adds `rank`) or "one_to_one" (each row
    of both sides at most once) match by threshold and keep every left row.

    Defaults decide (threshold="auto", char_weight="auto"): candidates come from per-field
    character n-gram TF-IDF vectors, a two-component mixture over their scores sets the
    threshold, and the encoder (`model`) rescores only the pairs the character score is
    unsure about, with the share of each score chosen on them; `score` is then the character
    cosine, or `w * character + (1 - w) * encoder cosine` (mapped onto the character scale)
    for rescored pairs. Rows whose best candidate is below the threshold get no match.
    `out.attrs["linking"]` reports the threshold, char_weight, the expected precision and
    recall and how many texts were embedded (also logged at INFO). threshold=None keeps
    the k nearest right rows by encoder cosine (the behaviour before "auto"); a number cuts
    there. char_weight w in [0, 1) with any threshold: every key is embedded and score =
    (1 - w) * encoder cosine + w * cosine of character n-gram LSA vectors (0.5 suits records
    of names, dates, codes and ids with typos; see docs/linking.md).

    Rows whose key is empty are never matched (a warning says how many); `blocking_on` only
    pairs rows that agree exactly on those columns, and with a dask.distributed `client`
    each block is searched as a task on the cluster (embed-everything path). progress:
    progress bars (None = on in notebooks and terminals); show_progress= is its deprecated
    spelling.

    recall: a target share of true matches in (0, 1] that the cascade's character
    candidates must hold (None = the default 2 per row, 5 for one_to_one): the candidates per
    row (k) are chosen per block, from `gold` (labelled pairs as left_row/right_row
    positions, like `tune_threshold`'s) or, without it, estimated from the agreement of two
    halves of the key fields (`linking.recall` says what that assumes). The report adds
    `recall_k`, `candidate_recall` (expected), its lower bound and how it was estimated; a
    `RecallWarning` says when the target is not reached.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "merge")
    cfg = LinkConfig.from_options(locals())
    return merge_tables(left, right, cfg, on, left_on, right_on, how, suffixes, gold)


def merge_knn(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    k: int = 5,
    threshold: float | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The k nearest right rows of every left row (candidate lists), with `rank` 1..k."""
    kwargs.setdefault("how", "inner")
    return merge(left, right, on=on, k=k, threshold=threshold, **kwargs)
