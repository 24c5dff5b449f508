"""Compatibility re-exports: linking.core was split into stage modules.

`linking.search` (embedding keys, candidate search), `linking.matching` (link, merge,
merge_knn, assemble), `linking.duplicates` (dedup), `linking.groups` (components), `linking.clustering` (cluster,
aggregate), `linking.checks` (input checks), `linking.config` (LinkConfig). Import from
those; `from linking.core import X` keeps working for the public names below.
`embed_keys`, `search_pairs` and `self_pairs` here also accept their old keyword
signatures (instead of a `LinkConfig`) for one release, with a DeprecationWarning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from linking import search
from linking.checks import CLUSTER_METHODS, HOWS, EmptyKeyWarning
from linking.clustering import aggregate, cluster, cluster_block, cluster_table
from linking.config import DEFAULT_DEDUP_THRESHOLD, DEFAULT_LINK_THRESHOLD, LinkConfig
from linking.duplicates import dedup, dedup_table, with_clusters
from linking.groups import components, renumber
from linking.matching import assemble, link, link_pairs, merge, merge_knn, merge_tables
from linking.search import CHAR_DIM, block_groups, one_to_one

__all__ = [
    "CHAR_DIM",
    "CLUSTER_METHODS",
    "DEFAULT_DEDUP_THRESHOLD",
    "DEFAULT_LINK_THRESHOLD",
    "HOWS",
    "EmptyKeyWarning",
    "LinkConfig",
    "aggregate",
    "assemble",
    "block_groups",
    "cluster",
    "cluster_block",
    "cluster_table",
    "components",
    "dedup",
    "dedup_table",
    "embed_keys",
    "link",
    "link_pairs",
    "merge",
    "merge_knn",
    "merge_tables",
    "one_to_one",
    "renumber",
    "search_pairs",
    "self_pairs",
    "with_clusters",
]


def _old_config(where: str, names: tuple[str, ...], args: tuple, kwargs: dict) -> LinkConfig:
    """A LinkConfig from a call in the old keyword signature (warns)."""
    warnings.warn(
        f"linking.core.{where} with separate options is deprecated and will be removed in the "
        f"next release; pass a LinkConfig (linking.search.{where})",
        DeprecationWarning,
        stacklevel=3,
    )
    given = dict(zip(names, args), **kwargs)
    given["progress"] = bool(given.pop("show_progress", False))
    return LinkConfig(**given)


def _new_style(args: tuple, kwargs: dict) -> LinkConfig | None:
    if args and isinstance(args[0], LinkConfig):
        return args[0]
    return kwargs.get("cfg")


def embed_keys(texts: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
    """`linking.search.embed_keys(texts, cfg)`; also the old (texts, model, device, ...)."""
    cfg = _new_style(args, kwargs)
    if cfg is None:
        names = ("model", "device", "batch_size", "show_progress", "cache", "char_weight")
        cfg = _old_config("embed_keys", names, args, kwargs)
    return search.embed_keys(texts, cfg)


def search_pairs(
    left_vecs: np.ndarray,
    right_vecs: np.ndarray,
    left_valid: np.ndarray,
    right_valid: np.ndarray,
    *args: Any,
    **kwargs: Any,
) -> pd.DataFrame:
    """`linking.search.search_pairs(..., cfg, left_blocks, right_blocks, k)`; also the old
    (..., k, threshold, left_blocks, right_blocks, device, index, ...) signature."""
    vecs = (left_vecs, right_vecs, left_valid, right_valid)
    if _new_style(args, kwargs) is not None:
        return search.search_pairs(*vecs, *args, **kwargs)
    names = ("k", "threshold", "left_blocks", "right_blocks", "device", "index")
    names += ("index_params", "show_progress", "client")
    given = dict(zip(names, args), **kwargs)
    blocks = given.pop("left_blocks", None), given.pop("right_blocks", None)
    cfg = _old_config("search_pairs", (), (), given)
    return search.search_pairs(*vecs, cfg, *blocks)


def self_pairs(vecs: np.ndarray, valid: np.ndarray, *args: Any, **kwargs: Any) -> pd.DataFrame:
    """`linking.search.self_pairs(vecs, valid, cfg, blocks)`; also the old
    (vecs, valid, threshold, k, blocks, device, index, show_progress, cache) signature."""
    if _new_style(args, kwargs) is not None:
        return search.self_pairs(vecs, valid, *args, **kwargs)
    names = ("threshold", "k", "blocks", "device", "index", "show_progress", "cache")
    given = dict(zip(names, args), **kwargs)
    given.setdefault("k", 10)
    blocks = given.pop("blocks", None)
    cfg = _old_config("self_pairs", (), (), given)
    return search.self_pairs(vecs, valid, cfg, blocks)
