"""Plain warnings about a run whose results will be poor, for the report, the log and the CLI.

The functions of a code run are scored against the sample's values; when most of those are
missing (the LLM found nothing, or answered with text that is not in the document, which
`prompts.ground` drops) every score is measured against nothing, and the table that comes out
looks confident but is not. `sample_warnings` says so, with the numbers and the fix.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: below this share of sample prompts with a value found in the document, warn
MIN_FOUND = 0.5


def sample_warnings(
    sample_vals: dict[str, list[str]], llm_answers: dict[str, list[str]], llm_name: str = ""
) -> list[str]:
    """Warnings about the sample's values (one per problem; [] when there is none).

    sample_vals: per attribute, the sample's values (labels, page signals or the LLM's
    grounded answers); llm_answers: per attribute, the LLM's grounded answers alone."""
    total = sum(len(v) for v in sample_vals.values())
    if total == 0:
        return []
    found = sum(1 for vs in sample_vals.values() for v in vs if v)
    by_llm = sum(1 for vs in llm_answers.values() for v in vs if v)
    who = f"the LLM ({llm_name})" if llm_name else "the LLM"
    out: list[str] = []
    if found < MIN_FOUND * total:
        out.append(
            f"values found in {found} of {total} sample prompts ({by_llm} of them answered by "
            f"{who} in the document's own words); results will be poor: use --llm URL (a "
            "stronger model: vLLM, llama.cpp server, OpenAI; Evaporate(llm=...) in Python) "
            "or a larger --sample-size"
        )
    empty = [a for a, vs in sample_vals.items() if vs and not any(vs)]
    if empty and len(empty) < len(sample_vals):
        out.append(
            "no sample value found for " + ", ".join(empty) + ": their functions are scored "
            "against nothing and their column will be empty or unreliable"
        )
    for w in out:
        log.warning(w)
    return out
