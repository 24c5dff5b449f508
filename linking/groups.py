"""Groups of rows from pairs: connected components, cluster ids in order of first row."""

from __future__ import annotations

import numpy as np
import pandas as pd


def renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel so cluster ids are 0, 1, ... in order of their first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def components(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Cluster ids 0.. in order of first row, from the connected components of `pairs`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = pairs["row_a"].to_numpy(np.int64), pairs["row_b"].to_numpy(np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return renumber(labels)
