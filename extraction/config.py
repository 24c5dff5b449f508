"""`EvaporateConfig`: every option of an extraction run, built once and passed down.

The CLI builds one from its flags, `Evaporate.run` builds one from its keywords, and the
workspace records `dataclasses.asdict(cfg)` as the run's parameters (which is also what a
resumed run must match).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from toolkit.errors import LoomError

MODES = ("direct", "code", "code+")
SAMPLINGS = ("stratified", "random")
#: (sample_size, num_candidates) when they are left at None ("auto"): a local model on a CPU
#: (about 1 s per answer, 3 s per function on 2 cores) or a model behind a server URL
AUTO_SIZES = {"local": (4, 2), "server": (10, 10)}


@dataclass(frozen=True)
class EvaporateConfig:
    """Options of one EVAPORATE run (see docs/extraction.md for what each does)."""

    #: attribute names to extract; None lets the LLM identify them from the sample
    attributes: tuple[str, ...] | None = None
    #: "direct" (LLM reads every document), "code" (best function), "code+" (ensemble)
    mode: str = "code+"
    #: documents the LLM reads (code modes): direct answers on them score every candidate;
    #: None = auto (AUTO_SIZES: fewer with a local model, more with a server URL)
    sample_size: int | None = None
    #: LLM-written candidate functions per attribute; None = auto (see sample_size)
    num_candidates: int | None = None
    #: most attributes kept when they are identified by the LLM
    max_attributes: int = 8
    #: LLM-free functions induced from the sample answers, per attribute
    max_induced: int = 12
    #: most functions kept per attribute (code+)
    max_functions: int = 24
    #: a candidate below this precision against the sample answers is dropped
    min_precision: float = 0.5
    #: characters of a document the LLM reads at once
    max_chars: int = 1500
    #: most tokens per direct answer
    direct_tokens: int = 24
    #: most tokens per LLM-written function
    code_tokens: int = 192
    seed: int = 0
    #: "stratified" (round-robin over sub-folder x format groups) or "random"
    sampling: str = "stratified"
    #: most LLM tokens (prompt + completion, every answer the run uses): when spent, no
    #: further candidate functions are generated and the report says so; None = no limit
    max_llm_tokens: int | None = None
    #: constrained functions (`extraction.constrained`): a local LLM chooses an anchor and a
    #: value pattern per sample document, scored exactly, rendered into code by the toolkit.
    #: Off by default (docs/extraction.md, "Constrained functions": measured cost and gain);
    #: a server URL cannot be scored, so there it is skipped even when asked for
    constrained: bool = False
    #: most constrained functions per attribute
    constrained_candidates: int = 4

    def resolved(self, server: bool) -> EvaporateConfig:
        """This config with the auto sizes (None) filled in for a local model or a server."""
        sample, cands = AUTO_SIZES["server" if server else "local"]
        return dataclasses.replace(
            self,
            sample_size=sample if self.sample_size is None else self.sample_size,
            num_candidates=cands if self.num_candidates is None else self.num_candidates,
        )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LoomError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.sampling not in SAMPLINGS:
            raise LoomError(f"unknown sampling {self.sampling!r}: use 'stratified' or 'random'")
        if self.sample_size is not None and self.sample_size < 1:
            raise LoomError(
                f"sample_size={self.sample_size}: give at least 1 (documents the LLM reads; "
                "on the command line --sample-size)"
            )
        if self.num_candidates is not None and self.num_candidates < 0:
            raise LoomError(
                f"num_candidates={self.num_candidates}: give 0 or more (LLM-written functions "
                "per attribute; 0 = only LLM-free induced ones; on the command line "
                "--num-candidates)"
            )
        for name in (
            "max_attributes",
            "max_functions",
            "max_chars",
            "direct_tokens",
            "code_tokens",
        ):
            if getattr(self, name) < 1:
                raise LoomError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_llm_tokens is not None and self.max_llm_tokens < 1:
            raise LoomError(
                f"max_llm_tokens={self.max_llm_tokens}: give a positive number of tokens, or "
                "None for no limit (on the command line --max-llm-tokens)"
            )
        if self.constrained_candidates < 0:
            raise LoomError(
                f"constrained_candidates={self.constrained_candidates}: give 0 or more "
                "(constrained functions per attribute; on the command line "
                "--constrained-candidates)"
            )
        if self.max_induced < 0 or not 0.0 <= self.min_precision <= 1.0:
            raise LoomError("max_induced must be >= 0 and min_precision in [0, 1]")
