"""The package's layering, checked on the source with ``ast``.

The import graph counts every import: at module level, inside functions, and under
``TYPE_CHECKING`` (a type-only cycle is still a cycle between two modules that know each other).
``from a import b`` is an edge to the module ``a.b`` when that is a module, else to ``a``. Importing
``a.b`` also runs ``a/__init__.py``; that implicit edge is not counted, or every package whose
``__init__`` re-exports its modules would be a cycle.

Layers, lowest first: ``errors`` and ``values`` (frozen value objects), ``wire`` (sans-IO
HTTP/1.1, no asyncio), ``tunnel`` (QUIC and
HTTP/3; the only place aioquic is imported, and ``tunnel/aioquic/`` the only place its private names
are used, see test_aioquic_internals.py), then the two ends ``client`` and ``server``, which never
import each other, and ``ops`` on top. ``ops.config`` is the one ``ops`` module below ``tunnel``:
the tunnel is built from the configuration, so it must stay a leaf.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ptproxy"
# Cython twins cannot be parsed by ast; their Python imports are plain lines.
PYX_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ]+)|import\s+([\w.]+))", re.MULTILINE)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx")):
        files[_module_name(path)] = path
    return files


FILES = _files()
MODULES = set(FILES)


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module or name, line) for every import in the file, relative ones resolved."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":
        for match in PYX_IMPORT.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            if match.group(1) and "cimport" not in match.group(0):
                for name in match.group(2).split(","):
                    yield f"{match.group(1)}.{name.strip()}", line
            elif match.group(3):
                yield match.group(3), line
        return
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def _target(name: str) -> str:
    """The module an imported dotted name lands in: the longest prefix that is a module."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in MODULES:
            return candidate
    return name


def _graph() -> dict[str, dict[str, int]]:
    """ptproxy module -> {ptproxy module it imports: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in FILES.items():
        edges = graph.setdefault(module, {})
        for name, line in _imports(module, path):
            if name == "ptproxy" or name.startswith("ptproxy."):
                target = _target(name)
                if target != module:
                    edges.setdefault(target, line)
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                connect(succ)
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
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: dict[str, dict[str, int]], members: set[str]) -> list[str]:
    """A concrete path a -> ... -> a through a strongly connected component."""
    start = min(members)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for succ in sorted(graph.get(node, {})):
            if succ == start:
                return paths[node] + [start]
            if succ in members and succ not in paths:
                paths[succ] = paths[node] + [succ]
                todo.append(succ)
    return sorted(members)


def _describe(cycle: list[str]) -> str:
    hops = [f"{a} -> {b} (line {GRAPH[a][b]})" for a, b in pairwise(cycle)]
    return "; ".join(hops)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _edges(where: str) -> Iterator[tuple[str, str, int]]:
    for module, edges in GRAPH.items():
        if _in(module, where):
            for target, line in edges.items():
                yield module, target, line


# -- (a) no cycles ---------------------------------------------------------------------------------


def test_graph_sees_the_whole_package() -> None:
    assert "ptproxy.tunnel.session" in GRAPH and "ptproxy.wire.parser" in GRAPH
    assert "ptproxy.tunnel.stream" in GRAPH["ptproxy.tunnel.session"]
    # Imports inside functions count: cli imports the app only when it runs.
    assert any(_in(t, "ptproxy.ops") for t in GRAPH["ptproxy.ops.cli"])


def test_cycle_detection_reports_a_path() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    cycles = [_describe(cycle) for cycle in _cycles(GRAPH)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


# -- (b) aioquic only in tunnel/ -------------------------------------------------------------------


def test_only_the_tunnel_imports_aioquic() -> None:
    offenders = []
    for module, path in FILES.items():
        if _in(module, "ptproxy.tunnel"):
            continue
        for name, line in _imports(module, path):
            if name == "aioquic" or name.startswith("aioquic."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert offenders == []


# -- (c) wire is sans-IO ---------------------------------------------------------------------------


def test_wire_never_awaits_nor_reaches_up() -> None:
    offenders = []
    for module, path in FILES.items():
        if not _in(module, "ptproxy.wire"):
            continue
        for name, line in _imports(module, path):
            top = name.split(".")[0]
            if top in ("asyncio", "socket", "selectors", "uvloop", "aioquic") or _in(
                _target(name), "ptproxy.tunnel", "ptproxy.client", "ptproxy.server", "ptproxy.ops"
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert offenders == []


# -- (d) layer direction ---------------------------------------------------------------------------

LEAVES = {
    # module or package: what it may import from ptproxy
    "ptproxy.errors": set(),
    "ptproxy.values": set(),
    "ptproxy.ops.config": {"ptproxy.errors"},
    "ptproxy.wire": {"ptproxy.wire", "ptproxy.errors", "ptproxy.values", "ptproxy._speedups"},
    "ptproxy._speedups": {"ptproxy._speedups", "ptproxy.errors"},
}


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_below_them(leaf: str) -> None:
    allowed = LEAVES[leaf]
    bad = [f"{m} -> {t} (line {n})" for m, t, n in _edges(leaf) if not _in(t, *allowed)]
    assert bad == []


def test_tunnel_does_not_import_the_ends_or_ops() -> None:
    bad = [
        f"{m} -> {t} (line {n})"
        for m, t, n in _edges("ptproxy.tunnel")
        if _in(t, "ptproxy.client", "ptproxy.server", "ptproxy.ops", "ptproxy.relay")
        and t != "ptproxy.ops.config"
    ]
    assert bad == []


@pytest.mark.parametrize("end,other", [("ptproxy.client", "ptproxy.server"), ("ptproxy.server", "ptproxy.client")])
def test_the_two_ends_do_not_import_each_other(end: str, other: str) -> None:
    # Nor ops, which sits above them; the configuration is the exception (a leaf).
    bad = [
        f"{m} -> {t} (line {n})"
        for m, t, n in _edges(end)
        if _in(t, other) or (_in(t, "ptproxy.ops") and t != "ptproxy.ops.config")
    ]
    assert bad == []


def test_the_ends_use_the_tunnel_surface() -> None:
    """client/, server/ and ops/ import ``ptproxy.tunnel`` itself, not its modules (bar documented
    exceptions: the server's admission step reads datagrams with tunnel/aioquic/initial.py)."""
    exceptions = {("ptproxy.server.admission", "ptproxy.tunnel.aioquic.initial")}
    bad = [
        f"{m} -> {t} (line {n})"
        for where in ("ptproxy.client", "ptproxy.server", "ptproxy.ops", "ptproxy.relay")
        for m, t, n in _edges(where)
        if _in(t, "ptproxy.tunnel") and t != "ptproxy.tunnel" and (m, t) not in exceptions
    ]
    assert bad == []


def test_imports_are_absolute() -> None:
    relative = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                relative.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert relative == []
