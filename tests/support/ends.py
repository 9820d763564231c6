"""More processes than one pair: extra test origins and extra server ends beside a
:class:`~tests.support.pair.Pair` (routes to several origins, client-end failover between server
ends). Each extra server end is its own ``python -m ptproxy`` with its own TOML file, sharing the
pair's certificates; it binds another loopback address with the same ``quic_port``, since
``connect_address`` names hosts and every server end listens on the one port.
"""

from __future__ import annotations

import json
import signal
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.pair import READY_TIMEOUT, End, OriginProcess, Pair, defects, wait_for
from tools.toml_writer import merge, to_toml

__all__ = [
    "add_server_end",
    "echo",
    "get",
    "origin_targets",
    "start_origins",
    "start_server_end",
    "stop_ends",
    "wait_log",
]


def start_origins(directory: Path, count: int) -> list[OriginProcess]:
    """``count`` test origins, each its own process (and log) in a directory of its own."""
    origins = []
    for i in range(count):
        where = directory / f"origin{i + 1}"
        where.mkdir(parents=True, exist_ok=True)
        origins.append(OriginProcess(where))
    return origins


def origin_targets(origin: OriginProcess, marker: str) -> list[str]:
    """The targets that reached ``origin`` and contain ``marker``."""
    return [e["target"] for e in origin.entries(marker)]


def add_server_end(pair: Pair, name: str, overrides: dict[str, Any]) -> End:
    """Another server end: the pair's server.toml with ``overrides`` merged in (certificate
    paths stay relative to the same directory); not started."""
    base = tomllib.loads(pair.server_toml.read_text())
    path = pair.server_toml.parent / f"{name}.toml"
    path.write_text(to_toml(merge(base, overrides)))
    return End(name, path, pair.client.rundir)


def wait_log(end: End, text: str, *, count: int = 1, timeout: float = READY_TIMEOUT) -> bool:
    """Whether ``text`` appears ``count`` times in ``end``'s logs (all runs) within ``timeout``."""
    return bool(wait_for(lambda: end.log().count(text) >= count, timeout))


def start_server_end(end: End, timeout: float = READY_TIMEOUT) -> None:
    """Start a server end and wait for its endpoint (its current run's log)."""
    end.start()
    ok = wait_for(lambda: "started endpoint at" in end.current_log() or not end.running, timeout)
    if not ok or not end.running:
        pytest.fail(f"{end.name} did not start:\n{end.current_log()[-3000:]}")


def stop_ends(ends: list[End]) -> list[str]:
    """Stop the ends still running; the defects their logs show (as Pair.teardown)."""
    for end in ends:
        if end.running:
            end.stop(signal.SIGINT, timeout=10.0)
    return [f"{e.name} logged {defects(e.log())}:\n{e.log()[-4000:]}" for e in ends if defects(e.log())]


def get(port: int, target: str, headers: dict[str, str] | None = None, timeout: float = 20.0) -> int:
    """GET through a client listener; the status (an HTTP error status too, not an exception)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{target}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def echo(port: int, target: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``/echo`` through a client listener: what the origin received (JSON)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{target}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=20) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc
