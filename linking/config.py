"""`LinkConfig`: the search options of linking, built once at the public entry point.

`merge`, `link`, `dedup`, `cluster` and `aggregate` keep their keyword signatures; each
builds one frozen `LinkConfig` from them and hands it to the stage functions (embed keys,
search candidates, assemble or group), so options are not threaded one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from toolkit.progress import resolve_progress

DEFAULT_LINK_THRESHOLD = None
DEFAULT_DEDUP_THRESHOLD = 0.9
DEFAULT_DEDUP_K = 10  # neighbours searched per row by dedup and cluster


@dataclass(frozen=True)
class LinkConfig:
    """How keys are embedded and candidates searched (shared by merge, dedup and cluster).

    model: model name, folder, URL or an Embedder already held (None = the default encoder).
    k: matches per row (dedup/cluster: neighbours searched per row).
    threshold: minimum cosine score of a pair (None = keep the k nearest whatever the score).
    char_weight: share in [0, 1) of character n-gram (spelling) similarity in the score.
    blocking_on: column(s) rows must agree on exactly to be compared (None = no blocking).
    one_to_one: greedy 1:1 assignment, each left and right row used at most once (k=1).
    index: "flat" (exact), "ivf" or "hnsw" (approximate, for very large right tables);
    index_params: extra arguments of that index.
    device: "cpu", "cuda" or None (GPU when present). batch_size: encoder batch size.
    progress: progress bars; None = on in notebooks and terminals (resolved when built).
    cache: Workspace or folder where embedded texts are kept.
    client: dask.distributed client: each block is searched as a task on the cluster.
    """

    model: Any = None
    k: int = 1
    threshold: float | None = DEFAULT_LINK_THRESHOLD
    char_weight: float = 0.0
    blocking_on: Any = None
    one_to_one: bool = False
    index: str = "flat"
    index_params: dict | None = None
    device: str | None = None
    batch_size: int | None = None
    progress: bool | None = None
    cache: Any = None
    client: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "progress", resolve_progress(self.progress))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LinkConfig:
        """A config from the entries of `options` that name a field (e.g. the `locals()` of a
        public function with these keywords); other entries are ignored, missing fields keep
        their defaults."""
        return cls(**{f.name: options[f.name] for f in fields(cls) if f.name in options})


def renamed_keyword(
    new_value: Any, old_name: str, old_value: Any, new_name: str, where: str
) -> Any:
    """A boolean switch renamed in this release: the old spelling (None = not given) still
    works, with a DeprecationWarning; the switch is on when either spelling turns it on."""
    if old_value is None:
        return new_value
    warnings.warn(
        f"{where}({old_name}=...) is deprecated and will be removed in the next release; "
        f"use {new_name}=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return new_value or old_value
