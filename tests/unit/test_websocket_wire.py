"""wire/websocket.py (sans-IO): which requests are WebSocket handshakes, the Extended CONNECT
mapping both ways, keys and accepts; and the parsers' stop at a handshake / a 101."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ptproxy.client.listener import Frontend
from ptproxy.client.upgrade import peer_allows
from ptproxy.errors import ClientProtocolError, UpstreamError
from ptproxy.ops.config import parse
from ptproxy.tunnel import Headers, StreamEnded
from ptproxy.wire import websocket as ws
from ptproxy.wire.events import BodyData, BodyKind, EndOfMessage, RequestHead, ResponseHead
from ptproxy.wire.parser import RequestParser, ResponseParser

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE = [
    (b"Host", b"chat.example"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
    (b"Origin", b"http://chat.example"),
]


def head(headers: list[tuple[bytes, bytes]] = HANDSHAKE, target: bytes = b"/chat?room=1") -> RequestHead:
    return RequestHead(
        method=b"GET",
        target=target,
        headers=headers,
        http_version=(1, 1),
        keep_alive=True,
        body=BodyKind.NONE,
        content_length=None,
        expect_continue=False,
    )


def without(name: bytes) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in HANDSHAKE if n.lower() != name]


def test_accept_is_the_rfc_example() -> None:
    assert ws.accept_for(KEY) == ACCEPT


def test_new_keys_are_fresh_16_byte_values() -> None:
    a, b = ws.new_key(), ws.new_key()
    assert a != b and len(base64.b64decode(a)) == 16


def test_handshake_detection() -> None:
    assert ws.is_handshake(b"GET", (1, 1), HANDSHAKE, BodyKind.NONE)
    assert ws.is_handshake(b"GET", (1, 1), [(n.upper(), v) for n, v in HANDSHAKE], BodyKind.NONE)


@pytest.mark.parametrize(
    ("method", "version", "headers", "body"),
    [
        (b"POST", (1, 1), HANDSHAKE, BodyKind.NONE),
        (b"GET", (1, 0), HANDSHAKE, BodyKind.NONE),
        (b"GET", (1, 1), HANDSHAKE, BodyKind.LENGTH),
        (b"GET", (1, 1), without(b"connection"), BodyKind.NONE),
        (b"GET", (1, 1), without(b"upgrade") + [(b"Upgrade", b"h2c")], BodyKind.NONE),
        (b"GET", (1, 1), without(b"sec-websocket-key"), BodyKind.NONE),
        (b"GET", (1, 1), without(b"sec-websocket-key") + [(b"Sec-WebSocket-Key", b"short")], BodyKind.NONE),
        (b"GET", (1, 1), HANDSHAKE + [(b"Sec-WebSocket-Key", KEY)], BodyKind.NONE),
        (b"GET", (1, 1), without(b"sec-websocket-version") + [(b"Sec-WebSocket-Version", b"8")], BodyKind.NONE),
    ],
    ids=["post", "http10", "body", "no-connection", "h2c", "no-key", "bad-key", "two-keys", "version-8"],
)
def test_not_a_handshake(method: bytes, version: tuple[int, int], headers: list[tuple[bytes, bytes]], body: BodyKind) -> None:
    assert not ws.is_handshake(method, version, headers, body)


def test_request_to_h3_is_extended_connect_without_the_key() -> None:
    h3 = ws.request_to_h3(head(), forwarded=b'for="1.2.3.4:5"')
    assert h3[:5] == [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"chat.example"),
        (b":path", b"/chat?room=1"),
    ]
    fields = dict(h3[5:])
    assert fields == {
        b"sec-websocket-version": b"13",
        b"sec-websocket-protocol": b"chat, superchat",
        b"sec-websocket-extensions": b"permessage-deflate",
        b"origin": b"http://chat.example",
        b"forwarded": b'for="1.2.3.4:5"',
    }


def test_request_from_h3_round_trip() -> None:
    h3 = ws.request_to_h3(head())
    assert ws.is_extended_connect(h3)
    request = ws.request_from_h3(h3, ended=False)
    assert (request.method, request.path, request.authority) == (b"GET", b"/chat?room=1", b"chat.example")
    assert request.protocol == b"websocket" and request.body is BodyKind.NONE
    assert (b"sec-websocket-version", b"13") in request.fields
    assert not any(n in (b"sec-websocket-key", b"host") for n, _ in request.fields)


def test_request_from_h3_adds_the_version_a_peer_left_out() -> None:
    h3 = [(n, v) for n, v in ws.request_to_h3(head()) if n != b"sec-websocket-version"]
    assert (b"sec-websocket-version", b"13") in ws.request_from_h3(h3, ended=False).fields


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({b":protocol": b"webtransport"}, "unsupported :protocol"),
        ({b":method": b"GET"}, ":protocol without CONNECT"),
        ({b":scheme": b"ftp"}, ":scheme"),
        ({b":path": b""}, ":path"),
    ],
)
def test_request_from_h3_refuses(change: dict[bytes, bytes], message: str) -> None:
    h3 = [(n, change.get(n, v)) for n, v in ws.request_to_h3(head())]
    with pytest.raises(ClientProtocolError, match=message):
        ws.request_from_h3(h3, ended=False)


def test_request_from_h3_refuses_a_stream_ended_with_its_head() -> None:
    with pytest.raises(ClientProtocolError, match="ended"):
        ws.request_from_h3(ws.request_to_h3(head()), ended=True)


def test_upgrade_lines_join_the_serialized_head() -> None:
    out = ws.with_upgrade(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", b"k==")
    assert out == b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k==\r\n\r\n"


def switch(*headers: tuple[bytes, bytes]) -> ResponseHead:
    return ResponseHead(
        status=101,
        reason=b"Switching Protocols",
        headers=list(headers),
        http_version=(1, 1),
        keep_alive=True,
        body=BodyKind.NONE,
        content_length=None,
    )


def test_check_switch() -> None:
    good = [(b"Upgrade", b"WebSocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", ACCEPT)]
    assert ws.check_switch(switch(*good), KEY) is None
    assert "Sec-WebSocket-Accept" in (ws.check_switch(switch(*good[:2], (b"Sec-WebSocket-Accept", b"x")), KEY) or "")
    assert "Upgrade" in (ws.check_switch(switch(*good[1:]), KEY) or "")
    assert "Connection" in (ws.check_switch(switch(good[0], good[2]), KEY) or "")


def test_response_mapping_both_ways() -> None:
    answer = switch(
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"origin-accept"),
        (b"Sec-WebSocket-Protocol", b"chat"),
        (b"Set-Cookie", b"a=1"),
    )
    h3 = ws.response_to_h3(answer)
    assert h3 == [(b":status", b"200"), (b"sec-websocket-protocol", b"chat"), (b"set-cookie", b"a=1")]
    out = ws.switching_protocols(KEY, h3[1:])
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n" in out
    assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in out and b"\r\nSet-Cookie: a=1\r\n" in out
    assert b"origin-accept" not in out and out.endswith(b"\r\n\r\n")


def test_connect_protocol_setting() -> None:
    assert ws.connect_protocol_enabled({0x8: 1, 0x1: 0})
    assert not ws.connect_protocol_enabled({0x8: 0})
    assert not ws.connect_protocol_enabled({})
    assert not ws.connect_protocol_enabled(None)


# -- the parsers -------------------------------------------------------------------------------

RAW = b"GET /chat HTTP/1.1\r\n" + b"".join(b"%b: %b\r\n" % hv for hv in HANDSHAKE) + b"\r\n"


@pytest.mark.parametrize("split", [None, 1, 7])
def test_request_parser_stops_at_a_handshake_and_keeps_what_follows(split: int | None) -> None:
    parser = RequestParser()
    data = RAW + b"\x81\x05hello"
    pieces = [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    events = [ev for piece in pieces for ev in parser.feed(piece)]
    assert isinstance(events[0], RequestHead) and events[1:] == [EndOfMessage([])]
    assert parser.upgraded and parser.leftover == b"\x81\x05hello"
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []  # frames, never a request
    assert parser.leftover.endswith(b"Host: a\r\n\r\n")


def test_request_parser_other_upgrades_go_on() -> None:
    parser = RequestParser()
    h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    events = parser.feed(h2c + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [ev.target for ev in events if isinstance(ev, RequestHead)] == [b"/", b"/next"]
    assert not parser.upgraded


def test_response_parser_takes_101_only_for_an_upgrade() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"
    parser = ResponseParser(b"GET", upgrade=True)
    events = parser.feed(data)
    assert isinstance(events[0], ResponseHead) and events[0].status == 101
    assert events[1:] == [EndOfMessage([])] and parser.done
    assert parser.leftover == b"\x81\x02hi"
    parser.feed(b"more")
    assert parser.leftover == b"\x81\x02himore"
    with pytest.raises(UpstreamError, match="101"):
        ResponseParser(b"GET").feed(data)


def test_response_parser_for_an_upgrade_reads_a_refusal_whole() -> None:
    parser = ResponseParser(b"GET", upgrade=True)
    events = parser.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno!")
    assert [type(ev) for ev in events] == [ResponseHead, BodyData, EndOfMessage]


# -- the client end's question to the session ------------------------------------------------


def test_peer_allows_waits_for_the_settings() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        loop = asyncio.get_running_loop()
        session = SimpleNamespace(peer_settings=None, settings_received=loop.create_future(), closed=loop.create_future())

        def arrive() -> None:
            session.peer_settings = {0x8: 1}
            session.settings_received.set_result(None)

        loop.call_later(0.05, arrive)
        late = await peer_allows(session, timeout=5)  # type: ignore[arg-type]
        refused = SimpleNamespace(peer_settings={0x8: 0}, settings_received=None, closed=None)
        silent = SimpleNamespace(peer_settings=None, settings_received=loop.create_future(), closed=loop.create_future())
        return late, await peer_allows(refused), await peer_allows(silent, timeout=0.05)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == (True, False, False)


# -- in-process: the client end when the server end does not allow Extended CONNECT -------------


class _FakeStream:
    stream_id = 0

    def __init__(self) -> None:
        self.events: list[Any] = [Headers([(b":status", b"426"), (b"content-length", b"0")], True)]

    async def receive(self) -> Any:
        return self.events.pop(0) if self.events else StreamEnded()

    def finish(self) -> None:
        pass

    def reset(self, *args: Any, **kwargs: Any) -> None:
        pass


class _FakeSession:
    peer_settings = {0x1: 0}  # SETTINGS without ENABLE_CONNECT_PROTOCOL
    handshake_done = True
    # The live, confirmed session the frontend takes without asking the dialer.
    confirmed = SimpleNamespace(done=lambda: True)
    closed = SimpleNamespace(done=lambda: False)

    def __init__(self) -> None:
        self.opened: list[tuple[list[tuple[bytes, bytes]], bool]] = []

    def stream_slot_ready(self) -> bool:
        return True

    def open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> _FakeStream:
        self.opened.append((headers, end_stream))
        return _FakeStream()


def test_without_the_setting_a_handshake_is_an_ordinary_get_on_a_closing_connection() -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    config = parse(
        f"""
[general]
mode = "Client"
peer_hostname = "server.example.com"
http_bind_address = "127.0.0.1:{number}"
[tls]
ca = "ca.crt"
cert = "client.crt"
key = "client.key"
""",
        path=Path("/etc/ptproxy/client.toml"),
    )
    session = _FakeSession()

    async def session_for(**_: object) -> _FakeSession:
        return session

    dialer = SimpleNamespace(current=lambda early_ok=False: session, session=session, session_for=session_for)

    async def scenario() -> bytes:
        frontend = Frontend(config, dialer)  # type: ignore[arg-type]
        await frontend.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", number)
            writer.write(RAW + b"\x81\x05hello")
            answer = await asyncio.wait_for(reader.read(), 10)  # to the close
            writer.close()
            return answer
        finally:
            await frontend.close(grace=1)

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 426 ") and b"\r\nConnection: close\r\n" in answer
    ((headers, end_stream),) = session.opened
    names = [n for n, _ in headers]
    assert (b":method", b"GET") in headers and b":protocol" not in names
    assert b"upgrade" not in names and b"sec-websocket-key" in names and end_stream
