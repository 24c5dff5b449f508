"""One entry point for embedding-based smoothing of a label matrix (`loom label --smooth`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.arguments import check_kwargs, keyword_names
from labeling.embroid import Embroid, tfidf_svd_embeddings
from labeling.liger import Liger
from labeling.smoother import save_smoothing
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress


def smooth(
    method: str,
    L: Any,
    cardinality: int,
    embeddings: Any = None,
    texts: Sequence[str] | None = None,
    lf_names: Sequence[str] | None = None,
    Y_dev: Any = None,
    ws: Any = None,
    run: str | None = None,
    embedder: str | None = None,
    progress: bool | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Smooth a label matrix with "liger" or "embroid": (probs (n, k), preds (n,), fitted model).

    Probabilities come first, as from `Embroid.fit_predict` (`predict(return_probs=True)`
    returns (predictions, probabilities), as Snorkel does).

    Embeddings come from `embeddings` or are computed from `texts` with the shared embedder
    (`embedder` name, default MiniLM); Embroid also gets a TF-IDF/SVD space when texts are
    given (50 or more). `kwargs` are the Liger / Embroid constructor's arguments (an unknown
    one is an error naming the close matches). With `ws` and `run`, the `coverage` and
    `partition_accuracy` tables are written to that run (for `loom label --smooth`).
    """
    method = str(method).lower()
    if method not in ("liger", "embroid"):
        raise LoomError(f"--smooth {method!r}: use 'liger' or 'embroid'")
    cls = Liger if method == "liger" else Embroid
    check_kwargs(f"smooth({method!r})", kwargs, keyword_names(cls.__init__, skip=("cardinality",)))
    if isinstance(L, pd.DataFrame) and lf_names is None:
        lf_names = [str(c) for c in L.columns]
    if embeddings is None:
        if texts is None:
            raise LoomError(f"{method} needs embeddings or texts to embed")
        from toolkit.embed import get_embedder

        embeddings = get_embedder(embedder, device=kwargs.get("device")).encode(
            list(texts), progress=resolve_progress(progress), cache=ws
        )
    if method == "liger":
        model: Any = Liger(cardinality=cardinality, **kwargs).fit(
            L, embeddings, Y_dev=Y_dev, lf_names=lf_names, progress=progress
        )
        preds, probs = model.predict(L, embeddings, return_probs=True)
    else:
        spaces, names = [embeddings], [embedder or "minilm"]
        if texts is not None and len(texts) >= 50:
            spaces.append(tfidf_svd_embeddings(list(texts), 256))
            names.append("tfidf-svd")
        model = Embroid(cardinality=cardinality, **kwargs)
        probs, preds = model.fit_predict(
            L, spaces, Y_dev=Y_dev, lf_names=lf_names, space_names=names, progress=progress
        )
    if ws is not None and run is not None:
        save_smoothing(ws, run, model)
    return probs, preds, model


__all__ = ["smooth"]
