"""Integration fixtures over tests/support/pair.py: real ``python -m ptproxy`` processes, a real
origin process.

- ``origin``: the test origin (tools/origin_server.py) as its own process, shared by the whole
  session; ``origin.port``, ``origin.log()`` (what reached it).
- ``make_pair(client_overrides, server_overrides, client_cert=, server_cert=, ...)``: writes a
  client.toml and a server.toml (relative certificate paths, so path resolution is exercised;
  the processes run from another directory), starts the server end, then the client end, waits
  for ``tunnel ready`` in the client's log (unless ``wait=False``) and returns a :class:`Pair`.
- ``pair``: one default pair shared by the tests that only send traffic through it (starting a
  pair costs a few seconds on a small VM); each test still gets the defect check below.

Every process's stderr goes to a file. On teardown both ends get SIGINT (then SIGKILL after a
timeout) and the test fails if any log holds a traceback or an asyncio "never retrieved" report:
an expected failure must be one log line, so a traceback is a defect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.devcerts import DemoPki, LeafFiles
from tests.support.pair import OriginProcess, Pair, build_pair, defects


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginProcess]:
    proc = OriginProcess(tmp_path_factory.mktemp("origin"))
    yield proc
    proc.close()
    found = defects(proc.stderr())
    if found:
        pytest.fail(f"test origin logged {found}:\n{proc.stderr()[-3000:]}")


# -- pairs --------------------------------------------------------------------------------------


@pytest.fixture()
def make_pair(tmp_path: Path, pki: DemoPki, origin: OriginProcess) -> Iterator[Callable[..., Pair]]:
    pairs: list[Pair] = []

    def factory(
        client_overrides: dict[str, Any] | None = None,
        server_overrides: dict[str, Any] | None = None,
        *,
        pki: DemoPki = pki,
        client_cert: LeafFiles | None = None,
        server_cert: LeafFiles | None = None,
        client_ca: Path | None = None,
        server_ca: Path | None = None,
        origin_port: int | None = None,
        wait: bool = True,
        start_server: bool = True,
    ) -> Pair:
        directory = tmp_path / f"pair{len(pairs) + 1}"
        pair = build_pair(
            directory,
            pki,
            origin.port if origin_port is None else origin_port,
            client_overrides,
            server_overrides,
            client_cert=client_cert,
            server_cert=server_cert,
            client_ca=client_ca,
            server_ca=server_ca,
        )
        pairs.append(pair)
        if start_server:
            pair.start_server(wait=wait)
        pair.start_client(wait=wait and start_server)
        return pair

    yield factory
    problems = [p for pair in pairs for p in pair.teardown()]
    if problems:
        pytest.fail("\n\n".join(problems))


class _Shared:
    pair: Pair | None = None


@pytest.fixture(scope="session")
def _shared_pair(
    tmp_path_factory: pytest.TempPathFactory, pki: DemoPki, origin: OriginProcess
) -> Iterator[_Shared]:
    holder = _Shared()
    base = tmp_path_factory.mktemp("shared-pair")
    generation = 0

    def fresh() -> Pair:
        nonlocal generation
        generation += 1
        pair = build_pair(base / f"g{generation}", pki, origin.port)
        pair.start_server()
        pair.start_client()
        return pair

    holder.fresh = fresh  # type: ignore[attr-defined]
    yield holder
    if holder.pair is not None:
        problems = holder.pair.teardown()
        if problems:
            pytest.fail("\n\n".join(problems))


@pytest.fixture()
def pair(_shared_pair: _Shared) -> Iterator[Pair]:
    """The shared default pair (tests must leave it running); checked for defects after each test."""
    if _shared_pair.pair is None or not _shared_pair.pair.alive():
        if _shared_pair.pair is not None:
            _shared_pair.pair.teardown()
        _shared_pair.pair = _shared_pair.fresh()  # type: ignore[attr-defined]
    p = _shared_pair.pair
    before = (len(p.client_log()), len(p.server_log()))
    yield p
    time.sleep(0.05)
    new = p.client_log()[before[0] :] + p.server_log()[before[1] :]
    found = defects(new)
    if found:
        pytest.fail(f"an end logged {found} during this test:\n{p.logs()}")
    if not p.alive():
        pytest.fail(f"an end of the shared pair died during this test:\n{p.logs()}")
