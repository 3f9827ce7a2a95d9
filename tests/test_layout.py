"""The package's layout: the import graph has no cycle (lazy imports inside functions included), each part
imports only the parts below it, and no module outgrows the ~400-line rule (ARCHITECTURE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "axial_attention"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (annotations only: they never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports_of(name: str) -> set[str]:
    """The package's modules that `name` imports anywhere in its code: at the top, inside functions (lazily),
    or by `importlib.import_module("...")` with a literal name."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import x` imports the module x; `from . import name`, the package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_the_imports_it_must():
    assert "axial_attention.layers.primitive" in GRAPH["axial_attention.layers.neighbourhood"]
    assert "axial_attention.models.autoregressive" in GRAPH["axial_attention.training.cli"]
    assert "axial_attention._version" in GRAPH["axial_attention.models.pretrained"]
    # the cycle finder finds a lazy one (0.2.0's reversible.py -> axial_attention.axial_attention -> reversible.py)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


# What each part may import of the package (besides itself and validation.py, which imports nothing of it).
ALLOWED = {
    "axial_attention.layers": {"axial_attention.compat.lucidrains_state_dicts"},
    "axial_attention.models": {"axial_attention.layers", "axial_attention.compat.lucidrains_state_dicts",
                               "axial_attention._version"},
    "axial_attention.training": {"axial_attention.models"},
}


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_parts_below_it(part):
    allowed = {part, "axial_attention.validation", *ALLOWED[part]}
    wrong = {f"{name} -> {target}" for name, targets in GRAPH.items() if name.startswith(part + ".") or name == part
             for target in targets if not any(target == a or target.startswith(a + ".") for a in allowed)}
    assert not wrong, sorted(wrong)


def test_the_shared_pieces_import_nothing_of_the_package():
    for name in ("axial_attention.validation", "axial_attention._version",
                 "axial_attention.compat.lucidrains_state_dicts", "axial_attention.compat.module_paths"):
        assert GRAPH[name] == set(), (name, GRAPH[name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_outgrows_the_line_rule(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(PACKAGE.parent)} has {lines} lines (> {MAX_LINES})"
