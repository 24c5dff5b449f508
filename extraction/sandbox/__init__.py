"""Run untrusted extraction functions (`def extract(text: str) -> str`) in isolated workers.

Candidate functions are written by an LLM after reading untrusted documents, so they are
treated as hostile. Layers, outermost last: a static check (`checks.check_code`, a first
filter), a Python-level surface of module proxies and restricted builtins inside the worker
(`proxies`), and the boundary: operating-system isolation that each worker puts on itself
before it runs anything (`lockdown`: empty environment, network namespace, Landlock,
unprivileged uid, rlimits, seccomp). Replies cross as JSON and are checked (`protocol`).
A function that hangs, crashes, floods memory or tries to escape is dropped with a reason;
the run goes on. docs/extraction.md, "Security model", says what is isolated and what not.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Sandbox", "SandboxError", "check_code", "format_isolation", "run_on_cluster"]


def __getattr__(name: str) -> Any:  # lazy: the worker imports this package and stays light
    if name in ("Sandbox", "format_isolation", "run_on_cluster"):
        from extraction.sandbox import pool

        return getattr(pool, name)
    if name == "SandboxError":
        from extraction.sandbox.process import SandboxError

        return SandboxError
    if name == "check_code":
        from extraction.sandbox.checks import check_code

        return check_code
    raise AttributeError(name)
