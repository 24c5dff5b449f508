"""A run's per-answer log: every LLM answer a run used, recorded the moment it arrives.

One row per (run, cache key): the stage, the invocation (0 for the first process that worked
on the run, 1 for the first resume, ...) that first used it, whether it came from the cache,
and its token counts. Token totals of a run that was interrupted and resumed are read from
here, so they count each answer once, however many invocations it took; the answers
themselves live in the completion cache (`toolkit.llm.cache`).
"""

from __future__ import annotations

import os
import threading

import pandas as pd

from toolkit.kvcache import KVTable
from toolkit.llm.completion import Completion

USAGE_COLUMNS = [
    "stage",
    "calls",
    "cached_calls",
    "prompt_tokens",
    "completion_tokens",
    "invocation_calls",
    "invocation_tokens",
]


class AnswerLog:
    """The answers of run `run` in the SQLite file `path` (None: in memory, for a run without
    a workspace); `record` is an `LLM.observe` hook."""

    def __init__(self, path: str | os.PathLike | None, run: str) -> None:
        self.run = run
        self._rows: dict[str, tuple] = {}
        self._table = (
            None
            if path is None
            else KVTable(
                path,
                "answers",
                "run TEXT, key TEXT, stage TEXT, invocation INTEGER, cached INTEGER, "
                "prompt_tokens INTEGER, completion_tokens INTEGER, PRIMARY KEY (run, key)",
                values=("stage", "invocation", "cached", "prompt_tokens", "completion_tokens"),
                scope=("run", run),
            )
        )
        before = self.frame()
        self.invocation = int(before["invocation"].max()) + 1 if len(before) else 0
        self._seen: set[str] = set(before["key"])
        self._lock = threading.Lock()

    def record(self, stage: str, key: str, c: Completion) -> None:
        """Log the answer under `key` unless the run used it before (first use wins)."""
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        row = (stage, self.invocation, int(c.cached), c.prompt_tokens, c.completion_tokens)
        if self._table is None:
            self._rows[key] = row
        else:
            self._table.put([(key, row)])

    def frame(self) -> pd.DataFrame:
        """Every logged answer: key, stage, invocation, cached, prompt/completion tokens."""
        cols = ["key", "stage", "invocation", "cached", "prompt_tokens", "completion_tokens"]

        if self._table is None:
            return pd.DataFrame([(k, *r) for k, r in self._rows.items()], columns=cols)
        with self._table.connect() as db:
            rows = db.execute(
                f"SELECT {', '.join(cols)} FROM answers WHERE run = ? ORDER BY rowid", [self.run]
            ).fetchall()
        return pd.DataFrame(rows, columns=cols)

    def total_tokens(self) -> int:
        """Prompt plus completion tokens of every answer the run used, all invocations."""
        f = self.frame()
        return int(f["prompt_tokens"].sum() + f["completion_tokens"].sum()) if len(f) else 0

    def usage(self) -> pd.DataFrame:
        """Per stage: the run's totals over all invocations (each answer once; `cached_calls`
        were answers found in the cache), and `invocation_*`: the answers this invocation
        generated (not read from the cache)."""
        f = self.frame()
        rows = []
        for stage, g in f.groupby("stage", sort=False):
            new = g[(g["invocation"] == self.invocation) & (g["cached"] == 0)]
            rows.append({
                "stage": stage,
                "calls": len(g),
                "cached_calls": int(g["cached"].sum()),
                "prompt_tokens": int(g["prompt_tokens"].sum()),
                "completion_tokens": int(g["completion_tokens"].sum()),
                "invocation_calls": len(new),
                "invocation_tokens": int(new["prompt_tokens"].sum() + new["completion_tokens"].sum()),
            })  # fmt: skip
        return pd.DataFrame(rows, columns=USAGE_COLUMNS)
