"""Dataclasses' generated methods compiled once, not at every start.

Start-up (issue 12 item 8): ``@dataclass`` writes each class's ``__init__``, ``__repr__``,
``__eq__``... as source text and compiles it with ``exec`` while the class is made. An end makes
~45 dataclasses as it starts (36 of them aioquic's), ~150 such texts, and compiling them was the
largest single cost left in an end's start-up (callgrind: parser and compiler ~3M instructions per
class). The text depends only on the class's fields and options, so for a given aioquic (and
ptproxy) it is the same at every start.

:func:`install` (``python -m ptproxy``, before anything it imports makes a dataclass) gives the
``dataclasses`` module an ``exec`` of its own that looks the text up in a table of code objects
loaded from ``__pycache__`` beside this module and compiles (as ``exec`` would: ``"<string>"``,
no inherited future flags) only what is not in it; :func:`finish` (the end serves, or the command
line is done: ops/startup.py) removes it and, if anything was compiled and bytecode may be written
(``sys.dont_write_bytecode``, as for ``.pyc`` files), writes the table back. A missing, unreadable
or foreign table (another interpreter's magic number or optimisation level) is simply not used,
and an unwritable directory leaves things as before: dataclasses compile their text themselves.
``python -m ptproxy.ops.dataclasscode`` writes the table for both ends' start-up imports
(benchmarks/harness/procs.py compile_package does, as it writes the ``.pyc`` files).

The classes are the ones ``dataclasses`` makes: the same text compiled the same way gives an equal
code object, run with the same globals and closure values (tests/unit/test_dataclasscode.py
compares every start-up dataclass with a fresh interpreter's).
"""

from __future__ import annotations

import builtins
import dataclasses
import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER
from types import CodeType
from typing import Any

__all__ = ["CodeTable", "finish", "install", "table_path"]

_MAX_ENTRIES = 4096  # past this, a written table keeps only what this run used


def table_path() -> str:
    """Where the table lives: beside this module's bytecode, named for the interpreter."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "__pycache__", f"dataclasses.{sys.implementation.cache_tag}.bin")


def _header() -> tuple[bytes, int]:
    return (MAGIC_NUMBER, sys.flags.optimize)


class CodeTable:
    """Code objects by source text, read from and written to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.codes: dict[str, CodeType] = self._load()
        self.used: set[str] = set()
        self.compiled = 0  # texts compiled (not found in the table) since made

    def _load(self) -> dict[str, CodeType]:
        try:
            with open(self.path, "rb") as f:
                header, codes = marshal.loads(f.read())
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if header != _header() or type(codes) is not dict:
            return {}
        for text, code in codes.items():
            if type(text) is not str or type(code) is not CodeType:
                return {}
        return codes

    def code(self, text: str) -> CodeType:
        """``text`` compiled as ``exec(text, ...)`` from a module without future imports compiles it."""
        code = self.codes.get(text)
        if code is None:
            code = self.codes[text] = compile(text, "<string>", "exec", dont_inherit=True)
            self.compiled += 1
        self.used.add(text)
        return code

    def exec(self, source: Any, globals: Any = None, locals: Any = None, /, **kwargs: Any) -> None:
        """``exec`` with a source text's code taken from the table."""
        if globals is None:  # dataclasses always passes its globals; exec's own default otherwise
            frame = sys._getframe(1)
            globals = frame.f_globals
            if locals is None:
                locals = frame.f_locals
        if type(source) is str:
            source = self.code(source)
        builtins.exec(source, globals, locals, **kwargs)

    def save(self) -> None:
        """Write the table (atomically; an unwritable directory is left alone)."""
        codes = self.codes
        if len(codes) > _MAX_ENTRIES:
            codes = {text: codes[text] for text in self.used}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(temporary, "wb") as f:
                f.write(marshal.dumps((_header(), codes)))
            os.replace(temporary, self.path)
        except OSError:
            try:
                os.unlink(temporary)
            except OSError:
                pass


_installed: list[CodeTable] = []


def install(path: str | None = None) -> CodeTable:
    """Dataclasses made from now on take their methods' code from the table at ``path``
    (:func:`table_path` by default)."""
    if _installed:
        return _installed[0]
    table = CodeTable(table_path() if path is None else path)
    dataclasses.exec = table.exec  # type: ignore[attr-defined]  # shadows the builtin in that module
    _installed.append(table)
    return table


def finish(*, save: bool | None = None) -> None:
    """Dataclasses compile their own text again; the table written if it gained code (and ``save``,
    by default when bytecode may be written). Nothing happens if :func:`install` was not called."""
    if not _installed:
        return
    table = _installed.pop()
    if dataclasses.__dict__.get("exec") == table.exec:
        del dataclasses.exec  # type: ignore[attr-defined]
    if save is None:
        save = not sys.dont_write_bytecode
    if save and table.compiled:
        table.save()


# What an end imports as it starts (both ends): ``python -m ptproxy.ops.dataclasscode`` writes
# their dataclasses' table, whatever PYTHONDONTWRITEBYTECODE says.
START_UP_MODULES = (
    "ptproxy.ops.cli",
    "ptproxy.ops.app",
    "ptproxy.tunnel.session",
    "ptproxy.server.listener",
    "ptproxy.server.origin",
    "ptproxy.client.listener",
)


def _write_table() -> int:
    import importlib

    table = install()
    try:
        for name in START_UP_MODULES:
            importlib.import_module(name)
    finally:
        finish(save=True)
    print(f"{table.path}: {len(table.used)} texts, {table.compiled} compiled")
    return 0


if __name__ == "__main__":
    raise SystemExit(_write_table())
