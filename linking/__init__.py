"""loom linking: record linkage, dedup, clustering and classification with sentence encoders.

import linking
out = linking.merge(left, right, on=["name", "city"])      # best match per left row
groups = linking.dedup(df, on="name", threshold=0.9)         # duplicate groups
path = linking.train(pairs)                                  # fine-tune, then model=path
"""

from linking.core import (
    EmptyKeyWarning,
    aggregate,
    cluster,
    dedup,
    link,
    merge,
    merge_knn,
)
from linking.evaluate import evaluate, pairs_from_clusters, tune_threshold
from linking.train import train

__all__ = [
    "EmptyKeyWarning",
    "aggregate",
    "cluster",
    "dedup",
    "evaluate",
    "link",
    "merge",
    "merge_knn",
    "pairs_from_clusters",
    "train",
    "tune_threshold",
]
