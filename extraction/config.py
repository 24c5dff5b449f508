"""`EvaporateConfig`: every option of an extraction run, built once and passed down.

The CLI builds one from its flags, `Evaporate.run` builds one from its keywords, and the
workspace records `dataclasses.asdict(cfg)` as the run's parameters (which is also what a
resumed run must match).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import LoomError

MODES = ("direct", "code", "code+")
SAMPLINGS = ("stratified", "random")


@dataclass(frozen=True)
class EvaporateConfig:
    """Options of one EVAPORATE run (see docs/extraction.md for what each does)."""

    #: attribute names to extract; None lets the LLM identify them from the sample
    attributes: tuple[str, ...] | None = None
    #: "direct" (LLM reads every document), "code" (best function), "code+" (ensemble)
    mode: str = "code+"
    #: documents the LLM reads (code modes): direct answers on them score every candidate
    sample_size: int = 10
    #: LLM-written candidate functions per attribute
    num_candidates: int = 10
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LoomError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.sampling not in SAMPLINGS:
            raise LoomError(f"unknown sampling {self.sampling!r}: use 'stratified' or 'random'")
        if self.sample_size < 1:
            raise LoomError(
                f"sample_size={self.sample_size}: give at least 1 (documents the LLM reads; "
                "on the command line --sample-size)"
            )
        if self.num_candidates < 0:
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
        if self.max_induced < 0 or not 0.0 <= self.min_precision <= 1.0:
            raise LoomError("max_induced must be >= 0 and min_precision in [0, 1]")
