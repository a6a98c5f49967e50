"""The package's shape: no import cycles, parts never import front ends, the engine never pulls in Textual.

Imports are read from the source (ast), module-level and inside functions alike, skipping only
`if TYPE_CHECKING:` blocks, because a cycle hidden in a function body is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "opsconsole"
# Front ends: what a person or a script talks to. Everything else is a part.
FRONT_ENDS = ("opsconsole.ui", "opsconsole.cli", "opsconsole.headless", "opsconsole.__main__")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str], *, name: str | None = None) -> set[str]:
    """The opsconsole modules `path` (the module `name`, by default its place in the package) imports at run time."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        # `from opsconsole.x import y` may name a module y or a name in x: take the longest module that exists.
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
        # Importing opsconsole.pkg.mod runs opsconsole/pkg/__init__.py first: a package that imports its
        # modules back (re-exports) closes a circle with every module that imports a sibling.
        parent = target.rpartition(".")[0]
        while parent:
            if parent in modules and parent != name:
                found.add(parent)
            parent = parent.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("opsconsole"):
                        add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.startswith("opsconsole"):
                    # `from opsconsole.engine import commands` runs the package's __init__ by its name:
                    # a package that imports its modules back closes a circle through it.
                    if mod in modules and mod != name:
                        found.add(mod)
                    for alias in child.names:
                        add(f"{mod}.{alias.name}")
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def _front_end(mod: str) -> bool:
    return any(mod == f or mod.startswith(f + ".") for f in FRONT_ENDS)


def test_the_import_graph_is_read_correctly():
    # A guard on the reader itself, so the tests below cannot pass by reading nothing.
    g = graph()
    assert "opsconsole.engine.engine" in g and "opsconsole.proxy.server" in g
    assert "opsconsole.proxy.http1" in g["opsconsole.proxy.server"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    # A package's __init__ counts: importing opsconsole.proxy.server runs opsconsole.proxy first.
    assert "opsconsole.proxy" in g["opsconsole.proxy.server"]
    # … also when only a module inside it is named: `from opsconsole.config.model import X` runs opsconsole.config.
    assert {"opsconsole.config.model", "opsconsole.config"} <= g["opsconsole.inventory"]


def test_a_package_that_re_exports_its_modules_is_a_circle(tmp_path: Path) -> None:
    # pkg/__init__ imports pkg.a (a re-export); pkg.a imports its sibling pkg.b, which runs pkg first.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from opsconsole.pkg.a import f\n")
    (tmp_path / "pkg" / "a.py").write_text("from opsconsole.pkg.b import g\n\ndef f(): return g()\n")
    (tmp_path / "pkg" / "b.py").write_text("def g(): return 1\n")
    modules = {"opsconsole.pkg", "opsconsole.pkg.a", "opsconsole.pkg.b"}
    g = {"opsconsole.pkg": imports_of(tmp_path / "pkg" / "__init__.py", modules, name="opsconsole.pkg"),
         "opsconsole.pkg.a": imports_of(tmp_path / "pkg" / "a.py", modules, name="opsconsole.pkg.a"),
         "opsconsole.pkg.b": imports_of(tmp_path / "pkg" / "b.py", modules, name="opsconsole.pkg.b")}
    assert cycles(g) == [["opsconsole.pkg", "opsconsole.pkg.a"]]


def test_no_import_cycles_inside_the_package():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" ↔ ".join(c) for c in found)


def test_parts_never_import_front_ends():
    bad = sorted(f"{m} imports {t}" for m, targets in graph().items() if not _front_end(m)
                 for t in targets if _front_end(t))
    assert not bad, bad


def test_the_engine_does_not_pull_in_textual():
    g = graph()
    seen: set[str] = set()
    todo = [m for m in g if m.startswith("opsconsole.engine")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(g.get(m, ()))
    assert not [m for m in seen if m.startswith("opsconsole.ui")]
    for m in seen:  # and none of what it reaches imports textual itself
        path = PKG.parent / (m.replace(".", "/") + ".py")
        if not path.exists():
            path = PKG.parent / m.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
                {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not [n for n in names if n == "textual" or n.startswith("textual.")], m
