"""No import cycle anywhere in the package, function-local and type-only imports included.

Every module under ``src/simkgcl`` is parsed with :mod:`ast` (nothing is imported, so optional
extras need not be installed). ``import simkgcl.a.b`` is an edge to ``simkgcl.a.b``;
``from simkgcl.a import b`` an edge to ``simkgcl.a.b`` when that is a module, else to
``simkgcl.a``; relative imports are resolved against the importing module's package. Imports
made by name at run time (``importlib.import_module("...")``, the lazy model registry and the
lazy ``simkgcl.data`` names) are not seen. The implicit import of a parent package when a
submodule is imported is not an edge (it would make every ``__init__`` that imports its own
submodules a cycle).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "simkgcl"


def _module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every ``.py`` file below ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source."""
    modules = _module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def shortest_cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """``[start, ..., start]``: a shortest import path from ``start`` back to itself."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected group of modules (each group named once)."""
    cycles: list[list[str]] = []
    covered: set[str] = set()
    for module in sorted(graph):
        if module in covered:
            continue
        cycle = shortest_cycle_through(graph, module)
        if cycle is not None:
            cycles.append(cycle)
            covered.update(_reachable_both_ways(graph, module))
    return cycles


def _reachable_both_ways(graph: dict[str, set[str]], start: str) -> set[str]:
    def reach(edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reverse: dict[str, set[str]] = {name: set() for name in graph}
    for name, targets in graph.items():
        for target in targets:
            reverse[target].add(name)
    return reach(graph) & reach(reverse)


def _owner(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(PACKAGE_ROOT))
    described = [f"[{', '.join(sorted({_owner(m) for m in c}))}] " + " -> ".join(c)
                 for c in cycles]
    assert not cycles, "import cycles:\n  " + "\n  ".join(described)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cycles_hidden_in_functions_and_relative_imports_are_found(tmp_path: Path) -> None:
    pkg = _write_package(tmp_path / "pkg", {
        "__init__.py": "from pkg.sub import thing\n",
        "sub/__init__.py": "",
        "sub/thing.py": "from . import other\n",
        "sub/other.py": "def f():\n    from pkg.sub.thing import g\n",
        "leaf.py": "import pkg.sub.other\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import leaf2\n",
        "leaf2.py": "from pkg.typed import x\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.sub.thing"}
    assert graph["pkg.sub.thing"] == {"pkg.sub.other"}
    assert graph["pkg.leaf"] == {"pkg.sub.other"}
    assert find_cycles(graph) == [["pkg.leaf2", "pkg.typed", "pkg.leaf2"],
                                  ["pkg.sub.other", "pkg.sub.thing", "pkg.sub.other"]]


def test_a_three_module_cycle_is_named_in_import_order(tmp_path: Path) -> None:
    sources = ["import q.b\n", "from q import c\n", "from q.a import x\n", "import q.a\n"]
    files = {f"{name}.py": text for name, text in zip("abcd", sources, strict=True)}
    pkg = _write_package(tmp_path / "q", {"__init__.py": "", **files})
    assert find_cycles(import_graph(pkg)) == [["q.a", "q.b", "q.c", "q.a"]]


def private_imports_across_packages(root: Path) -> list[str]:
    """``from simkgcl.<pkg>... import _name`` written in a module outside ``<pkg>``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        home = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.startswith(f"{root.name}.")):
                continue
            source = node.module.split(".")[1]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") \
                        and source != home:
                    found.append(f"{path.relative_to(root)}: {node.module}.{alias.name}")
    return found


def test_no_module_imports_another_packages_private_names() -> None:
    assert private_imports_across_packages(PACKAGE_ROOT) == []


def test_a_private_import_across_packages_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "a" / "x.py").write_text("def _hidden():\n    pass\n")
    (root / "a" / "y.py").write_text("from pkg.a.x import _hidden\n")  # same package: fine
    (root / "b" / "z.py").write_text("from pkg.a.x import _hidden, public\n")
    assert private_imports_across_packages(root) == ["b/z.py: pkg.a.x._hidden"]
