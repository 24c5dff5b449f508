"""Labeling functions: row LFs (Snorkel style), vectorized LFs, preprocessors and LF factories.

An LF returns -1 (abstain) or a class 0..k-1. A row LF gets one data point `x` (fields as
attributes and keys); a vectorized LF gets a whole DataFrame batch and returns an int array.
"""

from __future__ import annotations

from labeling.constants import ABSTAIN
from labeling.lf.answers import AnswerParser, parse_label_answer
from labeling.lf.checks import LFError
from labeling.lf.core import (
    LabelingFunction,
    Preprocessor,
    Row,
    check_label,
    labeling_function,
    memo_key,
    preprocessor,
)
from labeling.lf.models import embedding_cache_key, model_lf, prompt_lf
from labeling.lf.vectorized import begin_batch, end_batch, keyword_lf, regex_lf, threshold_lf

__all__ = [
    "ABSTAIN",
    "AnswerParser",
    "LFError",
    "LabelingFunction",
    "Preprocessor",
    "Row",
    "begin_batch",
    "check_label",
    "embedding_cache_key",
    "end_batch",
    "keyword_lf",
    "labeling_function",
    "memo_key",
    "model_lf",
    "parse_label_answer",
    "preprocessor",
    "prompt_lf",
    "regex_lf",
    "threshold_lf",
]
