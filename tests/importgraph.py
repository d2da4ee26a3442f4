"""The import graph check: room rules, upward arrows, private names and circles, read with `ast`.

Floors: `ttformats` is the ground floor (0), the three rooms `gatewaysim`, `locustfiles` and
`analysis` stand side by side on floor 1, and the command line `ttbench` is the top floor (2).
A module may import its own package and packages on lower floors, never a higher floor (an
'upward arrow'). Of the rooms side by side, the simulator and the load generator never import
each other and the analysis imports neither. No module imports another package's private name
(`from x import _y`, `import x._y`), and no modules import each other in a circle.

Every import counts: inside functions too, relative ones resolved. Imports under
`if TYPE_CHECKING:` count for the room rules but not for circles. Imports of anything outside
the packages (standard library, third party) are ignored.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

#: package -> floor (0 ground, higher is above)
ROOMS: dict[str, int] = {"ttformats": 0, "gatewaysim": 1, "locustfiles": 1, "analysis": 1, "ttbench": 2}

#: how violations name each package
LABELS: dict[str, str] = {
    "ttformats": "the ground floor",
    "gatewaysim": "the simulator",
    "locustfiles": "the load generator",
    "analysis": "the analysis",
    "ttbench": "the command line",
}

#: (importer, imported) pairs of packages on one floor that must not meet
FORBIDDEN: frozenset[tuple[str, str]] = frozenset({
    ("gatewaysim", "locustfiles"),
    ("locustfiles", "gatewaysim"),
    ("analysis", "gatewaysim"),
    ("analysis", "locustfiles"),
})

#: folders inside a package that hold no package modules (besides hidden ones like `.venv*`)
SKIP_DIRS = frozenset({"tests", "benchmarks", "build", "results", "__pycache__"})


@dataclass(frozen=True)
class Import:
    """One import statement's edge: who imports what (a dotted name), where, and how."""

    source: str  # importing module, dotted
    path: str  # importing file, relative to the root, posix
    line: int
    target: str  # imported module (or the package part of it that exists), dotted
    private: tuple[str, str] | None  # (private name, the dotted name it belongs to), if any
    type_checking: bool  # under `if TYPE_CHECKING:`


def _label(package: str) -> str:
    return LABELS.get(package, package)


def _skipped(name: str) -> bool:
    return name in SKIP_DIRS or name.startswith(".")


def _is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def package_modules(root: Path, rooms: dict[str, int]) -> dict[str, Path]:
    """Map each package module's dotted name to its file, for every room folder under `root`."""
    modules: dict[str, Path] = {}
    for package in rooms:
        top = root / package
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*.py")):
            rel = path.relative_to(root)
            if any(_skipped(part) for part in rel.parts[:-1]) or _is_test_file(path.name):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    """Walks a whole module (function bodies too), noting each import and whether TYPE_CHECKING guards it."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self._guarded = 0

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if _is_type_checking(node.test):
            self._guarded += 1
            for child in node.body:
                self.visit(child)
            self._guarded -= 1
        else:
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, self._guarded > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node, self._guarded > 0))


def _existing(dotted: str, modules: dict[str, Path]) -> str:
    """The longest prefix of `dotted` that is a package module (else the top-level name)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return parts[0]


def _private_part(dotted: str) -> tuple[str, str] | None:
    """The first private part of `dotted` (one leading underscore, not a dunder) and what it belongs to."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if i and part.startswith("_") and not part.startswith("__"):
            return part, ".".join(parts[:i])
    return None


def _imports(module: str, path: Path, root: Path, modules: dict[str, Path], rooms: dict[str, int],
             errors: list[tuple[str, int, str]]) -> Iterator[Import]:
    rel = path.relative_to(root).as_posix()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        errors.append((rel, getattr(exc, "lineno", 0) or 0, f"cannot parse: {exc}"))
        return
    collector = _Collector()
    collector.visit(tree)
    is_package = path.name == "__init__.py"
    for node, guarded in collector.found:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in rooms:
                    yield Import(module, rel, node.lineno, _existing(alias.name, modules),
                                 _private_part(alias.name), guarded)
            continue
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            if node.level - 1 >= len(base):
                errors.append((rel, node.lineno, "relative import beyond the top-level package"))
                continue
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] not in rooms:
            continue
        for alias in node.names:
            full = f"{source}.{alias.name}"
            target = full if full in modules else _existing(source, modules)
            private = _private_part(source) or _private_part(full)
            yield Import(module, rel, node.lineno, target, private, guarded)


def _room_violations(edge: Import, rooms: dict[str, int]) -> Iterator[tuple[str, int, str]]:
    src, dst = edge.source.split(".")[0], edge.target.split(".")[0]
    if src == dst:
        return
    if (src, dst) in FORBIDDEN:
        yield edge.path, edge.line, f"{_label(src)} imports {_label(dst)} ({edge.target})"
    if rooms[dst] > rooms[src]:
        yield (edge.path, edge.line, f"{_label(src)} imports {_label(dst)} ({edge.target}):"
               f" upward arrow, floor {rooms[src]} -> {rooms[dst]}")
    if edge.private:
        yield edge.path, edge.line, f"private name {edge.private[0]} of {edge.private[1]}"


def _reach(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def _shortest_cycle(start: str, graph: dict[str, set[str]], knot: set[str]) -> list[str]:
    back: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & knot):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(back[path[-1]])
                return [*reversed(path), start]
            if nxt not in back:
                back[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in no cycle")


def _circles(edges: list[Import], modules: dict[str, Path]) -> Iterator[str]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    where: dict[tuple[str, str], str] = {}
    for edge in edges:
        if not edge.type_checking and edge.target in modules:
            graph[edge.source].add(edge.target)
            where.setdefault((edge.source, edge.target), f"{edge.path}:{edge.line}")
    reach = {name: _reach(name, graph) for name in graph}
    done: set[str] = set()
    for name in sorted(graph):
        if name in done or name not in reach[name]:
            continue
        knot = {other for other in reach[name] if name in reach[other]}
        done |= knot
        cycle = _shortest_cycle(min(knot), graph, knot)
        lines = ", ".join(where[step] for step in pairwise(cycle))
        line = f"circle: {' -> '.join(cycle)} ({lines})"
        rest = sorted(knot - set(cycle))
        if rest:
            line += f"; also in the circle: {', '.join(rest)}"
        yield line


def check(root: Path, rooms: dict[str, int] | None = None) -> list[str]:
    """Return one line per import-graph violation in the packages under `root` (empty when clean)."""
    rooms = ROOMS if rooms is None else rooms
    modules = package_modules(root, rooms)
    errors: list[tuple[str, int, str]] = []
    edges = [edge for name, path in modules.items()
             for edge in _imports(name, path, root, modules, rooms, errors)]
    found = errors + [found for edge in edges for found in _room_violations(edge, rooms)]
    return [f"{path}:{line}: {text}" for path, line, text in sorted(set(found))] + list(_circles(edges, modules))


if __name__ == "__main__":
    import sys

    lines = check(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    print("\n".join(lines) or "import graph: clean")
    sys.exit(1 if lines else 0)
