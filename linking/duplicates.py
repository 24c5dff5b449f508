"""One table: duplicate rows as the connected components of close nearest-neighbour pairs.

Stages: key texts and masks of the table (`table_keys`), embed (`search.embed_keys`), pairs
within the table (`search.self_pairs`), groups (`components`), output (`with_clusters`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linking.cascade import FALLBACK_DEDUP_THRESHOLD, cascade_self, self_char_vectors
from linking.checks import (
    check_char_weight,
    check_k,
    check_new_columns,
    check_recall_use,
    check_threshold,
    warn_empty_keys,
)
from linking.config import AUTO, DEFAULT_DEDUP_K, DEFAULT_DEDUP_THRESHOLD, LinkConfig
from linking.decide import ScoreMixture
from linking.groups import components
from linking.keys import as_columns, block_keys, check_frame, check_has, field_values, key_texts
from linking.recall import labelled_pairs, plan_candidates
from linking.search import embed_keys, masked_texts, self_pairs
from linking.select import choose_threshold, quality_report
from toolkit.errors import LoomError
from toolkit.progress import deprecated_progress

logger = logging.getLogger(__name__)

RECALL_DEDUP_FLOOR = 2  # with recall=, at least the best two neighbours (the mixture's sample)


def table_keys(
    df: pd.DataFrame, on: Any, blocking_on: Any
) -> tuple[list[str], np.ndarray, list[tuple] | None, dict]:
    """Key texts, validity mask, blocking keys and report counts of one table (empty keys
    and missing blocking values make a row invalid: kept, never matched, warned about)."""
    check_frame(df, "df")
    cols = as_columns(on, "on")
    if cols is None:
        raise LoomError("say which columns to compare: on='name' or on=['name', 'city']")
    check_has(df, cols, "df")
    texts, empty = key_texts(df, cols)
    valid = ~empty
    report = {"rows": len(df), "empty_keys": int(empty.sum())}
    blocks = None
    bcols = as_columns(blocking_on, "blocking_on")
    if bcols is not None:
        check_has(df, bcols, "df")
        blocks, miss = block_keys(df, bcols)
        valid &= ~miss
        report["missing_block"] = int((miss & ~empty).sum())
    warn_empty_keys("df", report["empty_keys"], len(df))
    return texts, valid, blocks, report


def table_vectors(
    df: pd.DataFrame, on: Any, cfg: LinkConfig
) -> tuple[np.ndarray, np.ndarray, list[tuple] | None, dict]:
    """`table_keys` then `embed_keys`: vectors, validity mask, blocks and report of a table."""
    texts, valid, blocks, report = table_keys(df, on, cfg.blocking_on)
    (vecs,) = embed_keys([masked_texts(texts, valid)], cfg)
    return vecs, valid, blocks, report


def with_clusters(df: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """A copy of `df` with `cluster_id` and `duplicate` (every row after its group's first)."""
    check_new_columns(df, ("cluster_id", "duplicate"), "before clustering")
    out = df.copy()
    out["cluster_id"] = labels
    out["duplicate"] = pd.Series(labels, index=out.index).duplicated().to_numpy()
    return out


def dedup(
    df: pd.DataFrame,
    on: str | Sequence[str],
    threshold: float | str = AUTO,
    model: Any = None,
    k: int = DEFAULT_DEDUP_K,
    blocking_on: str | Sequence[str] | None = None,
    device: str | None = None,
    index: str = "flat",
    return_pairs: bool = False,
    progress: bool | None = None,
    cache: Any = None,
    char_weight: float | str = AUTO,
    *,
    recall: float | None = None,
    gold: Any = None,
    show_progress: bool | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Find duplicate rows: a copy of `df` (same rows, order and index) with `cluster_id`
    (rows linked by a chain of pairs with score >= threshold share it) and `duplicate`
    (True for every row after the first of its group: `df[~out.duplicate]` drops them).

    return_pairs=True also returns the pairs (row_a, row_b, score) behind the groups.
    threshold="auto", char_weight="auto" (defaults): the cascade of `merge` over the k
    nearest rows of each row by character n-grams; the mixture of their scores sets the
    threshold, the encoder rescores unsure pairs only; `out.attrs["linking"]` reports the
    choices and the expected precision. A number as threshold: encoder cosine (char_weight
    "auto" = 0, or a number to mix in spelling as in `merge`), cut there.
    progress: progress bars (None = on in notebooks and terminals; show_progress= is the
    deprecated spelling).
    recall: a target share of true duplicate pairs in (0, 1] that the cascade's candidates
    must hold: the neighbours per row (which then replace k) are chosen per block from
    `gold` (labelled duplicate pairs, row_a/row_b positions) or estimated without labels,
    as in `merge` (`linking.recall`); the report adds `recall_k` and `candidate_recall`.
    """
    progress = deprecated_progress(progress, "show_progress", show_progress, "dedup")
    cfg = LinkConfig.from_options(locals())
    return dedup_table(df, on, cfg, return_pairs, gold=gold)


def dedup_table(
    df: pd.DataFrame, on: Any, cfg: LinkConfig, return_pairs: bool = False, gold: Any = None
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """`dedup` with its search options as a `LinkConfig` (e.g. built once by the CLI);
    gold: labelled duplicate pairs for cfg.recall."""
    check_threshold(cfg.threshold)
    if cfg.threshold is None:
        raise LoomError(
            "dedup needs a threshold: threshold='auto' (chosen from the data) or a number, "
            "e.g. 0.9 (tune it with tune_threshold)"
        )
    check_k(cfg.k)
    check_char_weight(cfg.char_weight)
    check_recall_use(cfg, gold)
    if gold is not None:  # checked before any work
        labelled_pairs(gold, (len(df), len(df)), True)
    if cfg.uses_cascade():
        texts, valid, blocks, report = table_keys(df, on, cfg.blocking_on)
        values = field_values(df, as_columns(on, "on"))
        m, m_blocks, x, recall_info = cfg.k, None, None, {}
        if cfg.recall is not None:
            x = self_char_vectors(values, valid)
            m, m_blocks, recall_info = plan_candidates(
                (x, x), (values, values), (valid, valid), (blocks, blocks), cfg.recall, gold,
                RECALL_DEDUP_FLOOR, same=True,
            )  # fmt: skip
        fit_k = None if cfg.recall is None else cfg.k  # the threshold as without recall=
        cands, mixture, info = cascade_self(
            values, texts, valid, cfg, blocks, m, m_blocks, x, fit_k
        )
        info.update(recall_info)
        mode, fallback = "cascade", FALLBACK_DEDUP_THRESHOLD
    else:
        ecfg = cfg.encoder_only()
        vecs, valid, blocks, report = table_vectors(df, on, ecfg)
        cands = self_pairs(vecs, valid, ecfg, blocks)
        mixture = ScoreMixture.fit(cands["score"].to_numpy()) if cfg.threshold == AUTO else None
        mode, fallback, info = "encoder", DEFAULT_DEDUP_THRESHOLD, {"char_weight": ecfg.char_weight}
    threshold, source = choose_threshold(cfg.threshold, mixture, fallback)
    pairs = cands[cands["score"] >= threshold][["row_a", "row_b", "score"]]
    pairs = pairs.reset_index(drop=True)
    out = with_clusters(df, components(len(df), pairs))
    report.update(info)
    report.update(quality_report(mixture, pairs["score"].to_numpy(), cands["score"].to_numpy()))
    report.update(mode=mode, threshold=threshold, threshold_source=source, pairs=len(pairs))
    logger.info(
        "dedup: %s, threshold %s (%s), char_weight %s, %d pairs%s",
        mode, threshold, source, report["char_weight"], len(pairs),
        f", expected precision {report['expected_precision']}"
        if "expected_precision" in report else "",
    )  # fmt: skip
    out.attrs["linking"] = report
    return (out, pairs) if return_pairs else out
