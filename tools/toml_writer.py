"""The one ptproxy TOML writer shared by the tests and the benchmarks (both write configs for real
``python -m ptproxy`` processes): values → TOML, tables → a document, deep merge of overrides."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["merge", "to_toml", "toml_value"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(name: str, fields: dict[str, Any], header: str) -> list[str]:
    """One table (``[name]`` or ``[[name]]``): its scalar keys, then its sub-tables."""
    out = [header]
    nested = {k: v for k, v in fields.items() if isinstance(v, dict) or _is_tables(v)}
    out += [f"{key} = {toml_value(value)}" for key, value in fields.items() if key not in nested]
    out.append("")
    for key, value in nested.items():
        if isinstance(value, dict):
            out += _table(f"{name}.{key}", value, f"[{name}.{key}]")
        else:
            for item in value:
                out += _table(f"{name}.{key}", item, f"[[{name}.{key}]]")
    return out


def to_toml(doc: dict[str, Any]) -> str:
    """Tables as ``[table]``, lists of tables (``routes``) as ``[[routes]]``, nested as dotted."""
    out: list[str] = []
    for table, fields in doc.items():
        if _is_tables(fields):
            for item in fields:
                out += _table(table, item, f"[[{table}]]")
        else:
            out += _table(table, fields, f"[{table}]")
    return "\n".join(out)


def merge(base: dict[str, Any], overrides: dict[str, Any] | str | None) -> dict[str, Any]:
    """Deep-merge ``overrides`` (a dict, or TOML text) into a copy of ``base``; a None value
    deletes the key (how a test leaves a field out of the file)."""
    if isinstance(overrides, str):
        overrides = tomllib.loads(overrides)
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
