"""The package's shape: no import cycle between its modules, no module that has grown too large."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vggnet"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path) -> set[str]:
    """vggnet modules a module imports, at its top or inside a function (a late import hides a cycle, not removes it)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("vggnet"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x` imports a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vggnet"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in module_imports(p) if t in modules and t != m} for m, p in modules.items()}


def test_the_graph_sees_the_relative_imports():
    g = graph()
    assert "vggnet.model" in g["vggnet.analysis"] and "vggnet.configs" in g["vggnet.model"]
    assert "vggnet.weights.format" in g["vggnet.weights.sources"]  # `from .format import ...`
    assert "vggnet.io" in g["vggnet.train.state"]  # `from ..io import ...`


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports as [a, b, ..., a], or None. A package importing its own submodules is not one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(g[m]):
            if t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if state.get(t) is None and (cycle := visit(t, [*path, t])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m, [m])):
            return cycle
    return None


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_when_there_is_one():
    assert find_cycle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p": {"p.a"}, "p.a": set()}) is None  # a package and its own module


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_the_size_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES
