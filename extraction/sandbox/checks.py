"""The first filter: a static (AST) check of LLM-written extraction functions.

It rejects code that plainly reaches for the system before any worker sees it, and gives
the reason. It is not the security boundary (no Python-level checker can be complete): the
operating-system layers in `extraction.sandbox.lockdown` are. See docs/extraction.md,
"Security model".
"""

from __future__ import annotations

import ast
import string

#: Modules a candidate function may import. Inside the worker they are reachable only
#: through read-only proxies of their public, non-module members (extraction.sandbox.proxies).
ALLOWED_IMPORTS = frozenset(
    {
        "re",
        "json",
        "datetime",
        "html",
        "string",
        "math",
        "collections",
        "itertools",
        "functools",
        "unicodedata",
        "textwrap",
        "decimal",
        "fractions",
        "statistics",
        "calendar",
        "difflib",
        "operator",
        "typing",
        "dataclasses",
        "enum",
    }
)
#: Submodules importable as `import a.b` / `from a import b` (each also behind a proxy).
ALLOWED_SUBMODULES = frozenset({"collections.abc"})

#: Members of allowed modules that look attributes up by a string, evaluate strings, or copy
#: attributes by name: each is a way around the attribute check below.
BLOCKED_MEMBERS: dict[str, frozenset[str]] = {
    "operator": frozenset({"attrgetter", "methodcaller"}),
    "string": frozenset({"Formatter"}),
    "typing": frozenset({"get_type_hints", "ForwardRef", "evaluate_forward_ref"}),
    "functools": frozenset({"update_wrapper", "wraps"}),
}
BLOCKED_MEMBER_NAMES = frozenset().union(*BLOCKED_MEMBERS.values())

FORBIDDEN_NAMES = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "dir",
        "getattr",
        "setattr",
        "delattr",
        "input",
        "breakpoint",
        "memoryview",
        "exit",
        "quit",
        "help",
        "__builtins__",
        "__loader__",
        "__spec__",
        "classmethod",
        "staticmethod",
        "super",
    }
)
#: Attributes without an underscore that still lead to frames, code or globals.
FORBIDDEN_ATTRIBUTES = (
    frozenset(
        {
            "gi_frame",
            "gi_code",
            "gi_yieldfrom",
            "cr_frame",
            "cr_code",
            "cr_await",
            "ag_frame",
            "ag_code",
            "ag_await",
            "f_globals",
            "f_locals",
            "f_builtins",
            "f_back",
            "f_code",
            "f_trace",
            "tb_frame",
            "tb_next",
            "co_code",
            "co_consts",
            "func_globals",
        }
    )
    | BLOCKED_MEMBER_NAMES
)
MAX_CODE_CHARS = 20_000


def _format_string_reason(fmt: str) -> str | None:
    """Why a literal format string is unsafe (a field that reads attributes or items)."""
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as e:
        return f"malformed format string: {e}"
    for _, field, spec, _ in parts:
        if field and ("." in field or "[" in field):
            return f"format field {{{field}}} reads attributes or items"
        if spec and "{" in spec:
            inner = _format_string_reason(spec)
            if inner:
                return inner
    return None


def _node_reason(node: ast.AST, entry: str) -> str | None:
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] not in ALLOWED_IMPORTS or (
                "." in a.name and a.name not in ALLOWED_SUBMODULES
            ):
                return f"import of {a.name!r} is not allowed"
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level or module.split(".")[0] not in ALLOWED_IMPORTS:
            return f"import from {module!r} is not allowed"
        for a in node.names:
            if a.name == "*":
                return f"star import from {module!r} is not allowed"
            if a.name.startswith("_") or a.name in BLOCKED_MEMBER_NAMES:
                return f"import of {module}.{a.name} is not allowed"
    elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
        return f"use of {node.id!r} is not allowed"
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            return f"access to attribute {node.attr!r} is not allowed"
        if node.attr in FORBIDDEN_ATTRIBUTES:
            return f"access to attribute {node.attr!r} is not allowed"
        if node.attr in ("format", "format_map"):
            target = node.value
            if not (isinstance(target, ast.Constant) and isinstance(target.value, str)):
                return f"{node.attr}() is allowed only on a string literal"
            why = _format_string_reason(target.value)
            if why:
                return why
    elif isinstance(node, (ast.Global, ast.Nonlocal)):
        return "global/nonlocal statements are not allowed"
    return None


def check_code(code: str, entry: str = "extract") -> str | None:
    """None when `code` passes the static checks, else the reason it is rejected."""
    if not isinstance(code, str) or not code.strip():
        return "empty code"
    if len(code) > MAX_CODE_CHARS:
        return f"code longer than {MAX_CODE_CHARS} characters"
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"syntax error: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:
        return f"cannot parse: {type(e).__name__}"
    defined = False
    for node in ast.walk(tree):
        reason = _node_reason(node, entry)
        if reason:
            return reason
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            defined = True
    if not defined:
        return f"no function named {entry!r}"
    return None
