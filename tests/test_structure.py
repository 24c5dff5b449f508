"""Structure checks a reader can run: the layers, no import cycle, no private name imported.

Every `import` statement of the packages counts, also those inside functions (a lazy import
is still a dependency); imports under `if TYPE_CHECKING:` do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolkit", "labeling", "extraction", "linking", "kernels", "apps")
#: Which package may import which: apps -> extraction | linking -> labeling -> toolkit -> kernels.
LAYER = {"kernels": 0, "toolkit": 1, "labeling": 2, "extraction": 3, "linking": 3, "apps": 4}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, list[str], int]]]:
    """module -> [(imported module, names imported from it, line)] for project modules."""
    out: dict[str, list[tuple[str, list[str], int]]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        is_pkg = path.name == "__init__.py"
        found = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    found.append((a.name, [], node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                names = [a.name for a in node.names]
                # `from pkg import submodule` depends on the submodule
                subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
                found.append((base, [n for n in names if f"{base}.{n}" not in mods], node.lineno))
                found += [(s, [], node.lineno) for s in subs]
        out[name] = [(m, n, ln) for m, n, ln in found if m.split(".")[0] in PACKAGES]
    return out


def _resolve(target: str, mods: dict[str, Path]) -> str | None:
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, imps in _imports(mods).items():
        for target, _, _ in imps:
            t = _resolve(target, mods)
            # a package's __init__ re-exporting its own modules is not a dependency cycle
            if t and t != m and not (mods[m].name == "__init__.py" and t.startswith(m + ".")):
                graph[m].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_layers_only_import_downwards() -> None:
    bad = []
    for m, targets in _graph().items():
        for t in targets:
            a, b = m.split(".")[0], t.split(".")[0]
            if a != b and LAYER[b] >= LAYER[a]:
                bad.append(f"{m} -> {t}")
    assert bad == [], "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_private_names_imported_from_other_modules() -> None:
    mods = _modules()
    bad = []
    for m, imps in _imports(mods).items():
        for target, names, line in imps:
            t = _resolve(target, mods)
            if t is None or t == m:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            if private:
                bad.append(f"{mods[m].relative_to(ROOT)}:{line} imports {private} from {target}")
    assert bad == [], "private names imported from another module:\n" + "\n".join(bad)


def _module_aliases(tree: ast.AST, name: str, mods: dict[str, Path]) -> dict[str, str]:
    """Local names bound to project modules: `import a.b as c`, `from a import b` (b a module)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in mods and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in mods:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def test_no_private_attributes_of_other_modules_used() -> None:
    """`core._helper(...)` from another module is a private import in disguise."""
    mods = _modules()
    bad = []
    for m, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = _module_aliases(tree, m, mods)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != m
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}"
                )
    assert bad == [], "private names of other modules used:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_should(tmp_path) -> None:
    """The cycle finder on a planted cycle, so the tests above cannot pass by accident."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
