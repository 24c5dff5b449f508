"""`EvaporateConfig`: every option of an extraction run, built once and passed down.

The CLI builds one from its flags, `Evaporate.run` builds one from its keywords, and the
workspace records `dataclasses.asdict(cfg)` as the run's parameters (which is also what a
resumed run must match).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from toolkit.errors import LoomError

MODES = ("direct", "code", "code+")
SAMPLINGS = ("stratified", "random")
#: (sample_size, num_candidates) when they are left at None ("auto"): a local model on a CPU
#: (about 1 s per answer, 3 s per function on 2 cores) or a model behind a server URL
AUTO_SIZES = {"local": (4, 2), "server": (10, 10)}
#: columns every result table has besides the attributes: no attribute may take their names
RESERVED = ("doc_id", "path")
_INTS = ("max_attributes", "max_induced", "max_functions", "max_chars", "direct_tokens",
         "code_tokens", "seed", "constrained_candidates")  # fmt: skip
_OPTIONAL_INTS = ("sample_size", "num_candidates", "max_llm_tokens")


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
        self._check_types()
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

    def _check_types(self) -> None:
        """Numbers that are whole numbers, a real `constrained` flag, and the attribute names
        in the form the run uses (`check_attributes`); a wrong type names the option."""
        for name in _INTS + _OPTIONAL_INTS:
            v = getattr(self, name)
            if v is None and name in _OPTIONAL_INTS:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                what = " or None" if name in _OPTIONAL_INTS else ""
                raise LoomError(f"{name}={v!r}: give a whole number{what}")
            object.__setattr__(self, name, int(v))  # numpy integers -> int (JSON params)
        p = self.min_precision
        if isinstance(p, bool) or not isinstance(p, numbers.Real):
            raise LoomError(f"min_precision={p!r}: give a number in [0, 1]")
        object.__setattr__(self, "min_precision", float(p))
        if not (isinstance(self.constrained, bool) or type(self.constrained).__name__ == "bool_"):
            raise LoomError(f"constrained={self.constrained!r}: give True or False")
        object.__setattr__(self, "constrained", bool(self.constrained))
        object.__setattr__(self, "attributes", check_attributes(self.attributes))


def check_attributes(attributes: Any) -> tuple[str, ...] | None:
    """Attribute names as snake_case, deduplicated; LoomError naming an unusable one.

    A string is a comma-separated list; `doc_id` and `path` are the table's own columns."""
    from extraction import prompts

    if attributes is None:
        return None
    if isinstance(attributes, str):
        attributes = attributes.split(",")
    try:
        given = list(attributes)
    except TypeError:
        raise LoomError(
            f"attributes={attributes!r}: give a list of names such as ['surname', 'postcode'] "
            "or one comma-separated string"
        ) from None
    names: list[str] = []
    for a in given:
        n = prompts.attribute_name(a) if isinstance(a, str) else ""
        if not n:
            raise LoomError(
                f"attribute {a!r} is not a usable name: give short names (at most four words, "
                "with a letter) like 'date_of_birth' or 'postcode'"
            )
        if n in RESERVED:
            raise LoomError(
                f"attribute {a!r}: {n!r} is a column of every result table (doc_id, path); "
                f"give the attribute another name, e.g. 'document_{n}'"
            )
        if n not in names:
            names.append(n)
    if not names:
        raise LoomError("attributes is empty: give at least one name or leave it out")
    return tuple(names)


def config_from(
    config: EvaporateConfig | None, options: dict[str, Any], defaults: dict[str, Any]
) -> EvaporateConfig:
    """`config`, or one built from `options` (the keywords of `Evaporate.run`); LoomError when
    both are given, rather than silently dropping the keywords the config overrides."""
    if config is None:
        return EvaporateConfig(**options)
    if not isinstance(config, EvaporateConfig):
        raise LoomError(
            f"config is a {type(config).__name__}, not an EvaporateConfig: build one with "
            "EvaporateConfig(attributes=..., mode=...) or pass the options as keywords"
        )
    clash = [f"{k}={v!r}" for k, v in options.items() if _differs(v, defaults[k])]
    if clash:
        raise LoomError(
            f"run(config=...) was also given {', '.join(clash)}, which the config would "
            "override: put them in the config (dataclasses.replace(config, ...)) or leave "
            "config out"
        )
    return config


def _differs(value: Any, default: Any) -> bool:
    try:
        return value is not default and bool(value != default)
    except (TypeError, ValueError):  # an array compares element-wise: not the default
        return True
