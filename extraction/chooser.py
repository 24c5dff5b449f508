"""The sample's value of a web-page attribute from the page's own signals, with the small LLM
as the chooser where they tie.

A page's signals for a role (`extraction.webpage.page_signals`) are of two kinds: *explicit*
ones that say what they are (`og:title`, JSON-LD `headline`, `article:published_time`,
microdata `datePublished`) and *generic* ones that only usually are (`<h1>`, `<title>`, a date
the text labels as the page's ("Last updated on ..."), the first `<time datetime>`, the first
date in the text). Explicit signals vote when a page has
any, generic ones only when it has none; a generic date the page itself declares as its
modification date is no publication date. The value most signals give wins; where two or
more tie, the LLM's own free-form answer decides if it is one of them, else the LLM is asked
a multiple-choice question ("which of these is the title? answer with the letter") twice, with
the options in order and reversed; only a choice it makes both times counts (SmolLM2-135M
answers "A" to almost any such question: 10 of 18 right on title ties, docs/extraction.md).
Otherwise the value of the highest-priority signal stays (the order of `webpage.SIGNALS`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from extraction.candidates import normalize
from extraction.page_code import iso_date
from extraction.webpage import DATE_ROLES, GENERIC, SIGNALS, page_signals, role_of, site_affixes

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGH"
CHOICE = (
    "Which of these is the {attribute} of the web page?\n{options}\nAnswer with the letter only."
)


def _groups(signals: dict[str, str], role: str) -> dict[str, list[str]]:
    """normalized value -> the signals (priority order) that give it, for one role."""
    mine = [(sid, signals[sid]) for sid, r, k, _ in SIGNALS
            if r == role and sid in signals and k != "vote"]  # fmt: skip
    explicit = [(s, v) for s, v in mine if s not in GENERIC]
    voters = explicit or mine
    out: dict[str, list[str]] = {}
    for sid, v in voters:
        if normalize(v):
            out.setdefault(normalize(v), []).append(sid)
    return out


def parse_choice(answer: str, options: list[str]) -> int | None:
    """The option an answer names: a leading letter (`B`, `(B)`, `B.`), else the one option
    whose text the answer's words start (the model often repeats the option); None if none."""
    a = answer.strip()
    m = re.match(r"^\(?([A-H])\b[\).:]?", a)
    letter = LETTERS.index(m.group(1)) if m and LETTERS.index(m.group(1)) < len(options) else None
    rest = normalize(a[m.end() :] if m else a)
    if rest:
        hits = [i for i, o in enumerate(options) if normalize(o).startswith(rest)]
        if len(hits) == 1:
            return hits[0]
        if letter is not None and letter in hits:
            return letter
        if hits:
            return None
    return letter


def consistent_choice(forward: str, backward: str, options: list[str]) -> int | None:
    """The option both answers name, `forward` to the options in order and `backward` to
    them reversed; None when they differ (a small model that answers "A" whatever the
    options are has no say) or either names none."""
    k, r = parse_choice(forward, options), parse_choice(backward, options[::-1])
    if k is None or r is None or k != len(options) - 1 - r:
        return None
    return k


def choose_values(
    raws: list[str], attribute: str, answers: list[str], llm: Any = None, max_tokens: int = 8
) -> tuple[list[str], dict[str, int]]:
    """Per document, the value its page signals give for `attribute` ('' where none; dates as
    ISO `YYYY-MM-DD`), and counts: from_structure, structure_agreed (one value or a
    majority), llm_chose (ties the LLM was asked about), llm_matched (ties its free-form
    answer settled), llm_contradicted (free-form answers that differ from the value)."""
    role = role_of(attribute)
    stats = dict.fromkeys(
        ("from_structure", "structure_agreed", "llm_chose", "llm_matched", "llm_contradicted"), 0
    )
    values = [""] * len(raws)
    if role is None:
        return values, stats
    ties: list[tuple[int, list[str]]] = []
    affixes = site_affixes(raws) if role == "title" else ()
    for i, raw in enumerate(raws):
        signals = page_signals(raw, affixes)
        groups = _groups(signals, role)
        if not groups:
            continue
        top = max(len(s) for s in groups.values())
        best = [signals[s[0]] for s in groups.values() if len(s) == top]
        said = answers[i] if i < len(answers) else ""
        if role in DATE_ROLES:
            said = iso_date(said) or said
        if len(best) == 1:
            values[i] = best[0]
            stats["structure_agreed"] += 1
        elif normalize(said) in {normalize(b) for b in best}:
            values[i] = next(b for b in best if normalize(b) == normalize(said))
            stats["llm_matched"] += 1
        else:
            values[i] = best[0]  # until the LLM chooses (or when it names no option)
            ties.append((i, best[: len(LETTERS)]))
    if ties and llm is not None:
        words = attribute.replace("_", " ")
        asked = [(opts, order) for _, opts in ties for order in (opts, opts[::-1])]
        prompts = [
            CHOICE.format(
                attribute=words,
                options="\n".join(f"{LETTERS[k]}. {o}" for k, o in enumerate(order)),
            )
            for _, order in asked
        ]
        comps = llm.complete(prompts, max_tokens=max_tokens)
        for t, (i, opts) in enumerate(ties):
            k = consistent_choice(comps[2 * t].text, comps[2 * t + 1].text, opts)
            stats["llm_chose"] += 1
            if k is not None:
                values[i] = opts[k]
            log.debug("%s of document %d: LLM chose %s among %s", attribute, i, k, opts)
    for i, v in enumerate(values):
        if v:
            stats["from_structure"] += 1
            said = answers[i] if i < len(answers) else ""
            if said and normalize(said) != normalize(v):
                stats["llm_contradicted"] += 1
    return values, stats
