"""loom linking: record linkage, dedup, clustering and classification with sentence encoders.

import linking
out = linking.merge(left, right, on=["name", "city"])      # matches; threshold chosen
out.attrs["linking"]                                         # ... and what was chosen
out = linking.merge(left, right, on="name", how="one_to_many")  # 1:m by threshold
groups = linking.dedup(df, on="name")                        # duplicate groups
path = linking.train(pairs)                                  # fine-tune, then model=path

The defaults (threshold="auto", char_weight="auto") run the cascade of `linking.cascade`:
character n-gram candidates, a mixture-chosen threshold, the encoder only on unsure pairs.
threshold=None keeps every row's nearest neighbours by encoder cosine.
"""

from linking.checks import EmptyKeyWarning
from linking.clustering import aggregate, cluster
from linking.config import LinkConfig
from linking.duplicates import dedup
from linking.evaluate import evaluate, pairs_from_clusters, tune_threshold
from linking.matching import link, merge, merge_knn
from linking.recall import RecallWarning
from linking.train import train

__all__ = [
    "EmptyKeyWarning",
    "LinkConfig",
    "RecallWarning",
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
