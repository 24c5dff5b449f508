"""toolkit.lsa: corpus-fitted TF-IDF + SVD vectors (word and character n-grams)."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import LoomError
from toolkit.lsa import lsa_vectors


def test_char_space_matches_typos_word_space_matches_topics():
    names = ["jonathan smithers", "jonathon smithers", "maria gonzales", "mario gonzalez",
             "peter brown", "petra browne", "li wei", "lee way"]  # fmt: skip
    Z = lsa_vectors(names, dim=6, analyzer="char_wb")
    assert Z.shape == (8, 6) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    sims = Z @ Z.T
    np.fill_diagonal(sims, -1)
    assert sims[0].argmax() == 1 and sims[2].argmax() == 3 and sims[4].argmax() == 5

    docs = ["the match ended in a late goal", "a late goal won the match",
            "shares fell as the bank cut rates", "the bank cut its rates again"]  # fmt: skip
    W = lsa_vectors(docs, dim=3, analyzer="word")
    s = W @ W.T
    assert s[0, 1] > s[0, 2] and s[2, 3] > s[2, 0]


def test_bad_input():
    with pytest.raises(LoomError, match="list of texts"):
        lsa_vectors("one string")
    with pytest.raises(LoomError, match="at least 3 texts"):
        lsa_vectors(["a", "b"])
    with pytest.raises(LoomError, match="analyzer"):
        lsa_vectors(["a", "b", "c"], analyzer="bytes")
    with pytest.raises(LoomError, match="no usable"):
        lsa_vectors(["", " ", "  "], analyzer="word")
