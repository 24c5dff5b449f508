"""Labeling functions: row LFs (Snorkel style), vectorized LFs, preprocessors and LF factories.

An LF returns -1 (abstain) or a class 0..k-1. A row LF gets one data point `x` (fields as
attributes and keys); a vectorized LF gets a whole DataFrame batch and returns an int array.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import LoomError

ABSTAIN = -1


class Row(dict):
    """One data point: `x.text` and `x["text"]` both work (like the pandas Series Snorkel passes)."""

    __slots__ = ("name",)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"data point has no field {key!r}; fields: {list(self)}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name":
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def copy(self) -> Row:
        r = Row(self)
        r.name = getattr(self, "name", None)
        return r


class Preprocessor:
    """Maps a data point to a new one (e.g. adds a field) before LFs see it; optional memoization."""

    def __init__(
        self,
        name: str,
        f: Callable[[Any], Any],
        memoize: bool = False,
        memoize_key: Callable[[Any], Any] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.name = name
        self._f = f
        self.memoize = memoize
        self._key = memoize_key
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self._cache_size = cache_size

    def _memo_key(self, x: Any) -> Any:
        if self._key is not None:
            return self._key(x)
        if isinstance(x, Mapping):
            return tuple(
                sorted((k, v) for k, v in x.items() if isinstance(v, (str, int, float, bool)))
            )
        if isinstance(x, pd.Series):
            return tuple(x.to_dict().items())
        return x

    def __call__(self, x: Any) -> Any:
        if not self.memoize:
            return self._run(x)
        try:
            key = self._memo_key(x)
            hash(key)
        except TypeError:
            return self._run(x)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        out = self._run(x)
        self._cache[key] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def _run(self, x: Any) -> Any:
        if isinstance(x, Row):
            x = x.copy()
        out = self._f(x)
        if out is None:
            raise LoomError(
                f"preprocessor {self.name!r} returned None: it must return the data point"
            )
        return out

    def reset_cache(self) -> None:
        self._cache.clear()

    def __repr__(self) -> str:
        return f"Preprocessor {self.name}"


def preprocessor(
    name: str | None = None,
    memoize: bool = False,
    memoize_key: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[[Any], Any]], Preprocessor]:
    """Decorator: `@preprocessor(memoize=True) def add_len(x): x.n = len(x.text); return x`."""
    if callable(name):  # used as @preprocessor without parentheses
        f = name
        return Preprocessor(f.__name__, f)  # type: ignore[return-value]

    def wrap(f: Callable[[Any], Any]) -> Preprocessor:
        return Preprocessor(name or f.__name__, f, memoize, memoize_key)

    return wrap


class LabelingFunction:
    """A named heuristic that votes a class (0..k-1) or abstains (-1).

    Row LFs: `f(x, **resources)` on one data point (after the preprocessors `pre`).
    Vectorized LFs (`vectorized=True`): `f(df, **resources)` on a DataFrame, returns n ints.
    """

    def __init__(
        self,
        name: str,
        f: Callable[..., Any],
        resources: Mapping[str, Any] | None = None,
        pre: Sequence[Callable[[Any], Any]] | None = None,
        vectorized: bool = False,
    ) -> None:
        if not name or not isinstance(name, str):
            raise LoomError(f"a labeling function needs a non-empty string name, got {name!r}")
        self.name = name
        self._f = f
        self._resources = dict(resources or {})
        self._pre = list(pre or [])
        self.vectorized = vectorized
        if vectorized and self._pre:
            raise LoomError(
                f"LF {name!r}: preprocessors work on single data points; a vectorized LF gets the "
                "whole DataFrame, so transform the DataFrame before applying instead"
            )

    def __call__(self, x: Any) -> Any:
        for pre in self._pre:
            x = pre(x)
        return self._f(x, **self._resources)

    def __repr__(self) -> str:
        kind = "vectorized " if self.vectorized else ""
        return f"{kind}LabelingFunction {self.name}, Preprocessors: {self._pre}"


def labeling_function(
    name: str | None = None,
    resources: Mapping[str, Any] | None = None,
    pre: Sequence[Callable[[Any], Any]] | None = None,
    vectorized: bool = False,
) -> Callable[[Callable[..., Any]], LabelingFunction]:
    """Decorator turning a function into a LabelingFunction (same arguments as Snorkel's)."""
    if callable(name):
        raise LoomError("use @labeling_function() with parentheses")

    def wrap(f: Callable[..., Any]) -> LabelingFunction:
        return LabelingFunction(name or f.__name__, f, resources, pre, vectorized)

    return wrap


# ---------------------------------------------------------------------------------------
# factories of vectorized LFs


def _text_column(df: pd.DataFrame, column: str, lf: str) -> pd.Series:
    if column not in df.columns:
        raise LoomError(
            f"LF {lf!r} reads column {column!r}, which the data lacks; columns: {list(df.columns)}"
        )
    s = df[column]
    missing = s.isna()
    if missing.any():
        warnings.warn(
            f"column {column!r} has {int(missing.sum())} missing values: text LFs abstain on them",
            stacklevel=3,
        )
        s = s.fillna("")
    if s.dtype != object and not pd.api.types.is_string_dtype(s):
        s = s.astype(str)
    return s


_ARROW_COLUMNS: dict[tuple, Any] = {}


def begin_batch() -> None:
    """Start sharing column conversions between the LFs applied to one DataFrame."""
    _ARROW_COLUMNS.clear()
    _ARROW_COLUMNS[("active",)] = True


def end_batch() -> None:
    _ARROW_COLUMNS.clear()


def _match_re2(
    df: pd.DataFrame, column: str, lf: str, pattern: str, ignore_case: bool
) -> np.ndarray | None:
    """Regex test with Arrow's RE2 kernel (no per-row Python), or None if RE2 rejects the pattern."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    key = (id(df), column, len(df))
    arr = _ARROW_COLUMNS.get(key)
    if arr is None:
        text = _text_column(df, column, lf)
        arr = pa.array(text.astype(str).tolist(), type=pa.large_string())
        if ("active",) in _ARROW_COLUMNS:
            _ARROW_COLUMNS[key] = arr
    try:
        hit = pc.match_substring_regex(arr, pattern, ignore_case=ignore_case)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return hit.to_numpy(zero_copy_only=False).astype(bool)


def _check_label(label: int, name: str) -> int:
    if not isinstance(label, (int, np.integer)) or label < -1:
        raise LoomError(f"LF {name!r}: label must be an int class 0..k-1 (or -1), got {label!r}")
    return int(label)


def regex_lf(
    name: str,
    pattern: str,
    label: int,
    column: str = "text",
    flags: int = re.IGNORECASE,
) -> LabelingFunction:
    """Votes `label` where `column` matches the regular expression `pattern`, else abstains."""
    label = _check_label(label, name)
    try:
        rx = re.compile(pattern, flags)
    except re.error as e:
        raise LoomError(f"LF {name!r}: bad regular expression {pattern!r}: {e}") from e

    use_re2 = flags in (0, re.IGNORECASE)

    def f(df: pd.DataFrame) -> np.ndarray:
        nonlocal use_re2
        if use_re2:
            hit = _match_re2(df, column, name, pattern, bool(flags & re.IGNORECASE))
            if hit is not None:
                return np.where(hit, label, ABSTAIN)
            use_re2 = False  # a pattern RE2 cannot run (e.g. look-arounds): Python's re from now on
        text = _text_column(df, column, name)
        with warnings.catch_warnings():  # pandas warns about match groups; we only test for a match
            warnings.filterwarnings("ignore", "This pattern is interpreted")
            hit = text.str.contains(rx, regex=True).to_numpy(dtype=bool)
        return np.where(hit, label, ABSTAIN)

    return LabelingFunction(name, f, vectorized=True)


def keyword_lf(
    name: str,
    keywords: str | Iterable[str],
    label: int,
    column: str = "text",
    case_sensitive: bool = False,
    whole_word: bool = True,
) -> LabelingFunction:
    """Votes `label` where `column` contains any of `keywords` (whole words, any case by default)."""
    words = [keywords] if isinstance(keywords, str) else list(keywords)
    if not words or not all(isinstance(w, str) and w for w in words):
        raise LoomError(f"LF {name!r}: keywords must be non-empty strings, got {keywords!r}")
    body = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = rf"\b(?:{body})\b" if whole_word else f"(?:{body})"
    return regex_lf(name, pattern, label, column, 0 if case_sensitive else re.IGNORECASE)


def threshold_lf(
    name: str,
    column: str,
    threshold: float,
    label_above: int,
    label_below: int = ABSTAIN,
    inclusive: bool = True,
) -> LabelingFunction:
    """Votes `label_above` where column >= threshold (> if not inclusive), else `label_below`.

    A callable `column` maps the DataFrame to the numbers (e.g. `lambda df: df.text.str.len()`).
    Missing values abstain.
    """
    label_above = _check_label(label_above, name)
    label_below = _check_label(label_below, name)

    def f(df: pd.DataFrame) -> np.ndarray:
        if callable(column):
            values = pd.Series(np.asarray(column(df)), index=df.index)
        elif column in df.columns:
            values = df[column]
        else:
            raise LoomError(
                f"LF {name!r} reads column {column!r}, which the data lacks; columns: {list(df.columns)}"
            )
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        above = v >= threshold if inclusive else v > threshold
        return np.where(np.isnan(v), ABSTAIN, np.where(above, label_above, label_below))

    return LabelingFunction(name, f, vectorized=True)


_EMB_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


def _embed_column(texts: pd.Series, embedder: Any, batch_size: int | None) -> np.ndarray:
    key = (embedder.name, len(texts), int(pd.util.hash_pandas_object(texts, index=False).sum()))
    if key in _EMB_CACHE:
        return _EMB_CACHE[key]
    vecs = embedder.encode(texts.tolist(), batch_size=batch_size, show_progress=len(texts) > 2000)
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
        labels = [_check_label(k, name) for k in class_descriptions]
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
            texts = _text_column(df, column, name)
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
        X = features(df) if features is not None else _text_column(df, column, name)
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
    progress: bool = True,
    max_tokens: int = 16,
) -> LabelingFunction:
    """Ask an LLM `template.format(**row)` and vote the label of the first `label_map` word in
    the answer (case-insensitive, whole word), else abstain. Several prompts aggregated by a
    label model is the Ask-Me-Anything recipe.

    llm: None for `toolkit.llm.get_llm()` (the embedded default), a `toolkit.llm` client or
    spec string, or any callable prompt -> answer. `toolkit.llm` clients get all rows' prompts
    in one batched, cached `complete()` call of at most `max_tokens` tokens each.
    """
    if not label_map:
        raise LoomError(f"prompt_lf {name!r}: label_map must map answer words to labels")
    labels = {str(k).lower(): _check_label(v, name) for k, v in label_map.items()}
    rx = re.compile(
        r"\b(" + "|".join(re.escape(k) for k in sorted(labels, key=len, reverse=True)) + r")\b",
        re.I,
    )
    fields = set(re.findall(r"{(\w+)", template))
    state: dict[str, Any] = {}

    def f(df: pd.DataFrame) -> np.ndarray:
        from tqdm.auto import tqdm

        missing = fields - set(df.columns)
        if missing:
            raise LoomError(
                f"prompt_lf {name!r}: template uses fields {sorted(missing)} the data lacks"
            )
        out = np.full(len(df), ABSTAIN, dtype=np.int64)
        rows = df[sorted(fields)].to_dict("records") if fields else [{}] * len(df)
        prompts = [template.format(**row) for row in rows]
        client = _llm_client(llm)
        if client is not None:
            answers = [c.text for c in client.complete(prompts, max_tokens=max_tokens)]
        else:
            if "call" not in state:
                state["call"] = _resolve_llm(llm)
            answers = [
                _answer_text(state["call"](p))
                for p in tqdm(prompts, desc=f"prompt {name}", disable=not progress, leave=False)
            ]
        for i, answer in enumerate(answers):
            hit = rx.search(answer)
            if hit:
                out[i] = labels[hit.group(1).lower()]
        return out

    return LabelingFunction(name, f, vectorized=True)
