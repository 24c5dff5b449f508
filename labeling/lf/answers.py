"""Reading a label out of an LLM's free-text answer, negation included.

"not positive", "isn't negative" and "neither positive nor negative" name a label word but do
not vote for it. The rule: go through the answer sentence by sentence; in a sentence, the
label words that are not negated decide: one label -> that vote; several different labels
("positive or negative?", an echoed question) -> the sentence is ambiguous and skipped;
none -> the next sentence. An answer that names no label that way abstains.

A label word is negated when a negation ("not", "no", "never", "neither", "nor", "without",
a word ending in "n't", ...) comes at most NEGATION_WINDOW words before it in the same
clause (clauses end at , ; : ( and at "but", "however", "rather", "instead", "though").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from labeling.constants import ABSTAIN
from labeling.lf.core import check_label
from toolkit.errors import LoomError

NEGATION_WINDOW = 4
NEGATIONS = frozenset(
    "not no never neither nor without hardly barely scarcely non none nothing cannot "
    "isnt arent wasnt werent dont doesnt didnt cant couldnt wont wouldnt shouldnt aint "
    "hasnt havent hadnt".split()
)
_SENTENCE = re.compile(r"[.!?\n]+")
_CLAUSE = re.compile(r"[,;:()]|\b(?:but|however|rather|instead|though|although|whereas)\b", re.I)
_WORD = re.compile(r"[a-z0-9']+")


class AnswerParser:
    """Maps answers to votes for one `label_map` {answer word or phrase: label}."""

    def __init__(self, label_map: Mapping[str, int], name: str = "prompt_lf") -> None:
        if not label_map:
            raise LoomError(
                f"{name}: label_map must map answer words to labels, e.g. {{'yes': 1, 'no': 0}}"
            )
        self.labels = {str(k).lower().strip(): check_label(v, name) for k, v in label_map.items()}
        words = sorted(self.labels, key=len, reverse=True)  # longest first: "not bad" before "bad"
        self._rx = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)

    def __call__(self, answer: str) -> int:
        """The vote an answer gives: a label, or -1 (abstain) when none or ambiguous."""
        text = str(answer).replace("\u2019", "'")
        for sentence in _SENTENCE.split(text):
            found = {
                self.labels[hit.group(1).lower()]
                for hit in self._rx.finditer(sentence)
                if not _negated(sentence[: hit.start()])
            }
            if len(found) == 1:
                return found.pop()
        return ABSTAIN

    def choices(self) -> str:
        """The label words, for a prompt that asks for a constrained answer."""
        return ", ".join(self.labels)


def _negated(before: str) -> bool:
    """Whether the clause ending at a label word negates it."""
    clause = _CLAUSE.split(before)[-1]
    words = _WORD.findall(clause.lower())[-NEGATION_WINDOW:]
    return any(w in NEGATIONS or w.endswith("n't") for w in words)


def parse_label_answer(answer: str, label_map: Mapping[str, int]) -> int:
    """The vote an LLM answer gives under `label_map`, negation aware (-1 = abstain)."""
    return AnswerParser(label_map)(answer)


__all__ = ["NEGATIONS", "AnswerParser", "parse_label_answer"]
