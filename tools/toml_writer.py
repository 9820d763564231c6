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


def to_toml(doc: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for table, fields in doc.items():
        out.append(f"[{table}]")
        out += [f"{key} = {toml_value(value)}" for key, value in fields.items()]
        out.append("")
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
