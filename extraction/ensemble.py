"""Weak-supervision ensemble of extraction functions over open-vocabulary values.

Each function is a labeling function whose vote on a document is the value it extracted (or
an abstention). Values are open-vocabulary, so the generic k-class label models in `labeling`
do not apply; this is the one-coin Dawid-Skene model fitted by EM over the candidate values
of each document: function j is right with probability a_j; the posterior of value v is
proportional to prod_{j votes v} a_j/(1-a_j) * (K-1) over the functions that vote.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from extraction.candidates import normalize


def aggregate(
    votes: dict[str, list[str | None]],
    prior_accuracy: dict[str, float] | None = None,
    n_iter: int = 20,
    prior_strength: float = 5.0,
) -> tuple[list[str | None], list[str | None], list[float], dict[str, float], dict[str, float]]:
    """Pick one value per document from the functions' votes.

    Returns (values, function that supplied each value, posterior of each value, estimated
    accuracy per function, coverage per function). The value returned is the raw text of
    the supplying function; agreement is judged on normalized values.
    """
    fids = list(votes)
    if not fids:
        return [], [], [], {}, {}
    n = len(votes[fids[0]])
    prior = {f: float(np.clip((prior_accuracy or {}).get(f, 0.7), 0.05, 0.95)) for f in fids}
    acc = dict(prior)
    norm = {f: [normalize(v) for v in votes[f]] for f in fids}
    coverage = {f: (sum(1 for v in norm[f] if v) / n if n else 0.0) for f in fids}
    post: list[dict[str, float]] = [{} for _ in range(n)]
    for _ in range(n_iter):
        for i in range(n):
            groups: dict[str, list[str]] = defaultdict(list)
            for f in fids:
                if norm[f][i]:
                    groups[norm[f][i]].append(f)
            if not groups:
                post[i] = {}
                continue
            k = max(2, len(groups) + 1)  # the candidates plus "something else"
            scores = {
                v: sum(math.log(acc[f] / (1 - acc[f]) * (k - 1)) for f in fs)
                for v, fs in groups.items()
            }
            scores["__other__"] = 0.0
            m = max(scores.values())
            z = sum(math.exp(s - m) for s in scores.values())
            post[i] = {v: math.exp(s - m) / z for v, s in scores.items() if v != "__other__"}
        new = {}
        for f in fids:
            hits = [post[i].get(norm[f][i], 0.0) for i in range(n) if norm[f][i]]
            new[f] = float(
                np.clip(
                    (sum(hits) + prior_strength * prior[f]) / (len(hits) + prior_strength),
                    0.05,
                    0.95,
                )
            )
        if max(abs(new[f] - acc[f]) for f in fids) < 1e-4:
            acc = new
            break
        acc = new
    values: list[str | None] = []
    sources: list[str | None] = []
    probs: list[float] = []
    for i in range(n):
        if not post[i]:
            values.append(None)
            sources.append(None)
            probs.append(0.0)
            continue
        best = max(post[i], key=lambda v: post[i][v])
        supplier = max((f for f in fids if norm[f][i] == best), key=lambda f: acc[f])
        values.append(votes[supplier][i])
        sources.append(supplier)
        probs.append(post[i][best])
    return values, sources, probs, acc, coverage
