"""loom linking: record linkage, dedup, clustering and classification with sentence encoders.

import linking
out = linking.merge(left, right, on=["name", "city"])      # best match per left row
groups = linking.dedup(df, on="name", threshold=0.9)         # duplicate groups
path = linking.train(pairs)                                  # fine-tune, then model=path
"""

from linking.checks import EmptyKeyWarning
from linking.clustering import aggregate, cluster
from linking.config import LinkConfig
from linking.duplicates import dedup
from linking.evaluate import evaluate, pairs_from_clusters, tune_threshold
from linking.matching import link, merge, merge_knn
from linking.train import train

__all__ = [
    "EmptyKeyWarning",
    "LinkConfig",
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
