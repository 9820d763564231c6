"""ptproxy/ops/dataclasscode.py: start-up's dataclasses take their generated methods' code from a
table, and are the classes ``dataclasses`` makes by itself (compared with a fresh interpreter's)."""

from __future__ import annotations

import dataclasses
import json
import marshal
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops import dataclasscode
from ptproxy.ops.dataclasscode import START_UP_MODULES, CodeTable
from tests.support.fresh import run_fresh

# Describes every dataclass in the modules the snippet imported: fields, options, docstring, the
# generated functions' code (structure, constants, names, defaults, closure values) and, where the
# class can be made without arguments, an instance's repr and equality.
DESCRIBE = """
import dataclasses, importlib, json, re, sys, types

def sanitise(text):
    return re.sub(r" at 0x[0-9a-f]+", "", text)

def code_key(code):
    return [code.co_name, code.co_qualname, code.co_filename, code.co_firstlineno, code.co_argcount,
            code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags, code.co_code.hex(),
            code.co_linetable.hex(), code.co_exceptiontable.hex(), list(code.co_names),
            list(code.co_varnames), list(code.co_freevars), list(code.co_cellvars),
            [code_key(c) if isinstance(c, types.CodeType) else sanitise(repr(c)) for c in code.co_consts]]

def describe(cls):
    out = {"doc": cls.__doc__, "params": sanitise(repr(cls.__dataclass_params__)),
           "match_args": repr(getattr(cls, "__match_args__", None)), "slots": "__slots__" in cls.__dict__,
           "fields": [sanitise(repr(f)) for f in dataclasses.fields(cls)], "functions": {}}
    for name, value in sorted(cls.__dict__.items()):
        code = getattr(value, "__code__", None)
        if code is not None and code.co_filename == "<string>":
            cells = [sanitise(repr(c.cell_contents)) for c in (value.__closure__ or ())]
            out["functions"][name] = [code_key(code), cells, sanitise(repr(value.__defaults__)),
                                      sanitise(repr(value.__kwdefaults__)), value.__qualname__,
                                      sanitise(repr(value.__annotations__))]
    try:
        one, two = cls(), cls()
    except Exception as e:
        out["instance"] = type(e).__name__
    else:
        out["instance"] = [sanitise(repr(one)), one == two]
    return out

def describe_all():
    found = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith(("ptproxy", "aioquic", "cryptography")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = describe(value)
    return found
"""


def _import_all(table: Path | None) -> tuple[dict[str, Any], int]:
    install = "" if table is None else f"from ptproxy.ops import dataclasscode\ntable = dataclasscode.install({str(table)!r})\n"
    finish = "" if table is None else "dataclasscode.finish(save=True)\ncompiled = table.compiled\n"
    code = f"""
{install}
for name in {START_UP_MODULES!r}:
    importlib.import_module(name)
compiled = -1
{finish}
print(json.dumps({{"classes": describe_all(), "compiled": compiled}}))
"""
    out = json.loads(run_fresh(code, Path.cwd(), preamble=DESCRIBE))
    return out["classes"], out["compiled"]


def test_start_up_dataclasses_are_those_dataclasses_makes_itself(tmp_path: Path) -> None:
    table = tmp_path / "table.bin"
    plain, _ = _import_all(None)
    first, compiled_first = _import_all(table)  # no table yet: every text compiled, then written
    second, compiled_second = _import_all(table)  # all taken from the table
    assert compiled_first > 100 and table.is_file()
    assert compiled_second == 0
    assert len(plain) > 40 and any(name.startswith("aioquic.") for name in plain)
    assert sum(len(c["functions"]) for c in plain.values()) > 100
    assert first == plain
    assert second == plain


def test_the_command_line_takes_its_dataclasses_code_from_the_table_and_puts_it_away(tmp_path: Path) -> None:
    out = run_fresh(
        """
        import dataclasses, sys
        sys.argv = ["ptproxy", "--version"]
        from ptproxy.ops import dataclasscode
        seen = []
        real_install = dataclasscode.install
        def install(path=None):
            table = real_install(path)
            seen.append(table)
            return table
        dataclasscode.install = install
        from ptproxy.__main__ import main
        try:
            main()
        except SystemExit:
            pass
        print("installed", len(seen), "removed", "exec" not in vars(dataclasses), "left", dataclasscode._installed)
        """,
        tmp_path,
    )
    assert "installed 1 removed True left []" in out


def test_a_table_is_used_only_by_the_interpreter_that_wrote_it(tmp_path: Path) -> None:
    text = "def __create_fn__():\n def f(x):\n  return x + 1\n return f"
    path = tmp_path / "t.bin"
    table = CodeTable(str(path))
    assert table.codes == {}
    table.code(text)
    table.save()
    again = CodeTable(str(path))
    assert list(again.codes) == [text] and again.code(text) == compile(text, "<string>", "exec", dont_inherit=True)
    assert again.compiled == 0
    (header_magic, optimize), codes = marshal.loads(path.read_bytes())
    path.write_bytes(marshal.dumps(((b"????", optimize), codes)))
    assert CodeTable(str(path)).codes == {}
    path.write_bytes(marshal.dumps(((header_magic, optimize + 1), codes)))
    assert CodeTable(str(path)).codes == {}
    path.write_bytes(b"not marshal")
    assert CodeTable(str(path)).codes == {}
    path.write_bytes(marshal.dumps(((header_magic, optimize), {text: "not code"})))
    assert CodeTable(str(path)).codes == {}


def test_an_unwritable_place_leaves_dataclasses_working(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    table = dataclasscode.install(str(blocker / "sub" / "t.bin"))
    try:

        @dataclasses.dataclass(frozen=True)
        class Point:
            x: int
            y: int = 2

        assert table.compiled > 0
    finally:
        dataclasscode.finish(save=True)  # the directory cannot be made: nothing written, no error
    assert "exec" not in vars(dataclasses)
    assert Point(1) == Point(1, 2) and repr(Point(1)) == "test_an_unwritable_place_leaves_dataclasses_working.<locals>.Point(x=1, y=2)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Point(1).x = 3  # type: ignore[misc]
    assert list(tmp_path.iterdir()) == [blocker]


def test_exec_without_globals_runs_in_the_callers_namespace(tmp_path: Path) -> None:
    table = CodeTable(str(tmp_path / "t.bin"))
    namespace: dict[str, object] = {"y": 41}
    table.exec("x = y + 1", namespace)
    assert namespace["x"] == 42
    local: dict[str, object] = {}
    table.exec("z = dataclasses.MISSING", None, local)  # this module's globals
    assert local["z"] is dataclasses.MISSING and "z" not in globals()
    assert table.compiled == 2


def test_finish_without_install_does_nothing() -> None:
    dataclasscode.finish()
    assert "exec" not in vars(dataclasses)
