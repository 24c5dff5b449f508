"""Blocking tuned to a target recall: how many character candidates each row needs.

With `recall=0.99` the cascade's candidate generation (each row's top k rows by character
n-gram TF-IDF cosine, within its block; `linking.cascade`) keeps, per block, the smallest k
whose candidates hold that share of the true matches, and reports the k and the recall it
expects (as docetl tunes its embedding blocking to a target recall). The recall here is the
candidates': the share of true pairs among the pairs the threshold then judges.

Which pairs are true matches comes from one of two sources:

- Labelled pairs (`gold=`: row positions, the format of `evaluate` / `tune_threshold`). The
  rank of a labelled pair among its row's character candidates is the smallest k that finds
  it; the recall at k is the share found. k is the smallest whose one-sided 95% Wilson score
  lower bound reaches the target, so a target is only met with enough labels (all found:
  n / (n + 2.71) >= target, i.e. 25 pairs for 0.9, 268 for 0.99). A block gets its own k
  when it holds that many labelled pairs; the other blocks share one k chosen on their
  pooled pairs.
- No labels: the agreement of two candidate generators that see disjoint halves of the key
  fields (fields 1, 3, 5, ... and 2, 4, 6, ...). Each half has its own score mixture
  (`decide.ScoreMixture`) and marks the pairs it matches confidently (P(match) >= 0.98; for
  a link also the row's runner-up below 0.5). The share of the marked pairs that the full
  generator holds at k estimates its recall, capture-recapture style: with Lincoln-Petersen's
  population N = n1 * n2 / m, the recall of the second generator is n2 / N = m / n1. It
  assumes (1) the marked pairs are true matches and (2) being marked is independent of being
  among the candidates, i.e. the marked pairs are as hard for the full generator as any
  true match. (2) holds only in part: the full generator also reads the marking half's
  fields, and records garbled everywhere are hard for both, so the estimate leans
  optimistic; on FEBRL4 it was within 0.02 of the measured recall (tests and
  docs/linking.md). It needs at least two key fields.

When no k up to RECALL_MAX_K reaches the target, the k is the smallest that finds the most
pairs, a `RecallWarning` says what was reached and why, and the report says so.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from linking.cascade import candidate_pairs, link_char_vectors, rank_in_group, self_char_vectors
from linking.checks import caller_stacklevel
from linking.decide import SURE, ScoreMixture
from linking.evaluate import as_pairs
from toolkit.errors import LoomError

logger = logging.getLogger(__name__)

RECALL_MAX_K = 50  # most candidates per row the target may ask for
Z_95 = 1.6449  # one-sided 95% normal quantile of the Wilson lower bound
MIN_MARKED = 20  # fewer confidently marked pairs than this: no unsupervised estimate


class RecallWarning(UserWarning):
    """recall= was not reached (or could not be estimated): the report says what was."""


def wilson_lower(found: np.ndarray | int, n: int, z: float = Z_95) -> np.ndarray:
    """One-sided Wilson score lower bound of the proportion found / n."""
    found = np.asarray(found, dtype=np.float64)
    if n <= 0:
        return np.zeros_like(found)
    p = found / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.maximum(0.0, (centre - half) / (1 + z * z / n))


def pairs_needed(target: float, z: float = Z_95) -> int | None:
    """The fewest pairs whose Wilson lower bound, all of them found, reaches the target (None
    for target 1: no finite sample shows it)."""
    if target >= 1.0:
        return None
    return max(1, math.ceil(target * z * z / (1 - target)))


def labelled_pairs(gold: Any, sizes: tuple[int, int], same: bool) -> tuple[np.ndarray, ...]:
    """(a, b) row positions of the labelled pairs `gold`, checked against the table sizes."""
    what = "gold (labelled pairs for recall=)"
    pairs = sorted(as_pairs(gold, what, symmetric=same), key=repr)
    if not pairs:
        raise LoomError(f"{what} holds no pairs: give matching pairs as row positions")
    names = ("row_a", "row_b") if same else ("left_row", "right_row")
    bad = [
        p
        for p in pairs
        if not all(isinstance(x, int | np.integer) for x in p)
        or not (0 <= p[0] < sizes[0] and 0 <= p[1] < sizes[1])
    ]
    if bad:
        raise LoomError(
            f"{what} names rows that do not exist: {bad[:5]} ({len(bad)} of {len(pairs)} "
            f"pairs); give row positions ({names[0]} 0..{sizes[0] - 1}, {names[1]} "
            f"0..{sizes[1] - 1}), as in merge's left_row/right_row, not index labels"
        )
    a, b = (np.asarray(x, dtype=np.int64) for x in zip(*pairs))
    return a, b


def pair_ranks(
    vecs: tuple[Any, Any],
    valid: tuple[np.ndarray, np.ndarray],
    blocks: tuple[list[tuple] | None, list[tuple] | None],
    a: np.ndarray,
    b: np.ndarray,
    max_k: int,
    same: bool,
) -> np.ndarray:
    """The smallest k whose character candidates hold each pair (a, b); max_k + 1 when none
    up to max_k does (other blocks, an empty key, or ranked lower). For one table the pair
    is a candidate from either side."""
    rows = np.zeros(len(valid[0]), bool)
    rows[a] = True
    if same:
        rows[b] = True
    r, c, s = candidate_pairs(
        vecs[0], vecs[1], valid[0] & rows, valid[1], max_k, blocks[0], blocks[1], same
    )
    rank = rank_in_group(r, s)
    found = dict(zip(zip(r.tolist(), c.tolist()), rank.tolist()))
    miss = max_k + 1
    out = np.array([found.get(p, miss) for p in zip(a.tolist(), b.tolist())], np.int64)
    if same:
        back = np.array([found.get(p, miss) for p in zip(b.tolist(), a.tolist())], np.int64)
        out = np.minimum(out, back)
    return np.minimum(out, miss)


def marked_pairs(
    values: Sequence[Sequence[list[str]]],
    valid: tuple[np.ndarray, np.ndarray],
    blocks: tuple[list[tuple] | None, list[tuple] | None],
    same: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The pairs that either half of the key fields matches confidently (see the module
    docstring), and how many halves had a score mixture."""
    n_fields = len(values[0])
    if n_fields < 2:
        raise LoomError(
            "recall= without labelled pairs estimates recall from two halves of the key "
            "fields, and there is one key field: give gold= (labelled pairs, row positions) "
            "or more key columns"
        )
    marks: set[tuple[int, int]] = set()
    fitted = 0
    for half in (range(0, n_fields, 2), range(1, n_fields, 2)):
        if same:
            x = self_char_vectors([values[0][f] for f in half], valid[0])
            hv = (x, x)
        else:
            hv = link_char_vectors(
                ([values[0][f] for f in half], [values[1][f] for f in half]), valid
            )
        r, c, s = candidate_pairs(hv[0], hv[1], valid[0], valid[1], 2, *blocks, same=same)
        rank = rank_in_group(r, s)
        if same:  # unordered pairs, once each
            r, c = np.minimum(r, c), np.maximum(r, c)
            _, first = np.unique(np.stack([r, c], axis=1), axis=0, return_index=True)
            r, c, s = r[first], c[first], s[first]
            mixture = ScoreMixture.fit(s)
        else:
            mixture = ScoreMixture.fit(s, likely=rank == 1)
        if mixture is None:
            continue
        fitted += 1
        post = mixture.posterior(s)
        ok = post >= SURE
        if not same:
            second = np.zeros(len(valid[0]))
            second[r[rank == 2]] = post[rank == 2]
            ok &= (rank == 1) & (second[r] < 0.5)
        marks.update(zip(r[ok].tolist(), c[ok].tolist()))
    if not marks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), fitted
    a, b = (np.asarray(x, dtype=np.int64) for x in zip(*sorted(marks)))
    return a, b, fitted


def choose_k(ranks: np.ndarray, target: float, max_k: int) -> tuple[int, bool]:
    """(k, reached): the smallest k whose Wilson lower bound of the recall reaches the target;
    when none does, the smallest k that finds the most pairs."""
    found = np.cumsum(np.bincount(np.minimum(ranks, max_k + 1), minlength=max_k + 2))[1:-1]
    ok = np.flatnonzero(wilson_lower(found, len(ranks)) >= target)
    if len(ok):
        return int(ok[0]) + 1, True
    return int(np.argmax(found)) + 1, False


def plan(
    ranks: np.ndarray,
    pair_blocks: list[Any] | None,
    target: float,
    floor: int,
    max_k: int = RECALL_MAX_K,
) -> tuple[int, dict[tuple, int] | None, dict[str, Any]]:
    """(k of the pooled blocks, block -> own k or None, report) from the pairs' ranks.

    pair_blocks: the block of each pair (None without blocking). A block with enough pairs
    to show the target (`pairs_needed`) gets its own k; the others share one. Every k in
    force is at least `floor` (the candidates the cascade needs anyway)."""
    need = pairs_needed(target)
    groups: dict[Any, np.ndarray] = {}
    if pair_blocks is not None and need is not None:
        counts = Counter(pair_blocks)
        keys = np.array([counts[g] >= need for g in pair_blocks], bool)
        for g in sorted({g for g, n in counts.items() if n >= need}, key=repr):
            groups[g] = np.flatnonzero([p == g for p in pair_blocks])
        groups[None] = np.flatnonzero(~keys)
    else:
        groups[None] = np.arange(len(ranks))
    chosen: dict[Any, tuple[int, bool]] = {}
    found = 0
    for g, idx in groups.items():
        if not len(idx):
            continue
        k, reached = choose_k(ranks[idx], target, max_k)
        chosen[g] = (k, reached)
        found += int((ranks[idx] <= max(k, floor)).sum())
    own = {g: max(k, floor) for g, (k, _) in chosen.items() if g is not None}
    # blocks without pairs of their own take the pooled k (the largest own k when all are own)
    pooled = max(chosen[None][0] if None in chosen else max(own.values(), default=floor), floor)
    n = len(ranks)
    report: dict[str, Any] = {
        "recall_target": target,
        "recall_k": pooled,
        "recall_reached": all(r for _, r in chosen.values()),
        "candidate_recall": round(found / n, 4),
        "candidate_recall_lower": round(float(wilson_lower(found, n)), 4),
    }
    if own:
        report["recall_k_blocks"] = {str(g): k for g, k in own.items()}
    return pooled, (own or None), report


def plan_candidates(
    vecs: tuple[Any, Any],
    values: Sequence[Sequence[list[str]]],
    valid: tuple[np.ndarray, np.ndarray],
    blocks: tuple[list[tuple] | None, list[tuple] | None],
    target: float,
    gold: Any,
    floor: int,
    same: bool = False,
) -> tuple[int, dict[tuple, int] | None, dict[str, Any]]:
    """The candidates per row (pooled k, per-block k or None) that reach recall `target`, and
    the report. vecs / valid / blocks: both sides' character vectors, validity masks and
    blocking keys (the same table twice for dedup); values: both sides' key field values;
    gold: labelled pairs (row positions) or None (estimated from two halves of the fields);
    floor: the fewest candidates the caller needs."""
    if gold is not None:
        a, b = labelled_pairs(gold, (len(valid[0]), len(valid[1])), same)
        source = f"labelled pairs: {len(a)}, one-sided 95% Wilson lower bound"
    else:
        a, b, fitted = marked_pairs(values, valid, blocks, same)
        source = (
            f"agreement of two field halves (Lincoln-Petersen): {len(a)} pairs marked by "
            f"{fitted} of 2 halves, one-sided 95% Wilson lower bound"
        )
        if len(a) < MIN_MARKED:
            warnings.warn(
                f"recall={target}: the two halves of the key fields marked {len(a)} confident "
                f"pairs (fewer than {MIN_MARKED}), too few to estimate recall; kept {floor} "
                "candidates per row. Give gold= (labelled pairs) to choose k",
                RecallWarning,
                stacklevel=caller_stacklevel(),
            )
            report = {"recall_target": target, "recall_source": source, "recall_k": floor}
            return floor, None, report | {"recall_reached": False, "candidate_recall": None}
    ranks = pair_ranks(vecs, valid, blocks, a, b, RECALL_MAX_K, same)
    pair_blocks = None if blocks[0] is None else [blocks[0][i] for i in a]
    k, own, report = plan(ranks, pair_blocks, target, floor)
    report = {"recall_target": target, "recall_source": source} | report
    if not report["recall_reached"]:
        lost = int((ranks > RECALL_MAX_K).sum())
        need = pairs_needed(target)
        why = (
            f"{lost} of the {len(a)} pairs are not among any row's {RECALL_MAX_K} best "
            "candidates (other blocks, empty keys or far apart)"
            if lost
            else f"{len(a)} pairs cannot show {target} (it takes {need} found of {need})"
            if need
            else "recall=1 cannot be shown from a sample"
        )
        warnings.warn(
            f"recall={target} not reached: k={k} candidates per row hold "
            f"{report['candidate_recall']} of the pairs (95% lower bound "
            f"{report['candidate_recall_lower']}); {why}",
            RecallWarning,
            stacklevel=caller_stacklevel(),
        )
    logger.info(
        "recall=%s: k=%d%s, candidate recall %s (lower bound %s) from %s",
        target, k, f" (own k in {len(own)} blocks)" if own else "",
        report["candidate_recall"], report["candidate_recall_lower"], source,
    )  # fmt: skip
    return k, own, report
