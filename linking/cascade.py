"""The linking cascade: cheap character candidates first, the encoder only where they are unsure.

1. Candidates: the top-m rows of the other table (or of the same table, for dedup) by the
   cosine of per-field character n-gram TF-IDF vectors (`linking.chargrams`), within blocks.
2. A two-component mixture over the candidate scores (`linking.decide.ScoreMixture`) gives
   every pair a match probability and the threshold.
3. Pairs whose probability is neither near 0 nor near 1 are unsure. When they hold at
   least one expected error (the sum of min(p, 1 - p)) and 0.1% of the expected matches
   (else the encoder could not move F1 by 0.1%), anchors (the confident matches and
   non-matches nearest them) are embedded with the encoder (`toolkit.embed` through
   `linking.search.embedder`): they map encoder cosines onto the character scale and weigh
   the two scores (`decide.choose_char_weight`). When the encoder earns a share, the unsure
   pairs are embedded too (most unsure first, up to `cfg.encoder_budget` texts) and
   rescored `w * char + (1 - w) * encoder`; every other pair keeps its character score.
   Nothing else goes through the encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linking.chargrams import char_vectors, top_k
from linking.config import LinkConfig
from linking.decide import (
    SURE,
    ScoreMixture,
    choose_char_weight,
    encoder_calibration,
)
from linking.groups import components
from linking.search import block_groups, embedder

logger = logging.getLogger(__name__)

N_ANCHORS = 8  # confident matches and as many confident non-matches (at most; 4 at least)
# the encoder runs only when the unsure pairs hold at least this many expected errors, and
# at least this share of the expected matches (below, it could move F1 by less than 0.1%)
MIN_EXPECTED_ERRORS = 1.0
MIN_GAIN = 0.001
FALLBACK_CHAR_WEIGHT = 0.5  # too few scores for a mixture: fixed share, uncalibrated
FALLBACK_DEDUP_THRESHOLD = 0.7  # ... and dedup's threshold on that mixed score


def masked_values(values: list[list[str]], valid: np.ndarray) -> list[list[str]]:
    """Field values with those of invalid rows blanked (zero vectors, never candidates)."""
    return [[v if ok else "" for v, ok in zip(col, valid)] for col in values]


def candidate_pairs(
    a_vecs: Any,
    b_vecs: Any,
    a_valid: np.ndarray,
    b_valid: np.ndarray,
    m: int,
    a_blocks: list[tuple] | None = None,
    b_blocks: list[tuple] | None = None,
    same: bool = False,
    m_blocks: dict[tuple, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a_row, b_row, char score): the m best valid b rows of each valid a row, within its
    block. same=True (one table): a row is not its own candidate. m_blocks: block key ->
    its own m (`linking.recall`); other blocks take m."""
    if a_blocks is None:
        ga = {(): np.flatnonzero(a_valid)}
        gb = {(): np.flatnonzero(b_valid)}
    else:
        ga, gb = block_groups(a_blocks, a_valid), block_groups(b_blocks, b_valid)
    parts = []
    for key, arows in ga.items():
        brows = gb.get(key)
        if brows is None or not len(arows) or not len(brows):
            continue
        mb = m if m_blocks is None else m_blocks.get(key, m)
        r, c, s = top_k(a_vecs[arows], b_vecs[brows], mb + 1 if same else mb)
        r, c = arows[r], brows[c]
        if same:
            keep = r != c
            r, c, s = r[keep], c[keep], s[keep]
        parts.append((r, c, s))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    r, c, s = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((c, -s, r))
    return r[order], c[order], s[order]


def rank_in_group(group: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score within its group (ties: by position)."""
    if not len(group):
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(group)), -scores, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.empty(len(group), np.int64)
    rank[order] = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)])) + 1
    return rank


def group_members(group: np.ndarray) -> dict[int, np.ndarray]:
    """Group id -> positions of its members."""
    order = np.argsort(group, kind="stable")
    ids, starts = np.unique(group[order], return_index=True)
    return dict(zip(ids.tolist(), np.split(order, starts[1:])))


class _Encoded:
    """Encoder cosines of (a text, b text) pairs, embedding each distinct text once."""

    def __init__(self, cfg: LinkConfig) -> None:
        self.cfg = cfg
        self.vecs: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> None:
        new = list(dict.fromkeys(t for t in texts if t and t not in self.vecs))
        if not new:
            return
        emb = embedder(self.cfg.model, self.cfg.device)
        v = emb.encode(
            new, batch_size=self.cfg.batch_size, progress=self.cfg.progress, cache=self.cfg.cache
        )
        self.vecs.update(zip(new, np.asarray(v, np.float32)))

    def cosine(self, ta: Sequence[str], tb: Sequence[str]) -> np.ndarray:
        self.add(list(ta) + list(tb))
        if not len(ta):
            return np.zeros(0, np.float32)
        va = np.stack([self.vecs[t] for t in ta])
        vb = np.stack([self.vecs[t] for t in tb])
        return np.einsum("ij,ij->i", va, vb).astype(np.float32)


def refine(
    a: np.ndarray,
    b: np.ndarray,
    char: np.ndarray,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    group: np.ndarray,
    mixture: ScoreMixture | None,
    cfg: LinkConfig,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Final scores of candidate pairs (a, b, char score) and what the cascade did.

    group: the unit whose best candidate is judged (link: the left row; dedup: the pair).
    eligible: the pairs that may be rescored (link: each row's best two; default all)."""
    scores = char.astype(np.float32).copy()
    info: dict[str, Any] = {"unsure_pairs": 0, "encoded_texts": 0, "char_weight": 1.0}
    if not len(a):
        return scores, info
    enc = _Encoded(cfg)
    if mixture is None:
        texts = {texts_a[i] for i in a} | {texts_b[j] for j in b}
        if len(texts) > cfg.encoder_budget:
            info["reason"] = "no mixture; too many texts for the encoder budget: character only"
            return scores, info
        e = enc.cosine([texts_a[i] for i in a], [texts_b[j] for j in b])
        w = FALLBACK_CHAR_WEIGHT
        info.update(
            char_weight=w,
            encoded_texts=len(enc.vecs),
            reason="no mixture (too few or one-mode scores)",
        )
        return np.clip(w * char + (1 - w) * e, -1.0, 1.0).astype(np.float32), info
    post = mixture.posterior(char)
    unsure = (post > 1 - SURE) & (post < SURE)
    if eligible is not None:
        unsure &= eligible
    info["unsure_pairs"] = int(unsure.sum())
    if not unsure.any():
        info["reason"] = "no unsure pair: character scores decide"
        return scores, info
    expected_errors = float(np.minimum(post, 1 - post)[unsure].sum())
    info["unsure_expected_errors"] = round(expected_errors, 2)
    expected_matches = float(post.sum())
    if expected_errors < max(MIN_EXPECTED_ERRORS, MIN_GAIN * expected_matches):
        info["reason"] = (
            f"the unsure pairs hold {expected_errors:.2f} expected errors among "
            f"{expected_matches:.0f} expected matches: not worth the encoder"
        )
        return scores, info
    # anchors: the confident matches and non-matches nearest the unsure band
    sure_m = np.flatnonzero(post >= SURE)
    sure_n = np.flatnonzero(post <= 1 - SURE)
    n_anchors = int(np.clip(unsure.sum(), 4, N_ANCHORS))
    am = sure_m[np.argsort(char[sure_m], kind="stable")[:n_anchors]]
    an = sure_n[np.argsort(-char[sure_n], kind="stable")[:n_anchors]]
    anchor = np.r_[am, an]
    if len({texts_a[i] for i in a[anchor]} | {texts_b[j] for j in b[anchor]}) > cfg.encoder_budget:
        info["reason"] = f"encoder_budget={cfg.encoder_budget} is below the anchors' texts"
        return scores, info
    e_anchor = enc.cosine([texts_a[i] for i in a[anchor]], [texts_b[j] for j in b[anchor]])
    info["encoded_texts"] = len(enc.vecs)
    cal = encoder_calibration(char[am], char[an], e_anchor[: len(am)], e_anchor[len(am) :])
    if cal is None:
        info["reason"] = "the encoder does not separate the confident pairs: character only"
        return scores, info
    ca, cb = cal
    info["calibration"] = [round(ca, 4), round(cb, 4)]
    is_match = np.r_[np.ones(len(am), bool), np.zeros(len(an), bool)]
    w = choose_char_weight((char[anchor], ca + cb * e_anchor, is_match))
    info["char_weight"] = w
    if w >= 1.0:
        info["reason"] = "the encoder separates the confident pairs no better: character only"
        return scores, info
    # unsure groups, most unsure first
    doubt = np.where(unsure, np.abs(post - 0.5), np.inf)
    gdoubt = pd.Series(doubt).groupby(group).min()
    ordered = gdoubt[np.isfinite(gdoubt.to_numpy())].sort_values(kind="stable").index.to_numpy()
    members = group_members(group)
    rest: list[np.ndarray] = []
    planned = set(enc.vecs)
    for g in ordered:
        idx = members[g]
        idx = idx[unsure[idx]]
        need = {texts_a[i] for i in a[idx]} | {texts_b[j] for j in b[idx]}
        if len(planned | need) > cfg.encoder_budget:
            info["budget_cut_rows"] = int(len(ordered) - len(rest))
            logger.info(
                "cascade: encoder_budget=%d texts reached; %d unsure rows keep their "
                "character score", cfg.encoder_budget, info["budget_cut_rows"],
            )  # fmt: skip
            break
        rest.append(idx)
        planned |= need
    if rest:
        idx = np.concatenate(rest)
        e = enc.cosine([texts_a[i] for i in a[idx]], [texts_b[j] for j in b[idx]])
        scores[idx] = np.clip(w * char[idx] + (1 - w) * (ca + cb * e), 0.0, 1.0)
        info["rescored_pairs"] = len(idx)
    info["encoded_texts"] = len(enc.vecs)
    return scores, info


def cascade_link(
    values: tuple[list[list[str]], list[list[str]]],
    texts: tuple[Sequence[str], Sequence[str]],
    valid: tuple[np.ndarray, np.ndarray],
    cfg: LinkConfig,
    blocks: tuple[list[tuple] | None, list[tuple] | None] = (None, None),
    m: int = 2,
    m_blocks: dict[tuple, int] | None = None,
    vectors: tuple[Any, Any] | None = None,
) -> tuple[pd.DataFrame, ScoreMixture | None, dict]:
    """Candidate pairs (left_row, right_row, score, char_score, rank) of two tables, the score
    mixture (None when too few scores) and the cascade's report.

    m: candidates per left row (m_blocks: per block, from `linking.recall.plan_candidates`);
    vectors: the character vectors when the caller already has them (`link_char_vectors`)."""
    lv, rv = valid
    A, B = link_char_vectors(values, valid) if vectors is None else vectors
    r, c, s = candidate_pairs(A, B, lv, rv, max(m, 2), *blocks, m_blocks=m_blocks)
    rank = rank_in_group(r, s)
    mixture = ScoreMixture.fit(s[rank <= 2], likely=rank[rank <= 2] == 1)
    scores, info = refine(r, c, s, texts[0], texts[1], r, mixture, cfg, rank <= 2)
    pairs = pd.DataFrame(
        {"left_row": r, "right_row": c, "score": scores, "char_score": s}
    ).sort_values(["left_row", "score", "right_row"], ascending=[True, False, True], kind="stable")
    pairs["rank"] = rank_in_group(pairs["left_row"].to_numpy(), pairs["score"].to_numpy())
    if m_blocks is None:
        pairs = pairs[pairs["rank"] <= m].reset_index(drop=True)
    else:  # rows keep their block's m candidates
        keys = blocks[0]
        mrow = np.array(
            [m_blocks.get(keys[i] if keys is not None else (), m) for i in pairs["left_row"]], int
        )
        pairs = pairs[pairs["rank"].to_numpy() <= np.maximum(mrow, 1)].reset_index(drop=True)
    info["candidate_pairs"] = len(r)
    return pairs, mixture, info


def link_char_vectors(values: tuple[list[list[str]], list[list[str]]], valid: tuple) -> list:
    """Character vectors of both tables' key fields (invalid rows blanked)."""
    return char_vectors([masked_values(values[0], valid[0]), masked_values(values[1], valid[1])])


def self_char_vectors(values: list[list[str]], valid: np.ndarray) -> Any:
    """Character vectors of one table's key fields (invalid rows blanked)."""
    (X,) = char_vectors([masked_values(values, valid)])
    return X


def cascade_self(
    values: list[list[str]],
    texts: Sequence[str],
    valid: np.ndarray,
    cfg: LinkConfig,
    blocks: list[tuple] | None = None,
    m: int = 10,
    m_blocks: dict[tuple, int] | None = None,
    vectors: Any = None,
    fit_k: int | None = None,
) -> tuple[pd.DataFrame, ScoreMixture | None, dict]:
    """Unordered candidate pairs (row_a < row_b, score, char_score) within one table, the
    score mixture and the cascade's report (m, m_blocks, vectors: as in `cascade_link`).
    fit_k: the mixture is fitted on the pairs among a row's fit_k best (None = all)."""
    X = self_char_vectors(values, valid) if vectors is None else vectors
    r, c, s = candidate_pairs(X, X, valid, valid, m, blocks, blocks, True, m_blocks)
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    pairs = pd.DataFrame({"row_a": lo, "row_b": hi, "char_score": s, "rank": rank_in_group(r, s)})
    pairs = pairs.sort_values("rank", kind="stable").drop_duplicates(["row_a", "row_b"])
    pairs = pairs.sort_values(["row_a", "row_b"]).reset_index(drop=True)
    a, b = pairs["row_a"].to_numpy(), pairs["row_b"].to_numpy()
    s = pairs["char_score"].to_numpy(np.float32)
    # the mixture's sample: each row's fit_k best (more candidates are mostly non-matches,
    # which would pull the threshold down)
    rank = pairs.pop("rank").to_numpy()
    mixture = ScoreMixture.fit(s if fit_k is None else s[rank <= fit_k])
    eligible = None
    if mixture is not None:  # a pair inside a group the confident pairs already join: moot
        sure = mixture.posterior(s) >= SURE
        joined = pd.DataFrame({"row_a": a[sure], "row_b": b[sure]})
        group = components(len(texts), joined)
        eligible = group[a] != group[b]
    scores, info = refine(a, b, s, texts, texts, np.arange(len(a)), mixture, cfg, eligible)
    info["candidate_pairs"] = len(pairs)
    pairs.insert(2, "score", scores)
    return pairs, mixture, info
