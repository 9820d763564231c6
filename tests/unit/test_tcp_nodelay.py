"""``system.tcp_nodelay`` on real loopback sockets, under both event loops (asyncio's and uvloop):
the option read back from the socket the end holds. Both loops set TCP_NODELAY on every TCP socket
they wrap, so ``tcp_nodelay = false`` has to clear it (it once left Nagle off all the same)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from ptproxy.client.dialer import Dialer
from ptproxy.client.listener import Frontend
from ptproxy.h1conn import H1Connection, WriteFlow
from ptproxy.ops.config import parse
from ptproxy.splice import SocketEnd
from tests.support.pair import free_port
from tests.unit.test_frontend_shutdown import CONFIG as SHUTDOWN_CONFIG

# The shutdown test's client end (no tunnel, never dials) with the option set.
CONFIG = SHUTDOWN_CONFIG + "[system]\ntcp_nodelay = {nodelay}\n"

LOOPS: dict[str, Callable[[Coroutine[Any, Any, int]], int]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def _nodelay(transport: asyncio.BaseTransport | None) -> int:
    assert transport is not None
    sock = transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class Recording(Frontend):
    """Keeps the protocol of each connection it accepts."""

    accepted: list[H1Connection]

    def _new_connection(self) -> H1Connection:
        conn = super()._new_connection()
        self.accepted.append(conn)
        return conn


async def _frontend_accepted(nodelay: bool) -> int:
    text = CONFIG.format(connect=json.dumps("127.0.0.1:9"), port=free_port(), nodelay=json.dumps(nodelay))
    config = parse(text, path=Path("/etc/ptproxy/client.toml"))
    dialer = Dialer(SimpleNamespace(config=config))  # type: ignore[arg-type]  # never dials here
    frontend = Recording(config, dialer)
    frontend.accepted = []
    await frontend.start()
    port = frontend.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(500):
            if frontend.accepted and frontend.accepted[0]._transport is not None:
                break
            await asyncio.sleep(0.01)
        return _nodelay(frontend.accepted[0]._transport)
    finally:
        writer.close()
        await frontend.close(grace=0)


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("nodelay", [True, False])
def test_accepted_client_connection_follows_the_option(loop: str, nodelay: bool) -> None:
    assert LOOPS[loop](_frontend_accepted(nodelay)) == int(nodelay)


def _held(end: WriteFlow) -> asyncio.BaseTransport | None:
    return end._transport if isinstance(end, H1Connection) else end.transport  # type: ignore[attr-defined]


async def _protocol_sockets(factory: Callable[[], WriteFlow]) -> int:
    """A connection made by the loop with ``factory``'s protocol on both sides (an origin
    connection, a splice's socket): both sockets' TCP_NODELAY, which must agree (returned once)."""
    loop = asyncio.get_running_loop()
    accepted: list[WriteFlow] = []

    def accept() -> WriteFlow:
        accepted.append(factory())
        return accepted[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(factory, "127.0.0.1", port)
    try:
        for _ in range(500):
            if accepted and _held(accepted[0]) is not None:
                break
            await asyncio.sleep(0.01)
        held = _held(accepted[0])
        values = {_nodelay(transport), _nodelay(held)}
        assert len(values) == 1, values
        return values.pop()
    finally:
        transport.close()
        for end in accepted:
            other = _held(end)
            if other is not None:
                other.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("nodelay", [True, False])
@pytest.mark.parametrize("kind", ["h1", "splice"])
def test_origin_and_splice_sockets_follow_the_option(loop: str, nodelay: bool, kind: str) -> None:
    def factory() -> WriteFlow:
        return H1Connection(tcp_nodelay=nodelay) if kind == "h1" else SocketEnd(tcp_nodelay=nodelay)

    assert LOOPS[loop](_protocol_sockets(factory)) == int(nodelay)
