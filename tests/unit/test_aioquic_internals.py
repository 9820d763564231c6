"""The private aioquic names we rely on: declared, present in the pinned aioquic, and only ours to use.

``ptproxy/tunnel/aioquic/internals.py`` declares every private aioquic name the code touches. This
test checks each one against the installed aioquic (exists; a method accepts the arguments we, or
aioquic, call it with; an instance attribute is present on a live object), then scans the source
with ``ast`` both ways: a ``_`` attribute used in ``tunnel/aioquic/`` but not declared fails, a
declared name nothing uses fails, and a private aioquic name used anywhere else in ``ptproxy/``
fails.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioquic
import pytest

from ptproxy.tunnel.aioquic import internals
from ptproxy.tunnel.aioquic.internals import PRIVATE, UNDOCUMENTED, Internal, bind_call, problems

PACKAGE = Path(__file__).resolve().parents[2] / "ptproxy"
LAYER = PACKAGE / "tunnel" / "aioquic"
AIOQUIC = Path(aioquic.__file__).parent
# Receivers that hold aioquic objects, for names that ptproxy also uses for attributes of its own.
AIOQUIC_RECEIVERS = {"quic", "h3", "tls", "ctx", "conn", "loss", "sender", "receiver", "space"}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _sources(under: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(under.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@dataclass(frozen=True)
class Use:
    """One ``_`` name used in our source: an attribute access, or a method defined in a subclass."""

    path: Path
    line: int
    name: str
    on_self: bool  # ``self._x`` / ``cls._x``
    receiver: str  # the expression before the dot
    aioquic_class: bool  # inside a class that derives from an aioquic class

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line}: {self.receiver}.{self.name}"


def _import_map(module: str, tree: ast.Module) -> dict[str, str]:
    """Local name -> the fully qualified name it was imported as."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # ptproxy imports are absolute (test_layers checks); resolve anyway
                anchor = module.split(".")[: len(module.split(".")) - node.level]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
    return names


def _class_bases() -> dict[str, list[str]]:
    """``module.Class`` -> fully qualified bases, for every top-level class in ptproxy (static)."""
    classes: dict[str, list[str]] = {}
    for path, tree in _sources(PACKAGE):
        module = _module_name(path)
        imports = _import_map(module, tree)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = []
                for base in node.bases:
                    text = ast.unparse(base)
                    root, _, rest = text.partition(".")
                    target = imports.get(root, f"{module}.{root}")
                    bases.append(f"{target}.{rest}" if rest else target)
                classes[f"{module}.{node.name}"] = bases
    return classes


CLASS_BASES = _class_bases()


def _aioquic_derived(module: str, class_name: str) -> bool:
    """Does ``module.class_name`` derive, directly or through our classes, from an aioquic class?"""
    todo, seen = [f"{module}.{class_name}"], set()
    while todo:
        name = todo.pop()
        if name.startswith("aioquic."):
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(CLASS_BASES.get(name, []))
    return False


def _uses(path: Path, tree: ast.Module) -> Iterator[Use]:
    module = _module_name(path)

    def visit(node: ast.AST, derived: bool) -> Iterator[Use]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                inner = derived or _aioquic_derived(module, child.name)
                for item in child.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(item.name):
                        yield Use(path, item.lineno, item.name, True, "def", inner)
                yield from visit(child, inner)
                continue
            if isinstance(child, ast.Attribute) and _is_private(child.attr):
                receiver = ast.unparse(child.value)
                yield Use(path, child.lineno, child.attr, receiver in ("self", "cls"), receiver, derived)
            yield from visit(child, derived)

    yield from visit(tree, False)


def _aioquic_private_names() -> set[str]:
    """Every ``_`` name aioquic's own source defines or uses."""
    names: set[str] = set()
    for _path, tree in _sources(AIOQUIC):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(node.name):
                names.add(node.name)
    return names


def _aioquic_class_private_names(module: str, class_name: str) -> set[str]:
    """The ``_`` names of the aioquic classes a class of ours derives from."""
    cls = getattr(importlib.import_module(module), class_name)
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("aioquic."):
            for node in ast.walk(ast.parse(inspect.getsource(klass))):
                if isinstance(node, ast.Attribute) and _is_private(node.attr):
                    names.add(node.attr)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(node.name):
                    names.add(node.name)
    return names


def _own_private_names() -> set[str]:
    """``_`` attributes and methods that ptproxy's own classes define (outside the aioquic layer)."""
    names: set[str] = set()
    for path, tree in _sources(PACKAGE):
        if LAYER in path.parents:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(node.name):
                names.add(node.name)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and ast.unparse(node.value) == "self"
                and _is_private(node.attr)
            ):
                names.add(node.attr)
    return names


DECLARED = {entry.name for entry in PRIVATE}


def _label(entry: Internal) -> str:
    return f"{entry.owner}.{entry.name}"


# -- (a) each declared name against the pinned aioquic --------------------------------------------


def test_aioquic_is_the_pinned_version() -> None:
    assert aioquic.__version__ == "1.7.2", "tunnel/aioquic/ was written against 1.7.2: re-audit it"


@pytest.fixture(scope="module")
def instances() -> dict[str, Any]:
    return internals.build_instances()


@pytest.mark.parametrize("entry", PRIVATE + UNDOCUMENTED, ids=_label)
def test_declared_name_holds_in_aioquic(entry: Internal, instances: dict[str, Any]) -> None:
    assert list(problems(entry, instances)) == []


def test_runtime_check_uses_the_same_declaration() -> None:
    assert internals.check_internals() == []


def test_the_checks_catch_a_moved_name() -> None:
    qc = "quic.connection.QuicConnection"
    assert list(problems(Internal(qc, "_no_such_attribute", "attribute")))
    assert list(problems(Internal(qc, "_no_such_method", "method", ((),))))
    # Right name, wrong arguments: _write_stream_limits takes (builder, space, stream).
    assert list(problems(Internal(qc, "_write_stream_limits", "override", (("builder=", "packet="),))))
    assert list(problems(Internal("quic.nonexistent_module", "X", "name")))


def test_every_method_declares_how_it_is_called() -> None:
    for entry in PRIVATE + UNDOCUMENTED:
        if entry.kind in ("method", "override"):
            assert entry.calls, f"{_label(entry)}: say how it is called"
        else:
            assert not entry.calls, f"{_label(entry)}: only methods are called"


def _our_overrides() -> Iterator[tuple[Internal, Any]]:
    """(declared override, our method overriding it) for each subclass in the layer."""
    for path, tree in _sources(LAYER):
        module = importlib.import_module(_module_name(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or not _aioquic_derived(module.__name__, node.name):
                continue
            cls = getattr(module, node.name)
            for entry in PRIVATE:
                if entry.kind == "override" and entry.name in cls.__dict__:
                    assert issubclass(cls, internals.resolve(entry.owner)), (cls, entry)
                    yield entry, cls.__dict__[entry.name]


def test_our_overrides_accept_what_aioquic_passes() -> None:
    seen = set()
    for entry, method in _our_overrides():
        seen.add(entry.name)
        for call in entry.calls:
            assert bind_call(method, call) is None, f"our {entry.name} rejects aioquic's call {call}"
    overrides = {entry.name for entry in PRIVATE if entry.kind == "override"}
    assert seen == overrides, f"declared as overridden but not overridden: {overrides - seen}"


# -- (b) the declaration matches the code ----------------------------------------------------------


def _layer_uses() -> list[Use]:
    uses = []
    for path, tree in _sources(LAYER):
        for use in _uses(path, tree):
            if use.name.startswith("_ptp_"):
                continue  # our own attributes on aioquic objects, prefixed so they never clash
            if use.on_self and not use.aioquic_class:
                continue  # a private attribute of one of our own classes
            if use.receiver == "def" and not use.aioquic_class:
                continue
            uses.append(use)
    return uses


def test_every_private_name_the_layer_uses_is_declared() -> None:
    undeclared = [str(use) for use in _layer_uses() if use.name not in DECLARED]
    assert undeclared == [], "declare these in tunnel/aioquic/internals.py:\n" + "\n".join(undeclared)


def test_every_declared_name_is_used() -> None:
    # internals.py itself only builds objects to check: it does not count as a use.
    used = {use.name for use in _layer_uses() if use.path.name != "internals.py"}
    assert sorted(DECLARED - used) == [], "declared but unused: drop them from internals.py"


def test_no_private_aioquic_name_outside_the_layer() -> None:
    aioquic_names = _aioquic_private_names()
    ours = _own_private_names()
    offenders = []
    for path, tree in _sources(PACKAGE):
        if LAYER in path.parents:
            continue
        module = _module_name(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aioquic"):
                parts = (node.module or "").split(".") + [a.name for a in node.names]
                if any(_is_private(p) for p in parts):
                    offenders.append(f"{path}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("aioquic") and any(_is_private(p) for p in alias.name.split(".")):
                        offenders.append(f"{path}:{node.lineno}: import {alias.name}")
            elif isinstance(node, ast.ClassDef) and _aioquic_derived(module, node.name):
                theirs = _aioquic_class_private_names(module, node.name)
                for use in _uses(path, ast.Module(body=node.body, type_ignores=[])):
                    if use.name in theirs and use.on_self:
                        offenders.append(str(use))
        for use in _uses(path, tree):
            if use.on_self or use.receiver == "def" or use.name not in aioquic_names:
                continue
            # A name ptproxy also defines is only suspect on a receiver that holds aioquic objects.
            last = use.receiver.rsplit(".", 1)[-1]
            if use.name not in ours or last in AIOQUIC_RECEIVERS or use.receiver.startswith("super()"):
                offenders.append(str(use))
    assert offenders == [], "move these into tunnel/aioquic/:\n" + "\n".join(sorted(set(offenders)))
