"""Choosing without labels: a match threshold from the candidate scores, and the share of the
encoder in the cascade's score (`char_weight`).

`ScoreMixture` fits two Gaussians (non-matches, matches) to the scores of candidate pairs by
EM. Its posterior gives each pair a match probability, the threshold is the score where
that probability crosses 0.5 (between the two means), and the expected precision of a set
of accepted pairs is the mean of their probabilities. Nothing here looks at gold labels.

`encoder_calibration` maps encoder cosines onto the character-score scale with pairs the
character score is sure about (anchors: confident matches and confident non-matches), and
`choose_char_weight` weighs the two scores by how well each separates those anchors (their
Fisher discriminant).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MIN_SCORES = 20  # fewer candidate scores than this: no mixture (too little to estimate)
MAX_FIT = 50_000  # scores used for the fit (evenly spaced order statistics beyond that)
MIN_SEPARATION = 1.5  # |mean difference| / pooled sd, else "one mode"
EXACT = 1 - 1e-6  # scores at or above: identical keys (left out of the fit, P(match) high)
MIN_SD = 0.02  # floor of each component's sd (scores are often quantised: k of n fields)
SURE = 0.98  # posterior above: a confident match; below 1 - SURE: a confident non-match
WEIGHT_STEP = 0.25  # char_weight is chosen among 0, 0.25, 0.5, 0.75, 1


@dataclass(frozen=True)
class ScoreMixture:
    """Two Gaussians over the scores: index 0 non-matches, 1 matches."""

    weights: tuple[float, float]
    means: tuple[float, float]
    sds: tuple[float, float]
    n: int

    @classmethod
    def fit(
        cls, scores: np.ndarray, likely: np.ndarray | None = None, iterations: int = 300
    ) -> ScoreMixture | None:
        """The mixture of these scores, or None when there are too few or one mode only.

        likely: optional mask of the scores more likely matches (a row's best candidate vs
        its runner-up) that starts EM; else it starts from the 25% and 95% quantiles.
        Deterministic and independent of the scores' order."""
        s = np.asarray(scores, dtype=np.float64)
        keep = np.isfinite(s) & (s < EXACT)  # identical keys: matches, and a spike EM would chase
        s = s[keep]
        like = None if likely is None else np.asarray(likely, bool)[keep]
        if len(s) < MIN_SCORES or np.ptp(s) < 1e-6:
            return None
        order = np.argsort(s, kind="stable")
        if len(s) > MAX_FIT:  # evenly spaced order statistics
            order = order[np.linspace(0, len(s) - 1, MAX_FIT).round().astype(np.int64)]
        x = s[order]
        if like is not None and 0 < like[order].sum() < len(x):
            r = np.stack([~like[order], like[order]], axis=1).astype(np.float64)
        else:
            lo, hi = np.quantile(x, [0.25, 0.95])
            up = np.abs(x - hi) < np.abs(x - lo)
            r = np.stack([~up, up], axis=1).astype(np.float64)
        for _ in range(iterations):
            nk = np.maximum(r.sum(axis=0), 1e-9)
            pi = nk / len(x)
            mu = (r * x[:, None]).sum(axis=0) / nk
            var = (r * (x[:, None] - mu) ** 2).sum(axis=0) / nk
            sd = np.sqrt(np.maximum(var, MIN_SD**2))
            logd = np.log(pi) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2
            logd -= logd.max(axis=1, keepdims=True)
            new = np.exp(logd)
            new /= new.sum(axis=1, keepdims=True)
            done = np.abs(new - r).max() < 1e-7
            r = new
            if done:
                break
        order2 = np.argsort(mu)
        pi, mu, sd = pi[order2], mu[order2], sd[order2]
        separation = (mu[1] - mu[0]) / np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2)
        if min(pi) * len(x) < 2 or separation < MIN_SEPARATION:
            return None
        return cls(
            (float(pi[0]), float(pi[1])), (float(mu[0]), float(mu[1])),
            (float(sd[0]), float(sd[1])), len(s),
        )  # fmt: skip

    def posterior(self, scores: np.ndarray) -> np.ndarray:
        """P(match | score) for each score (never lower for a higher score)."""
        x = np.asarray(scores, dtype=np.float64)
        mu, sd, pi = np.array(self.means), np.array(self.sds), np.array(self.weights)
        # log densities, so far tails do not underflow to 0 / 0
        logd = np.log(pi) - np.log(sd) - 0.5 * ((x[..., None] - mu) / sd) ** 2
        post = 1.0 / (1.0 + np.exp(np.clip(logd[..., 0] - logd[..., 1], -700, 700)))
        # beyond the match mean a score is never less likely a match (and the reverse)
        post = np.where(x >= mu[1], np.maximum(post, 0.5), post)
        return np.where(x <= mu[0], np.minimum(post, 0.5), post)

    def threshold(self) -> float:
        """The lowest score between the two means whose match probability is >= 0.5."""
        grid = np.linspace(self.means[0], self.means[1], 2001)
        ok = np.flatnonzero(self.posterior(grid) >= 0.5)
        return float(grid[ok[0]] if len(ok) else (self.means[0] + self.means[1]) / 2)

    def summary(self) -> dict:
        return {
            "match_share": round(self.weights[1], 4),
            "match_mean": round(self.means[1], 4),
            "nonmatch_mean": round(self.means[0], 4),
            "scores": self.n,
        }


def expected_quality(
    mixture: ScoreMixture, accepted: np.ndarray, best: np.ndarray
) -> tuple[float, float]:
    """(expected precision, expected recall) of accepting the pairs scored `accepted`, when
    `best` are the scores of every row's best candidate (the matches there are to find)."""
    p_acc = mixture.posterior(accepted) if len(accepted) else np.zeros(0)
    p_all = mixture.posterior(best) if len(best) else np.zeros(0)
    precision = float(p_acc.mean()) if len(p_acc) else 1.0
    found = float(p_acc.sum())
    recall = found / max(float(p_all.sum()), found, 1e-12) if found else 0.0
    return precision, recall


def encoder_calibration(
    char_match: np.ndarray, char_non: np.ndarray, enc_match: np.ndarray, enc_non: np.ndarray
) -> tuple[float, float] | None:
    """(a, b) with a + b * encoder cosine on the character-score scale: the anchors' mean
    encoder cosines of matches and non-matches land on their mean character scores. None when
    the encoder does not score the confident matches above the confident non-matches."""
    if not len(char_match) or not len(char_non):
        return None
    em, en = float(np.mean(enc_match)), float(np.mean(enc_non))
    cm, cn = float(np.mean(char_match)), float(np.mean(char_non))
    if em - en < 0.01 or cm <= cn:
        return None
    b = (cm - cn) / (em - en)
    return cn - b * en, b


def choose_char_weight(anchors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """The share w of the character score in w * char + (1 - w) * calibrated encoder score.

    anchors: (char, calibrated encoder, is_match) of confident pairs (the character score's
    own labels, taken nearest the unsure band). The Fisher discriminant of the two scores on
    them, v = S^-1 (mean of matches - mean of non-matches) with S the pooled covariance,
    weighs each score by how well it separates these pairs; w = v_char / (v_char + v_enc),
    rounded to a quarter (a share under 1/8 is not worth the encoder's time). 1.0 (character only) when the encoder gets no positive weight or there
    are fewer than 4 anchors of a kind."""
    c, e, is_match = (np.asarray(x) for x in anchors)
    if is_match.sum() < 4 or (~is_match).sum() < 4:
        return 1.0
    x = np.stack([c, e], axis=1).astype(np.float64)
    xm, xn = x[is_match], x[~is_match]
    cov = np.cov(xm, rowvar=False) * (len(xm) - 1) + np.cov(xn, rowvar=False) * (len(xn) - 1)
    cov = cov / (len(x) - 2) + np.eye(2) * 1e-4
    v = np.linalg.solve(cov, xm.mean(axis=0) - xn.mean(axis=0))
    if v[1] <= 0:
        return 1.0
    if v[0] <= 0:
        return 0.0
    return float(np.round(v[0] / (v[0] + v[1]) / WEIGHT_STEP) * WEIGHT_STEP)
