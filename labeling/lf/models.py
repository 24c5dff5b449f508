"""Factories of model LFs: a classifier, zero-shot class descriptions, or a prompted LLM."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.lf.answers import AnswerParser
from labeling.lf.core import LabelingFunction, check_label
from labeling.lf.vectorized import text_column
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress

_EMB_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


def embedding_cache_key(texts: pd.Series, embedder: Any) -> tuple[str, int, str]:
    """(model fingerprint, n, digest of the texts in row order): the key of cached vectors.

    The fingerprint is the embedder's content hash of its weights (`Embedder.fingerprint`)
    where it has one, else its name; the digest hashes every row's hash in order, so a
    shuffled or sorted copy of the same texts gets its own entry.
    """
    model = getattr(embedder, "fingerprint", None) or embedder.name
    rows = pd.util.hash_pandas_object(texts, index=False).to_numpy()
    digest = hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=20).hexdigest()
    return (str(model), len(texts), digest)


def _embed_column(texts: pd.Series, embedder: Any, batch_size: int | None) -> np.ndarray:
    key = embedding_cache_key(texts, embedder)
    if key in _EMB_CACHE:
        return _EMB_CACHE[key]
    vecs = embedder.encode(texts.tolist(), batch_size=batch_size, progress=len(texts) > 2000)
    _EMB_CACHE[key] = vecs
    while len(_EMB_CACHE) > 4:
        _EMB_CACHE.popitem(last=False)
    return vecs


def model_lf(
    name: str,
    model: Any = None,
    column: str = "text",
    class_descriptions: Mapping[int, str | Sequence[str]] | None = None,
    threshold: float = 0.0,
    margin: float = 0.0,
    features: Callable[[pd.DataFrame], Any] | None = None,
    embedder: Any = None,
    batch_size: int | None = None,
) -> LabelingFunction:
    """An LF from a classifier, or zero-shot from class descriptions through toolkit.embed.

    - `model`: any sklearn-style classifier with predict_proba (and classes_ = the int labels),
      fed `features(df)` or the `column` values; votes the top class when its probability is
      >= threshold and beats the runner-up by >= margin, else abstains.
    - `class_descriptions={label: "text" or [texts]}`: cosine similarity of each row's
      embedding to each class's mean description embedding, same threshold/margin rule.
      `embedder` is a name for `toolkit.embed.get_embedder` or an Embedder (default MiniLM).
    """
    if (model is None) == (class_descriptions is None):
        raise LoomError(f"model_lf {name!r}: give exactly one of model= or class_descriptions=")
    if class_descriptions is not None:
        labels = [check_label(k, name) for k in class_descriptions]
        if len(labels) < 2:
            raise LoomError(f"model_lf {name!r}: class_descriptions needs at least two classes")
        state: dict[str, Any] = {}

        def get_embedder_once() -> Any:
            if "emb" not in state:
                from toolkit.embed import Embedder, get_embedder

                emb = embedder if isinstance(embedder, Embedder) else get_embedder(embedder)
                protos = []
                for lab in labels:
                    d = class_descriptions[lab]
                    texts = [d] if isinstance(d, str) else list(d)
                    v = emb.encode(texts).mean(0)
                    protos.append(v / max(np.linalg.norm(v), 1e-12))
                state["emb"], state["protos"] = emb, np.stack(protos)
            return state["emb"], state["protos"]

        def f(df: pd.DataFrame) -> np.ndarray:
            texts = text_column(df, column, name)
            emb, protos = get_embedder_once()
            blank = (texts.str.strip() == "").to_numpy()
            sims = _embed_column(texts, emb, batch_size) @ protos.T
            out = _vote_from_scores(sims, np.array(labels), threshold, margin)
            out[blank] = ABSTAIN
            return out

        return LabelingFunction(name, f, vectorized=True)

    if not hasattr(model, "predict_proba"):
        raise LoomError(
            f"model_lf {name!r}: the model needs a predict_proba method (sklearn style)"
        )
    classes = getattr(model, "classes_", None)

    def f(df: pd.DataFrame) -> np.ndarray:
        X = features(df) if features is not None else text_column(df, column, name)
        probs = np.asarray(model.predict_proba(X))
        labs = np.asarray(classes if classes is not None else np.arange(probs.shape[1]))
        if labs.dtype.kind not in "iu":
            raise LoomError(
                f"model_lf {name!r}: model classes_ must be int labels 0..k-1, got {labs[:5]}"
            )
        return _vote_from_scores(probs, labs, threshold, margin)

    return LabelingFunction(name, f, vectorized=True)


def _vote_from_scores(
    scores: np.ndarray, labels: np.ndarray, threshold: float, margin: float
) -> np.ndarray:
    order = np.argsort(-scores, axis=1)
    top = np.take_along_axis(scores, order[:, :1], 1)[:, 0]
    second = np.take_along_axis(scores, order[:, 1:2], 1)[:, 0] if scores.shape[1] > 1 else -np.inf
    ok = (top >= threshold) & (top - second >= margin)
    return np.where(ok, labels[order[:, 0]], ABSTAIN).astype(np.int64)


def _resolve_llm(llm: Any) -> Callable[[str], str]:
    if llm is None:
        try:
            from toolkit.llm import get_llm  # type: ignore[import-not-found]
        except ImportError as e:
            raise LoomError(
                "prompt_lf needs an LLM: pass llm= (a callable prompt -> answer, or a client with "
                "complete()/generate()), or install a loom build with toolkit.llm"
            ) from e
        llm = get_llm()
    if callable(llm) and not hasattr(llm, "complete"):
        return llm
    for meth in ("complete", "generate", "chat"):
        if hasattr(llm, meth):
            fn = getattr(llm, meth)
            return lambda prompt, fn=fn: _answer_text(fn(prompt))
    raise LoomError(
        f"prompt_lf: cannot call LLM {llm!r}: give a callable or a client with complete()"
    )


def _llm_client(llm: Any) -> Any:
    """A toolkit.llm client for None / a spec string / a client; None for plain callables."""
    try:
        from toolkit.llm import LLM, get_llm
    except ImportError:
        return None
    if llm is None or isinstance(llm, str):
        return get_llm(llm)
    return llm if isinstance(llm, LLM) else None


def _answer_text(out: Any) -> str:
    if isinstance(out, str):
        return out
    for attr in ("text", "content", "completion"):
        if hasattr(out, attr):
            return str(getattr(out, attr))
    if isinstance(out, Mapping):
        for key in ("text", "content", "completion"):
            if key in out:
                return str(out[key])
    return str(out)


def prompt_lf(
    name: str,
    template: str,
    label_map: Mapping[str, int],
    llm: Any = None,
    progress: bool | None = None,
    max_tokens: int = 16,
    constrain: bool = False,
) -> LabelingFunction:
    """Ask an LLM `template.format(**row)` and vote the label its answer gives, else abstain.

    The answer is read by `labeling.lf.answers.AnswerParser`: label words (case-insensitive,
    whole words) that are negated ("not positive", "isn't negative") do not vote; a sentence
    naming two labels ("positive or negative?") is ambiguous; the first sentence naming one
    label decides. `constrain=True` appends "Answer with one of: <label words>." to every
    prompt, so the model answers with a label word only. Several prompts aggregated by a
    label model is the Ask-Me-Anything recipe.

    llm: None for `toolkit.llm.get_llm()` (the embedded default), a `toolkit.llm` client or
    spec string, or any callable prompt -> answer. `toolkit.llm` clients get all rows' prompts
    in one batched, cached `complete()` call of at most `max_tokens` tokens each.
    """
    parse = AnswerParser(label_map, f"prompt_lf {name!r}")
    suffix = f"\nAnswer with one of: {parse.choices()}." if constrain else ""
    fields = set(re.findall(r"{(\w+)", template))
    state: dict[str, Any] = {}

    def f(df: pd.DataFrame) -> np.ndarray:
        from tqdm.auto import tqdm

        missing = fields - set(df.columns)
        if missing:
            raise LoomError(
                f"prompt_lf {name!r}: template uses fields {sorted(missing)} the data lacks"
            )
        rows = df[sorted(fields)].to_dict("records") if fields else [{}] * len(df)
        prompts = [template.format(**row) + suffix for row in rows]
        client = _llm_client(llm)
        if client is not None:
            answers = [c.text for c in client.complete(prompts, max_tokens=max_tokens)]
        else:
            if "call" not in state:
                state["call"] = _resolve_llm(llm)
            show = resolve_progress(progress)
            answers = [
                _answer_text(state["call"](p))
                for p in tqdm(prompts, desc=f"prompt {name}", disable=not show, leave=False)
            ]
        return np.array([parse(a) for a in answers], dtype=np.int64)

    return LabelingFunction(name, f, vectorized=True)
