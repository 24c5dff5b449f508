"""What an LLM call returns (`Completion`) and token totals of usage tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Completion:
    """One generated text with its token counts; `cached` is True when read from the cache.

    finish_reason: "stop" (the model ended or a stop string cut the text), "length"
    (max_tokens was reached), or None where the backend did not say (e.g. from the cache).
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    finish_reason: str | None = None


def token_total(usage_table: Any) -> int:
    """Prompt plus completion tokens of a usage table (a DataFrame with `prompt_tokens` and
    `completion_tokens` columns, e.g. one row per stage); 0 for an empty table."""
    if not len(usage_table):
        return 0
    return int(usage_table["prompt_tokens"].sum() + usage_table["completion_tokens"].sum())
