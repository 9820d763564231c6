"""The server end's handler (server/origin.py Backend) on one request, with the stream's session
and the origin connection's socket faked: what reaches the origin, and when; what goes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ptproxy.h1conn import H1Connection
from ptproxy.ops.config import parse
from ptproxy.server.balance import PeerHash
from ptproxy.server.origin import Backend
from ptproxy.tunnel import TunnelStream
from ptproxy.tunnel.stream import Headers, StreamEnded

CONFIG = """
[general]
mode = "Server"
peer_hostname = "client.example.com"
quic_port = 4433
http_connect_address = "127.0.0.1:9"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
"""

TWO_ORIGINS = """
[general]
mode = "Server"
peer_hostname = "client.example.com"
quic_port = 4433
http_connect_address = ["127.0.0.1:9", "127.0.0.1:10"]
[[routes]]
name = "default"
balance = "{balance}"
[tls]
ca = "ca.crt"
cert = "server.crt"
key = "server.key"
"""


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeSession:
    """Both the stream's owner (what it sends) and the session the handler is given."""

    number = 1
    peer_identity = None
    peer = ("127.0.0.1", 5000)

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, bool]] = []

    def credit(self, stream_id: int, nbytes: int) -> None:
        pass

    def send_headers(self, stream: Any, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.sent.append(("headers", headers, end))

    def send_data(self, stream: Any, data: bytes, end: bool) -> None:
        self.sent.append(("data", data, end))

    async def wait_send_room(self, stream: Any) -> None:
        pass

    def reset_stream(self, stream: Any, code: int) -> None:
        self.sent.append(("reset", code, True))

    def stop_stream(self, stream: Any, code: int) -> None:
        self.sent.append(("stop", code, True))

    def stream_maybe_done(self, stream: Any) -> None:
        pass


def _request(method: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"origin.example"), (b":path", b"/x")]


def _exchange(
    method: bytes, response: bytes | list[bytes], config: str = CONFIG, requests: int = 1
) -> tuple[list[list[bytes]], FakeSession, list[H1Connection]]:
    """Bodiless requests, one after the other, through a Backend whose origins each have an idle
    pooled connection: per request, the bytes each origin's connection had been written after
    the handler's first step; what the streams sent back; the connections."""

    async def main() -> tuple[list[list[bytes]], FakeSession, list[H1Connection]]:
        backend = Backend(parse(config, path=Path("/etc/ptproxy/server.toml")), lambda: ("127.0.0.1", 4433))
        conns, transports = [], []
        for origin in backend.routes["default"].origins.values():
            conn = H1Connection(tcp_nodelay=True)
            transport = FakeTransport()
            conn.connection_made(transport)  # type: ignore[arg-type]
            origin.pool.release(conn)
            conns.append(conn)
            transports.append(transport)
        session = FakeSession()
        firsts = []
        for i in range(requests):
            stream = TunnelStream(session, 4 * i)  # type: ignore[arg-type]
            stream._push(Headers(_request(method), True))
            stream._push(StreamEnded())
            backend.on_request(session, stream)  # type: ignore[arg-type]
            await asyncio.sleep(0)  # the handler's first step
            firsts.append([b"".join(t.written) for t in transports])
            (conn,) = [c for c, t in zip(conns, transports) if len(b"".join(t.written)) > 0 and c.parser is not None]
            for piece in [response] if isinstance(response, bytes) else response:
                conn.data_received(piece)  # each piece in a read of its own
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            for _ in range(20):
                if not backend._tasks:
                    break
                await asyncio.sleep(0)
            assert not backend._tasks
            for t in transports:
                t.written.clear()
        backend.close()
        return firsts, session, conns

    return asyncio.run(main())


def test_the_request_reaches_the_origin_in_the_handlers_first_step_and_the_response_comes_back() -> None:
    firsts, session, (conn,) = _exchange(
        b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    )
    assert firsts == [[b"GET /x HTTP/1.1\r\nHost: origin.example\r\n\r\n"]]
    kinds = [(kind, end) for kind, _, end in session.sent]
    assert kinds == [("headers", False), ("data", True)]
    assert (b":status", b"200") in session.sent[0][1]
    assert session.sent[1][1] == b"hello"
    assert conn.parser is None  # released to the pool, the exchange complete


def test_the_response_is_parsed_for_the_requests_method() -> None:
    """A HEAD's response: its Content-Length announces no body (the parser is the request's,
    made when the request was written)."""
    firsts, session, (conn,) = _exchange(b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert firsts == [[b"HEAD /x HTTP/1.1\r\nHost: origin.example\r\n\r\n"]]
    assert [(kind, end) for kind, _, end in session.sent] == [("headers", True)]
    assert (b"content-length", b"100") in session.sent[0][1]
    assert conn.parser is None  # released to the pool: the exchange ended by its framing


def test_peer_hash_balances_on_the_peers_address_and_round_robin_alternates() -> None:
    """The peer's key (its certificate name, else its address) reaches PeerHash; the other
    policies do without it."""
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    firsts, _, _ = _exchange(b"GET", ok, TWO_ORIGINS.format(balance="PeerHash"), requests=4)
    targets = [[bool(w) for w in first] for first in firsts]
    addresses = ["127.0.0.1:9", "127.0.0.1:10"]
    expected = PeerHash().pick([SimpleNamespace(address=a) for a in addresses], FakeSession.peer[0]).address
    assert targets == [[a == expected for a in addresses]] * 4
    firsts, _, _ = _exchange(b"GET", ok, TWO_ORIGINS.format(balance="RoundRobin"), requests=4)
    assert [[bool(w) for w in first] for first in firsts] == [[True, False], [False, True]] * 2


def test_a_length_delimited_body_is_relayed_whole_in_one_read_or_in_pieces() -> None:
    """Here whole (the usual small response): one DATA frame with the FIN. In pieces: one frame
    per piece, the FIN with the last; chunked: one frame per chunk; a trailer section ends it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    _, session, (conn,) = _exchange(b"GET", head + b"0123456789")
    assert [(kind, data, end) for kind, data, end in session.sent[1:]] == [("data", b"0123456789", True)]
    assert conn.parser is None  # released: complete
    _, session, (conn,) = _exchange(b"GET", [head + b"0123", b"456789"])
    assert [(kind, data, end) for kind, data, end in session.sent[1:]] == [("data", b"0123", False), ("data", b"456789", True)]
    assert conn.parser is None
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n0\r\nX-T: 1\r\n\r\n"
    _, session, (conn,) = _exchange(b"GET", chunked)
    assert [(kind, end) for kind, _, end in session.sent] == [("headers", False), ("data", False), ("headers", True)]
    assert session.sent[1][1] == b"0123" and session.sent[2][1] == [(b"x-t", b"1")]
    assert conn.parser is None
