"""The Python-level layer inside a worker: restricted builtins and module proxies.

Allowed modules are never handed to candidate code as module objects (an attribute such
as `typing.sys` reaches every loaded module). Code gets a read-only proxy holding the
module's public members that are not modules and not in `BLOCKED_MEMBERS`. Reaching for
anything else is recorded as a violation, which drops the function even if the code
catches the exception. This is a filter, not the boundary: the OS layers are.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import types
from typing import Any

from extraction.sandbox.checks import ALLOWED_IMPORTS, ALLOWED_SUBMODULES, BLOCKED_MEMBERS

SAFE_BUILTINS = (
    "abs all any ascii bin bool bytes callable chr dict divmod enumerate filter float format "
    "frozenset hasattr hash hex id int isinstance issubclass iter len list map max min next oct "
    "object ord pow range repr reversed round set slice sorted str sum tuple type zip True False "
    "None Exception ValueError TypeError KeyError IndexError AttributeError RuntimeError "
    "StopIteration ZeroDivisionError ArithmeticError LookupError NotImplementedError"
).split()
#: Loaded before the worker locks itself down: after that it can read no file, so every
#: module candidate code (or the standard library on its behalf) may need must be in memory.
PRELOAD = sorted(ALLOWED_IMPORTS | ALLOWED_SUBMODULES) + [
    "_strptime",
    "encodings.latin_1",
    "encodings.ascii",
    "encodings.cp1252",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.idna",
    "html.entities",
    "json.decoder",
    "json.encoder",
]


#: Modules the standard library imports on candidate code's behalf through `__import__`
#: (datetime.strptime imports _strptime); handed over as they are, never to code directly
#: (the static check refuses their names).
INTERNAL_IMPORTS = frozenset({"_strptime", "time", "locale"})


class SandboxViolation(Exception):
    """Candidate code reached for something outside the sandbox's Python surface."""


class Violations:
    """What the current function reached for; checked by the worker after every call."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def record(self, what: str) -> SandboxViolation:
        self.seen.append(what)
        return SandboxViolation(what)

    def take(self) -> str | None:
        first = self.seen[0] if self.seen else None
        self.seen.clear()
        return first


def _public_members(name: str, module: types.ModuleType) -> dict[str, Any]:
    blocked = BLOCKED_MEMBERS.get(name, frozenset())
    return {
        k: v
        for k, v in vars(module).items()
        if not k.startswith("_") and not isinstance(v, types.ModuleType) and k not in blocked
    }


def make_proxy(name: str, violations: Violations, children: dict[str, Any] | None = None):
    """A read-only stand-in for module `name` exposing its public, non-module members."""
    module = importlib.import_module(name)
    members = _public_members(name, module)
    members.update(children or {})

    class ModuleProxy:
        __slots__ = ()

        def __getattr__(self, attr: str) -> Any:
            if attr in members:
                return members[attr]
            if hasattr(module, attr):
                raise violations.record(f"{name}.{attr} is not reachable in the sandbox")
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")

        def __setattr__(self, attr: str, value: Any) -> None:
            raise violations.record(f"assignment to {name}.{attr}")

        def __delattr__(self, attr: str) -> None:
            raise violations.record(f"deletion of {name}.{attr}")

        def __repr__(self) -> str:
            return f"<module {name!r} (sandboxed)>"

    ModuleProxy.__name__ = ModuleProxy.__qualname__ = f"{name}_proxy"
    return ModuleProxy()


def build_proxies(violations: Violations) -> dict[str, Any]:
    """One proxy per allowed module and submodule, submodules hung on their parents."""
    for name in PRELOAD:
        importlib.import_module(name)
    subs = {s: make_proxy(s, violations) for s in ALLOWED_SUBMODULES}
    proxies: dict[str, Any] = dict(subs)
    for name in ALLOWED_IMPORTS:
        children = {s.split(".", 1)[1]: p for s, p in subs.items() if s.split(".")[0] == name}
        proxies[name] = make_proxy(name, violations, children)
    return proxies


def make_builtins(proxies: dict[str, Any], violations: Violations) -> dict[str, Any]:
    """The `__builtins__` of candidate code: a few safe ones and an import of proxies only."""

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if name in INTERNAL_IMPORTS and not level:  # the C datetime's own import
            return sys.modules[name]
        full = name if not level else None
        if full is None or full not in proxies:
            raise violations.record(f"import of {name!r} at run time")
        if fromlist:
            return proxies[full]
        return proxies[full.split(".")[0]]

    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}
    safe["__import__"] = guarded_import
    safe["print"] = lambda *a, **k: None
    return safe
