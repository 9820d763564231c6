"""Origin connections opened ahead of the requests (server/pool.py, server/origin.py): the server
end connects to its origin when a peer's session is established, so the first request finds an
idle connection, and keeps one across a silence while a session is up; a failure there is only
logged at debug and changes nothing a request sees."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops.config import parse
from ptproxy.server.origin import Backend
from ptproxy.server.pool import OriginConnectError, OriginPool


class CountingOrigin:
    """A TCP listener on 127.0.0.1 that counts (and holds) the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)

    def close_connections(self) -> None:
        for writer in self.writers:
            writer.close()

    async def close(self) -> None:
        self.close_connections()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _pool(port: int, *, max_idle: int = 10, idle_timeout: float = 30.0) -> OriginPool:
    return OriginPool(
        "127.0.0.1", port, tcp_nodelay=True, max_idle=max_idle, idle_timeout=idle_timeout, connect_timeout=5.0
    )


async def _until(pred: Callable[[], bool], what: str) -> None:
    """Poll the loop until ``pred()`` (a generous bound: a hang fails, a slow machine does not)."""
    for _ in range(2000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_warm_opens_one_connection_that_the_first_request_takes() -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start())
        pool.warm()
        pool.warm()  # one is being opened: no second
        await _until(lambda: bool(pool._idle), "warmed")
        await asyncio.sleep(0.05)
        assert origin.accepted == 1
        assert len(pool._idle) == 1
        pool.warm()  # one is idle: nothing more
        conn = await pool.acquire()
        await asyncio.sleep(0.05)
        assert origin.accepted == 1  # the request took the warmed connection
        assert not conn.is_closed
        pool.release(conn)
        pool.close()
        await origin.close()

    asyncio.run(main())


def test_a_request_during_the_warm_connect_takes_it_over() -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start())
        pool.warm()
        conn = await pool.acquire()  # at once: the connect is still in flight
        await asyncio.sleep(0.05)
        assert origin.accepted == 1
        assert pool._idle == []  # the request has it, not the idle list
        pool.release(conn)
        assert len(pool._idle) == 1
        pool.close()
        await origin.close()

    asyncio.run(main())


def test_a_failed_warm_connect_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nothing listens there: refused

    async def main() -> None:
        pool = _pool(port)
        pool.warm()
        await _until(lambda: pool._warming is None, "warm attempt ended")
        assert pool._idle == []
        with pytest.raises(OriginConnectError) as info:
            await pool.acquire()  # the request connects itself and reports what it finds
        assert "failed" in str(info.value)
        pool.close()

    with caplog.at_level(logging.DEBUG, logger="ptproxy.origin"):
        asyncio.run(main())
    warm_records = [r for r in caplog.records if "ahead of requests" in r.getMessage()]
    assert warm_records and all(r.levelno == logging.DEBUG for r in warm_records)


def test_a_request_that_took_a_failing_warm_connect_gets_the_connect_error() -> None:
    port = _free_port()

    async def main() -> None:
        pool = _pool(port)
        pool.warm()
        with pytest.raises(OriginConnectError):
            await pool.acquire()
        pool.close()

    asyncio.run(main())


def test_no_warm_connection_when_the_pool_keeps_none_idle() -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start(), max_idle=0)
        pool.warm()
        await asyncio.sleep(0.05)
        assert origin.accepted == 0
        pool.close()
        await origin.close()

    asyncio.run(main())


def test_close_during_the_warm_connect_keeps_nothing() -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start())
        pool.warm()
        pool.close()
        await asyncio.sleep(0.05)
        assert pool._idle == []
        pool.warm()  # closed: nothing
        await asyncio.sleep(0.05)
        assert origin.accepted <= 1
        await origin.close()

    asyncio.run(main())


@pytest.mark.parametrize("tunnel_up", [True, False])
def test_an_aged_idle_connection_is_replaced_while_a_tunnel_is_up(tunnel_up: bool) -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start(), idle_timeout=0.05)
        pool.keep_warm = lambda: tunnel_up
        conn = await pool.acquire()
        pool.release(conn)
        await _until(lambda: conn.is_closed, "aged connection evicted")
        if tunnel_up:
            await _until(lambda: origin.accepted == 2 and bool(pool._idle), "replaced")
            pool.keep_warm = lambda: False  # stop renewing, so the count settles
        else:
            await asyncio.sleep(0.1)
            assert pool._idle == []
            assert origin.accepted == 1
        pool.close()
        await origin.close()

    asyncio.run(main())


def test_a_connection_the_origin_closed_is_not_replaced() -> None:
    async def main() -> None:
        origin = CountingOrigin()
        pool = _pool(await origin.start(), idle_timeout=0.1)
        pool.keep_warm = lambda: True
        conn = await pool.acquire()
        pool.release(conn)
        origin.close_connections()  # the origin does not keep idle connections that long
        await _until(lambda: conn.at_eof or conn.is_closed, "origin's close seen")
        await _until(lambda: pool._reaper is None, "evicted")
        await asyncio.sleep(0.05)
        assert origin.accepted == 1
        assert pool._idle == []
        pool.close()
        await origin.close()

    asyncio.run(main())


# -- the server end: when it warms ---------------------------------------------------------------


class FakeSession:
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()


def _backend(default_port: int, named_port: int, limits: str = "") -> Backend:
    text = f"""
[general]
mode = "Server"
peer_hostname = "client.example.com"
quic_port = 4433
http_connect_address = "127.0.0.1:{default_port}"
[[routes]]
name = "other"
origins = ["127.0.0.1:{named_port}"]
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
[limits]
{limits}
"""
    return Backend(parse(text, path=Path("/etc/ptproxy/server.toml")), lambda: ("127.0.0.1", 4433))


def test_an_established_session_warms_the_default_route_only() -> None:
    async def main() -> None:
        default, named = CountingOrigin(), CountingOrigin()
        default_port = await default.start()
        backend = _backend(default_port, await named.start())
        session = FakeSession()
        backend.track(session)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert default.accepted == 0  # not before the handshake completed
        session.confirmed.set_result(None)
        await _until(lambda: default.accepted == 1, "default route's origin connected")
        await asyncio.sleep(0.05)
        # A named route may be a TCP stream route: its origin gets no HTTP connection unasked.
        assert named.accepted == 0
        pool = backend.routes["default"].origins[("127.0.0.1", default_port)].pool
        await _until(lambda: bool(pool._idle), "idle")
        assert pool.keep_warm is not None and pool.keep_warm()
        session.closed.set_result("closed")
        await asyncio.sleep(0)
        assert not pool.keep_warm()  # no session up: an aged connection is not replaced
        backend.close()
        await default.close()
        await named.close()

    asyncio.run(main())


def test_origin_preconnect_false_opens_nothing_ahead_of_the_requests() -> None:
    async def main() -> None:
        default, named = CountingOrigin(), CountingOrigin()
        default_port = await default.start()
        backend = _backend(default_port, await named.start(), "origin_preconnect = false")
        pool = backend.routes["default"].origins[("127.0.0.1", default_port)].pool
        assert pool.keep_warm is None  # an aged idle connection is not replaced either
        session: Any = FakeSession()
        backend.track(session)
        session.confirmed.set_result(None)
        backend.warm()
        await asyncio.sleep(0.05)
        assert default.accepted == 0
        assert named.accepted == 0
        conn = await pool.acquire()  # a request connects on demand, as without a session
        await _until(lambda: default.accepted == 1, "connected on demand")
        pool.release(conn)
        backend.close()
        await default.close()
        await named.close()

    asyncio.run(main())


def test_a_failed_handshake_warms_nothing() -> None:
    async def main() -> None:
        default, named = CountingOrigin(), CountingOrigin()
        backend = _backend(await default.start(), await named.start())
        session = FakeSession()
        backend.track(session)  # type: ignore[arg-type]
        session.confirmed.set_exception(ConnectionError("handshake failed"))
        await asyncio.sleep(0.05)
        assert default.accepted == 0
        backend.close()
        await default.close()
        await named.close()

    asyncio.run(main())


def test_a_named_route_that_served_a_request_is_warmed_at_the_next_session() -> None:
    async def main() -> None:
        default, named = CountingOrigin(), CountingOrigin()
        named_port = await named.start()
        backend = _backend(await default.start(), named_port)
        pool = backend.routes["other"].origins[("127.0.0.1", named_port)].pool
        conn = await pool.acquire()
        pool.release(conn)  # an HTTP exchange completed on it
        taken = pool.take_idle()  # gone since (e.g. aged out)
        assert taken is not None
        taken.close()
        session: Any = FakeSession()
        backend.track(session)
        session.confirmed.set_result(None)
        await _until(lambda: named.accepted == 2, "named route's origin connected again")
        backend.close()
        await default.close()
        await named.close()

    asyncio.run(main())


def test_a_failed_warm_connect_leaves_the_origin_up(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        named = CountingOrigin()
        port = _free_port()  # the default route's origin refuses
        backend = _backend(port, await named.start())
        origin = backend.routes["default"].origins[("127.0.0.1", port)]
        session: Any = FakeSession()
        backend.track(session)
        session.confirmed.set_result(None)
        await _until(lambda: origin.pool._warming is None and any(
            "ahead of requests" in r.getMessage() for r in caplog.records), "warm attempt ended")
        assert origin.health.state == "UP"  # requests (and probes) decide, not this attempt
        backend.close()
        await named.close()

    with caplog.at_level(logging.DEBUG, logger="ptproxy.origin"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
