"""`LinkConfig`: the search options of linking, built once at the public entry point.

`merge`, `link`, `dedup`, `cluster` and `aggregate` keep their keyword signatures; each
builds one frozen `LinkConfig` from them and hands it to the stage functions (embed keys,
search candidates, assemble or group), so options are not threaded one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from toolkit.errors import LoomError
from toolkit.progress import resolve_progress

AUTO = "auto"  # merge / link / dedup choose the threshold and char_weight from the data
DEFAULT_LINK_THRESHOLD = None  # LinkConfig's own default: nearest neighbours, no cut
DEFAULT_DEDUP_THRESHOLD = 0.9  # cosine of cluster() and of an encoder-only dedup
DEFAULT_DEDUP_K = 10  # neighbours searched per row by dedup and cluster
CARDINALITIES = ("one_to_one", "one_to_many", "many_to_one")
DEFAULT_ENCODER_BUDGET = 2000  # texts the cascade may embed per call


def check_recall(recall: Any, name: str = "recall") -> None:
    """recall= (or the CLI's --recall): None, or the share of true matches the candidates
    must hold, in (0, 1]. The one check of this option (LinkConfig and the CLI call it)."""
    if recall is None:
        return
    if (
        not isinstance(recall, int | float)
        or isinstance(recall, bool)
        or not 0.0 < float(recall) <= 1.0
    ):
        given = f"{name} {recall}" if name.startswith("--") else f"{name}={recall!r}"
        raise LoomError(
            f"{given}: give the share of true matches the candidates must hold, a "
            "number in (0, 1] such as 0.99 (or None to keep the default candidates)"
        )


@dataclass(frozen=True)
class LinkConfig:
    """How keys are embedded and candidates searched (shared by merge, dedup and cluster).

    model: model name, folder, URL or an Embedder already held (None = the default encoder).
    k: matches per row (dedup/cluster: neighbours searched per row).
    threshold: minimum score of a pair (None = keep the k nearest whatever the score;
    "auto" = chosen from the candidate scores by a two-component mixture, see
    `linking.decide`).
    char_weight: share in [0, 1) of character n-gram (spelling) similarity in the score;
    "auto" with threshold="auto" runs the cascade (`linking.cascade`: character candidates,
    the encoder only on unsure pairs, the share chosen from the data); "auto" with any other
    threshold means 0 (the encoder cosine, as before).
    blocking_on: column(s) rows must agree on exactly to be compared (None = no blocking).
    one_to_one: greedy 1:1 assignment, each left and right row used at most once (k=1).
    cardinality: None (the k best right rows of each left row), "many_to_one" (each left
    row its best right row), "one_to_many" (each right row its best left row) or
    "one_to_one" (greedy, both sides once); all by threshold (merge's how=).
    encoder_budget: most texts the cascade embeds in one call (the unsure pairs, most unsure
    first, beyond it keep their character score).
    index: "flat" (exact), "ivf" or "hnsw" (approximate, for very large right tables);
    index_params: extra arguments of that index.
    device: "cpu", "cuda" or None (GPU when present). batch_size: encoder batch size.
    progress: progress bars; None = on in notebooks and terminals (resolved when built).
    cache: Workspace or folder where embedded texts are kept.
    client: dask.distributed client: each block is searched as a task on the cluster.
    recall: None (the default candidates), or a target share of true matches in (0, 1] that
    the cascade's character candidates must hold: the number of candidates per row (k) is
    then chosen per block from labelled pairs or estimated without them
    (`linking.recall`).
    """

    model: Any = None
    k: int = 1
    threshold: float | str | None = DEFAULT_LINK_THRESHOLD
    char_weight: float | str = 0.0
    blocking_on: Any = None
    one_to_one: bool = False
    cardinality: str | None = None
    encoder_budget: int = DEFAULT_ENCODER_BUDGET
    index: str = "flat"
    index_params: dict | None = None
    device: str | None = None
    batch_size: int | None = None
    progress: bool | None = None
    cache: Any = None
    client: Any = None
    recall: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "progress", resolve_progress(self.progress))
        check_recall(self.recall)

    def link_cardinality(self) -> str | None:
        """The cardinality in force: `cardinality`, else "one_to_one" when one_to_one=True."""
        return self.cardinality or ("one_to_one" if self.one_to_one else None)

    def uses_cascade(self, vectors_given: bool = False) -> bool:
        """Whether the cascade runs: threshold and char_weight both "auto", and nothing asks
        for the embed-everything path (vectors given, an approximate index, a dask client)."""
        return (
            self.threshold == AUTO
            and self.char_weight == AUTO
            and not vectors_given
            and self.index == "flat"
            and not self.index_params
            and self.client is None
        )

    def encoder_only(self) -> LinkConfig:
        """This config for the embed-everything path: char_weight "auto" -> 0 (encoder
        cosine), threshold "auto" -> None (all k candidates; the caller then cuts)."""
        return replace(
            self,
            char_weight=0.0 if self.char_weight == AUTO else self.char_weight,
            threshold=None if self.threshold == AUTO else self.threshold,
        )

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
