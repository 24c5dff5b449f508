"""Corpus-fitted dense text vectors: TF-IDF n-grams projected by truncated SVD (LSA).

A cheap second embedding space next to the sentence encoders: word n-grams capture topical
vocabulary (Embroid's extra space), character n-grams capture spelling, which is what
matches records with typos in names, dates, codes and ids (linking's `char_weight`).
The vectors depend on the texts they are fitted on: fit once on everything to compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from toolkit.errors import LoomError

ANALYZERS = ("word", "char_wb")


def lsa_vectors(
    texts: Sequence[str],
    dim: int = 256,
    analyzer: str = "word",
    ngram_range: tuple[int, int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Unit rows float32 (n, dim'), dim' = min(dim, vocabulary - 1, n - 1).

    analyzer "word" (default n-grams 1-2) or "char_wb" (character n-grams inside word
    boundaries, default 2-4). Texts without any known n-gram get a small constant vector.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if isinstance(texts, str):
        raise LoomError("lsa_vectors takes a list of texts, not one string")
    if analyzer not in ANALYZERS:
        raise LoomError(f"analyzer={analyzer!r}: use one of {ANALYZERS}")
    texts = [str(t) for t in texts]
    if len(texts) < 3:
        raise LoomError(f"lsa_vectors needs at least 3 texts, got {len(texts)}")
    vec = TfidfVectorizer(
        analyzer=analyzer,
        ngram_range=ngram_range or ((1, 2) if analyzer == "word" else (2, 4)),
        sublinear_tf=True,
        min_df=2 if len(texts) >= 50 and analyzer == "word" else 1,
        max_features=100_000 if analyzer == "word" else 200_000,
    )
    try:
        T = vec.fit_transform(texts)
    except ValueError as e:
        raise LoomError(f"lsa_vectors: no usable {analyzer} n-grams in the texts ({e})") from e
    d = max(1, min(dim, T.shape[1] - 1, len(texts) - 1))
    Z = TruncatedSVD(n_components=d, random_state=seed).fit_transform(T).astype(np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z = np.where(norms < 1e-12, 1.0 / np.sqrt(d), Z / np.maximum(norms, 1e-12))
    return Z.astype(np.float32)
