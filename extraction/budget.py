"""The LLM calls and tokens a run will make, per stage, before any is made (`--dry-run`).

The plan builds the same sample and the same prompt templates as the run, so the call counts
are exact and the prompt tokens close (the run shows the chunk most about each attribute;
the plan measures the first chunk, which is as long); completion tokens are the most each
answer may use. Tokens are counted with `count` (default `estimate_tokens`: a third of the
characters plus the chat template's tokens, which matched SmolLM2's real counts within 12% on
FEBRL documents: 164 vs 161 tokens per direct prompt, 423 vs 470 per code prompt).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pandas as pd

from extraction import constrained as cs
from extraction import prompts
from extraction.config import EvaporateConfig
from extraction.documents import chunks, readable
from extraction.functions import attr_words
from extraction.stages import draw_sample

log = logging.getLogger(__name__)
PLAN_COLUMNS = ["stage", "calls", "prompt_tokens", "completion_tokens", "note"]
SCHEMA_TOKENS = 48  # the most tokens of one schema answer (extraction.stages.identify_schema)
CHAT_TOKENS = 30  # what a chat template adds to a prompt (SmolLM2's system and role turns)


def estimate_tokens(text: str) -> int:
    """Prompt tokens of `text` sent as one chat message, when no tokenizer is at hand: about
    3 characters per token (names, numbers and markup split finely) plus the template."""
    return (len(text) + 2) // 3 + CHAT_TOKENS


def plan_run(
    docs: pd.DataFrame,
    cfg: EvaporateConfig,
    server: bool = False,
    count: Callable[[str], int] = estimate_tokens,
) -> pd.DataFrame:
    """One row per LLM stage of a run of `cfg` over `docs` (the documents table), and a
    total row; `server` picks the auto sizes (`EvaporateConfig.resolved`)."""
    cfg = cfg.resolved(server)
    n = len(docs)
    sample = draw_sample(docs, cfg.sample_size, random.Random(cfg.seed), cfg.sampling)
    views = [readable(t, f) for t, f in zip(docs["text"], docs["format"])]
    first = [chunks(v, cfg.max_chars)[0][1] for v in views]
    rows = []
    if cfg.attributes:
        attrs = list(cfg.attributes)
        note = ""
    else:
        attrs = [f"attribute_{i}" for i in range(cfg.max_attributes)]
        note = f"at most: up to max_attributes={cfg.max_attributes} attributes are identified"
        ptok = sum(count(prompts.SCHEMA.format(text=first[i])) for i in sample)
        rows.append(("schema", len(sample), ptok, len(sample) * SCHEMA_TOKENS, ""))
    direct_idx = range(n) if cfg.mode == "direct" else sample
    ptok = sum(
        count(prompts.DIRECT.format(text=first[i], attribute=attr_words(a)))
        for i in direct_idx
        for a in attrs
    )
    calls = len(direct_idx) * len(attrs)
    stage = "direct" if cfg.mode == "direct" else "sample_direct"
    rows.append((stage, calls, ptok, calls * cfg.direct_tokens, note))
    if cfg.mode != "direct":
        raws = [docs["text"].iloc[i] for i in sample]
        examples = "\n\n".join(  # a code prompt shows two sample documents
            f"--- document {j + 1} ---\n{raw[:700]}" for j, raw in enumerate(raws[:2])
        )
        calls = len(attrs) * cfg.num_candidates
        ptok = (
            sum(
                count(prompts.CODE_PLAIN.format(examples=examples, attribute=attr_words(a)))
                for a in attrs
            )
            * cfg.num_candidates
        )
        rows.append(("codegen", calls, ptok, calls * cfg.code_tokens, note))
        if cfg.constrained and not server:
            rows.append(constrained_plan(raws, attrs, count, note))
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    total = ("total", int(plan["calls"].sum()), int(plan["prompt_tokens"].sum()),
             int(plan["completion_tokens"].sum()), "")  # fmt: skip
    plan = pd.concat([plan, pd.DataFrame([total], columns=PLAN_COLUMNS)], ignore_index=True)
    if cfg.max_llm_tokens is not None:
        need = int(plan["prompt_tokens"].iloc[-1] + plan["completion_tokens"].iloc[-1])
        plan.loc[plan.index[-1], "note"] = (
            f"within --max-llm-tokens {cfg.max_llm_tokens}"
            if need <= cfg.max_llm_tokens
            else f"over --max-llm-tokens {cfg.max_llm_tokens}: candidate functions stop when "
            "it is spent"
        )
    return plan


def constrained_plan(raws: list[str], attrs: list[str], count: Callable[[str], int],
                     note: str) -> tuple:  # fmt: skip
    """The plan row of the constrained functions (`extraction.constrained.choose`): per
    attribute and sample document one anchor call and `TOP_ANCHORS` pattern calls; their
    "completion" tokens are the options' tokens the model reads (each once, as a trie)."""
    calls = ptok = otok = 0
    menu = "; ".join(d for d, _ in cs.PATTERNS.values())
    for raw in raws:
        anchors = cs.anchor_options(raw)
        if not anchors:
            continue
        text = raw[: cs.EXCERPT_CHARS]
        per = count(cs.ANCHOR_PROMPT.format(text=text, attribute=""))
        per += cs.TOP_ANCHORS * count(
            cs.PATTERN_PROMPT.format(text=text, attribute="", anchor="", menu=menu)
        )
        # each question is also asked about a generic "value" (calibration), the anchor one
        # once per document; prompts' shared prefixes are not discounted here (an upper bound)
        calls += len(attrs) * (1 + 2 * cs.TOP_ANCHORS) + 1
        ptok += (len(attrs) + 1) * per
        otok += (len(attrs) + 1) * (sum(count(a) for a in anchors) + cs.TOP_ANCHORS * count(menu))
    return ("constrained", calls, ptok, otok, note)


def budget_report(cfg: EvaporateConfig, cands: pd.DataFrame, attrs: list, used: int) -> dict:
    """The report's `budget` entry: tokens used, LLM functions planned and written, and a
    message when --max-llm-tokens stopped the candidate functions."""
    planned = len(attrs) * int(cfg.num_candidates or 0)
    made = int(cands["source"].eq("llm").sum()) if len(cands) else 0
    out: dict = {"max_llm_tokens": cfg.max_llm_tokens, "llm_tokens_used": used,
                 "llm_functions_planned": planned, "llm_functions_written": made}  # fmt: skip
    if made < planned:
        out["message"] = (
            f"LLM token budget spent (max_llm_tokens={cfg.max_llm_tokens}, {used} used): "
            f"{made} of {planned} LLM-written candidate functions were generated; the rest of "
            "the run used the documents' labels and induced functions. Raise --max-llm-tokens "
            "for more"
        )
        log.warning(out["message"])
    return out
