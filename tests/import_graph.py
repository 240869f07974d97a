"""The import graph of the project's own packages: no circles, and layers that point one way.

Every import counts, wherever it is written: at module level, inside a function, or under
``if TYPE_CHECKING:``. A circle hidden behind a function-level import is still a circle a
reader has to hold in their head. Layers: ``adapters`` imports neither ``models`` nor
``cds_service``; ``models`` does not import ``cds_service``.

Run by ``make lint`` (``python -m tests.import_graph``) and by the test suite.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("adapters", "models", "cds_service")
#: package -> packages it must never import
FORBIDDEN = {"adapters": {"models", "cds_service"}, "models": {"cds_service"}}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:  # alembic's revision scripts, loaded by alembic
                continue
            found[_module_name(path, root)] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[list[str], int]]:
    """For every import statement anywhere in the tree: the dotted names it may mean, most
    specific first (``from a import b`` means module ``a.b`` if there is one, else ``a``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield [alias.name], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                yield [f"{prefix}.{alias.name}", prefix], node.lineno


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line it is imported on}."""
    modules = project_modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: dict[str, int] = {}
        for candidates, line in _imported(tree, name, path.name == "__init__.py"):
            target = next((c for c in candidates if c in modules), None)
            if target is not None and target != name:
                edges[target] = min(line, edges.get(target, line))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        banned = FORBIDDEN.get(module.split(".")[0], set())
        for target, line in sorted(edges.items()):
            if target.split(".")[0] in banned:
                out.append(f"{module} (line {line}) imports {target}")
    return out


def problems(root: Path = ROOT) -> list[str]:
    graph = import_graph(root)
    out = [f"layering: {v}" for v in layer_violations(graph)]
    for component in cycles(graph):
        members = set(component)
        links = [
            f"{a} -> {b} (line {graph[a][b]})"
            for a in component
            for b in sorted(graph[a])
            if b in members
        ]
        out.append("import circle: " + "; ".join(links))
    return out


def main(argv: Iterable[str] = ()) -> int:
    found = problems()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import-graph problem(s)", file=sys.stderr)
        return 1
    print("import graph: no circles, layers point one way")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
