"""Character n-gram TF-IDF vectors of key fields and sparse top-k search.

The cheap first stage of the linking cascade (`linking.cascade`). Every key field gets its
own TF-IDF space of character 3-grams inside word boundaries, fitted on that field's values
in all the tables of the call (document frequencies count every row). A row is the
concatenation of its fields' unit vectors, normalised again, so the cosine of two rows is
the mean over fields of their per-field cosines: each field counts the same, and within a
field rare n-grams (a surname, a date, an id) count more than common ones (a state code).

Top-k neighbours come from `sparse_dot_topn` (a multithreaded C++ product that keeps only
the k best entries of each row) when it is installed, else from blocked scipy products
(same result, slower): `backend="auto" | "sparse_dot_topn" | "scipy"`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from toolkit.errors import LoomError
from toolkit.forks import forked_child

logger = logging.getLogger(__name__)

NGRAMS = (3, 3)  # character n-gram lengths (inside word boundaries)
BACKENDS = ("auto", "sparse_dot_topn", "scipy")
SCIPY_BLOCK = 1024  # left rows per scipy product


def field_matrix(values: Sequence[Sequence[str]]) -> list[sp.csr_matrix]:
    """TF-IDF rows of one field for several tables (`values[t]`: that table's cells, '' =
    missing), fitted on all of them: sublinear tf, smooth idf, unit rows (zero when empty)."""
    from sklearn.feature_extraction.text import CountVectorizer

    flat = [v for vals in values for v in vals]
    distinct, inverse = np.unique(np.asarray(flat, dtype=object), return_inverse=True)
    sizes = [len(v) for v in values]
    empty_vocab = [sp.csr_matrix((n, 0), dtype=np.float32) for n in sizes]
    if not any(distinct):
        return empty_vocab
    counter = CountVectorizer(analyzer="char_wb", ngram_range=NGRAMS, dtype=np.float32)
    try:
        counts = counter.fit_transform(distinct.tolist()).tocsr()
    except ValueError:  # no n-gram at all (only blank values)
        return empty_vocab
    multiplicity = np.bincount(inverse, minlength=len(distinct)).astype(np.float64)
    present = counts.copy()
    present.data[:] = 1.0
    df = np.asarray(present.T @ multiplicity).ravel()  # rows holding each n-gram
    idf = np.log((1.0 + len(flat)) / (1.0 + df)) + 1.0
    counts.data = 1.0 + np.log(counts.data)
    tfidf = (counts @ sp.diags(idf.astype(np.float32))).tocsr()
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    tfidf = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ tfidf
    rows = tfidf.tocsr()[inverse]
    out, start = [], 0
    for n in sizes:
        out.append(rows[start : start + n].astype(np.float32))
        start += n
    return out


def char_vectors(tables: Sequence[Sequence[Sequence[str]]]) -> list[sp.csr_matrix]:
    """Unit-row sparse char n-gram vectors of several tables over the same key fields.

    tables[t][f]: table t's cells of key field f ('' = missing), fields in the same order
    for every table. Rows without any n-gram (all fields empty) are zero rows."""
    n_fields = {len(t) for t in tables}
    if len(n_fields) != 1:
        raise LoomError(f"char_vectors: tables have different numbers of key fields {n_fields}")
    blocks: list[list[sp.csr_matrix]] = [[] for _ in tables]
    for f in range(n_fields.pop()):
        for t, m in enumerate(field_matrix([table[f] for table in tables])):
            blocks[t].append(m)
    out = []
    for parts, table in zip(blocks, tables):
        n = len(table[0]) if table else 0
        x = sp.hstack(parts, format="csr") if parts else sp.csr_matrix((n, 0))
        x = x.astype(np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        out.append((sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ x).tocsr())
    return out


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise LoomError(f"backend={backend!r}: use one of {BACKENDS}")
    if backend == "auto":
        try:
            import sparse_dot_topn  # noqa: F401
        except ImportError:
            return "scipy"
        return "sparse_dot_topn"
    return backend


def openmp_threads() -> int:
    """Threads for sparse_dot_topn's OpenMP product: up to 16, but one in a forked child
    (libgomp's thread pool does not survive fork: a parallel region there never returns)."""
    return 1 if forked_child() else max(1, min(os.cpu_count() or 1, 16))


def top_k(
    a: sp.csr_matrix, b: sp.csr_matrix, k: int, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k rows of `b` with the highest positive cosine to each row of `a`: (a_row,
    b_row, score) arrays ordered by a_row, then score descending, then b_row."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if a.shape[0] == 0 or b.shape[0] == 0 or a.shape[1] == 0 or k < 1:
        return empty
    k = min(k, b.shape[0])
    kind = _backend(backend)
    if kind == "sparse_dot_topn":
        from sparse_dot_topn import sp_matmul_topn

        threads = openmp_threads()
        c = sp_matmul_topn(
            a.astype(np.float32), b.T.tocsr().astype(np.float32), top_n=k, threshold=0.0,
            sort=True, n_threads=threads if threads > 1 else None,
        ).tocsr()  # fmt: skip
        rows = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr))
        cols, scores = c.indices.astype(np.int64), c.data.astype(np.float32)
    else:
        bt = b.T.tocsr()
        parts = []
        for start in range(0, a.shape[0], SCIPY_BLOCK):
            p = (a[start : start + SCIPY_BLOCK] @ bt).tocsr()
            p.eliminate_zeros()
            r = np.repeat(np.arange(p.shape[0]), np.diff(p.indptr)) + start
            parts.append((r, p.indices.astype(np.int64), p.data.astype(np.float32)))
        rows, cols, scores = (np.concatenate(x) for x in zip(*parts))
        keep = scores > 0
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
    order = np.lexsort((cols, -scores, rows))
    rows, cols, scores = rows[order], cols[order], scores[order]
    if len(rows):
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        keep = rank < k
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
    return rows.astype(np.int64), cols, np.minimum(scores, 1.0).astype(np.float32)


def pair_cosines(a: sp.csr_matrix, b: sp.csr_matrix, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Cosine of the given (row of a, row of b) pairs."""
    if len(ia) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(a[ia].multiply(b[ib]).sum(axis=1)).ravel().astype(np.float32)
