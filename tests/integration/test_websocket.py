"""WebSocket through the pair (issue 15 item 2), with real client and server libraries: the
``websockets`` client connects to the client end's HTTP listener; the origin is a ``websockets``
server (tests/support/ws_origin.py). Between the ends the handshake is an Extended CONNECT
(RFC 9220); frames cross unchanged.

The pair: the default route goes to the WebSocket origin, route ``web`` (a listener of its own)
to the ordinary test origin; BULK transport settings so 10 MB is quick.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.h1client import raw_exchange, request
from tests.support.pair import (
    BULK,
    Pair,
    free_port,
    read_text,
    spawn_listening,
    stop_process,
)
from tools.toml_writer import merge

pytestmark = pytest.mark.timeout(120)

MAX_SIZE = 32 * 1024 * 1024


class WsOrigin:
    def __init__(self, directory: Path) -> None:
        self.log_path = directory / "ws_origin.log"
        self.proc, self.port = spawn_listening(
            ["-m", "tests.support.ws_origin", "--port", "0"], self.log_path, "websocket origin"
        )

    def close(self) -> None:
        stop_process(self.proc, timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture()
def ws_origin(tmp_path: Path) -> Iterator[WsOrigin]:
    origin = WsOrigin(tmp_path)
    yield origin
    origin.close()
    if "Traceback" in read_text(origin.log_path):
        pytest.fail(f"websocket origin logged a traceback:\n{read_text(origin.log_path)[-3000:]}")


@pytest.fixture()
def ws_pair(make_pair: Any, ws_origin: WsOrigin, origin: Any) -> tuple[Pair, int]:
    """A pair whose default route is the WebSocket origin; returns it and route web's port."""
    web_port = free_port()
    client = merge(
        BULK,
        {"routes": [{"name": "web", "http_bind_address": f"127.0.0.1:{web_port}"}]},
    )
    server = merge(
        BULK,
        {
            "system": {"request_headers": ["X-Forwarded-For"]},
            "routes": [{"name": "web", "origins": [f"127.0.0.1:{origin.port}"]}],
        },
    )
    pair = make_pair(client, server, origin_port=ws_origin.port)
    return pair, web_port


def ws_url(pair: Pair, path: str) -> str:
    return f"ws://127.0.0.1:{pair.http_port}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


def opened(pair: Pair, path: str, **kwargs: Any) -> Any:
    return connect(ws_url(pair, path), max_size=MAX_SIZE, open_timeout=20, close_timeout=20, **kwargs)


# -- frames ------------------------------------------------------------------------------------


def test_text_binary_and_ping_pong(ws_pair: tuple[Pair, int]) -> None:
    pair, _ = ws_pair

    async def session() -> None:
        async with opened(pair, "/echo") as ws:
            await ws.send("héllo, wörld")
            assert await ws.recv() == "héllo, wörld"
            payload = bytes(range(256)) * 4
            await ws.send(payload)
            assert await ws.recv() == payload
            latency = await asyncio.wait_for(await ws.ping(b"are you there"), 20)
            assert latency >= 0
            for i in range(50):  # many small frames each way, in order
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]

    run(session())


def test_ten_megabyte_message(ws_pair: tuple[Pair, int]) -> None:
    pair, _ = ws_pair
    payload = os.urandom(10 * 1024 * 1024)  # incompressible: deflate cannot shrink it

    async def session() -> bytes:
        async with opened(pair, "/echo") as ws:
            await ws.send(payload)
            got = await ws.recv()
            assert isinstance(got, bytes)
            return got

    got = run(session())
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_close_codes_cross_both_ways(ws_pair: tuple[Pair, int]) -> None:
    pair, _ = ws_pair

    async def session() -> None:
        # The origin closes: the client sees its code and reason.
        async with opened(pair, "/echo") as ws:
            await ws.send("close 4002 origin says bye")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (4002, "origin says bye")
        # The client closes: the origin sees its code and reason.
        reason = f"client says bye {uuid.uuid4().hex[:6]}"
        async with opened(pair, "/echo") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(4001, reason)
        async with opened(pair, "/closes") as ws:
            closes = json.loads(await ws.recv())
        assert [4001, reason] in closes

    run(session())


def test_handshake_headers(ws_pair: tuple[Pair, int]) -> None:
    """Subprotocol and extensions are negotiated end to end; the origin gets a key of its own
    (never the client's), no internal fields, X-Forwarded-For as for any request."""
    pair, _ = ws_pair

    async def session() -> tuple[dict[str, Any], ClientConnection]:
        async with opened(pair, "/handshake?x=1", subprotocols=["superchat"], additional_headers={"X-App": "7"}) as ws:  # type: ignore[list-item]
            seen = json.loads(await ws.recv())
            return seen, ws

    seen, ws = run(session())
    assert ws.subprotocol == "superchat" and seen["subprotocol"] == "superchat"
    assert ws.response is not None and ws.response.status_code == 101
    assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["path"] == "/handshake?x=1"
    assert headers["x-app"] == "7"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["upgrade"].lower() == "websocket" and headers["sec-websocket-version"] == "13"
    assert ws.request is not None
    assert headers["sec-websocket-key"] != ws.request.headers["Sec-WebSocket-Key"]
    assert not any(k.startswith("ptproxy-") for k in headers)


def test_bytes_pipelined_behind_the_handshake_are_kept(ws_pair: tuple[Pair, int]) -> None:
    """A client that sends a frame in the same packet as its handshake: the frame is not lost."""
    pair, _ = ws_pair
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    handshake = (
        "GET /echo HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    mask = b"\x01\x02\x03\x04"
    text = b"early"
    frame = b"\x81" + bytes([0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    with socket.create_connection(("127.0.0.1", pair.http_port), timeout=20) as sock:
        sock.sendall(handshake + frame)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"early"):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert rest == b"\x81\x05early"  # unmasked echo from the origin, unchanged through the pair


# -- refusals and other upgrades ---------------------------------------------------------------


def test_origin_refusing_the_upgrade(ws_pair: tuple[Pair, int]) -> None:
    pair, _ = ws_pair

    async def attempt(path: str) -> Any:
        with pytest.raises(InvalidStatus) as info:
            async with opened(pair, path):
                pass
        return info.value.response

    refused = run(attempt("/refuse"))
    assert refused.status_code == 403
    assert refused.body == b"websocket refused by the origin\n"
    missing = run(attempt("/nowhere"))
    assert missing.status_code == 404


def test_concurrent_websocket_and_http_requests(ws_pair: tuple[Pair, int]) -> None:
    pair, web_port = ws_pair

    async def chat(tag: str) -> None:
        async with opened(pair, "/echo") as ws:
            for i in range(30):
                await ws.send(f"{tag}{i}")
                assert await ws.recv() == f"{tag}{i}"
                await asyncio.sleep(0.01)

    async def http() -> None:
        for i in range(20):
            resp = await asyncio.to_thread(request, web_port, "GET", f"/echo?n={i}")
            assert resp.status == 200

    async def together() -> None:
        await asyncio.gather(chat("a"), chat("b"), http())

    run(together())


def test_other_upgrade_tokens_keep_the_old_behaviour(ws_pair: tuple[Pair, int]) -> None:
    """h2c (or a websocket request without a valid key) is an ordinary request: Upgrade dropped
    as hop-by-hop, the origin's answer passed on, the connection kept."""
    _, web_port = ws_pair
    h2c = b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    badkey = b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
    after = b"GET /echo?after HTTP/1.1\r\nHost: h\r\n\r\n"
    responses = raw_exchange(web_port, h2c + badkey + after, count=3)
    assert [r.status for r in responses] == [200, 200, 200]
    for resp in responses[:2]:
        names = {n.lower() for n, _ in resp.json()["headers"]}
        assert "upgrade" not in names and "http2-settings" not in names


def test_origin_that_does_not_speak_websocket(ws_pair: tuple[Pair, int]) -> None:
    """A handshake on route web's listener reaches an ordinary origin (tools/origin_server.py):
    its answer is passed back as the response."""
    _, web_port = ws_pair

    async def attempt() -> Any:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{web_port}/status/426", open_timeout=20):
                pass
        return info.value.response

    assert run(attempt()).status_code == 426


def test_client_reset_aborts_the_origin_side(ws_pair: tuple[Pair, int]) -> None:
    """A client that vanishes with a TCP reset: the origin's connection is cut (no close frame),
    each end logs one line, and the pair serves the next WebSocket."""
    pair, _ = ws_pair
    marker = f"reset-{uuid.uuid4().hex[:6]}"
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    handshake = (
        f"GET /echo?{marker} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", pair.http_port), timeout=20)
    sock.sendall(handshake)
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST
    assert pair.wait_client_log(f"websocket /echo?{marker}", timeout=20), pair.logs()
    assert pair.wait_server_log("websocket to origin", timeout=20), pair.logs()

    async def next_one() -> None:
        async with opened(pair, "/closes") as ws:
            closes = json.loads(await ws.recv())
        assert [1006, ""] in closes  # abnormal closure: the connection ended without a close frame

    run(next_one())


def test_shutdown_cuts_open_websockets_after_a_grace(ws_pair: tuple[Pair, int]) -> None:
    """SIGINT with a WebSocket open: each end drains, cuts it after its grace (10 s) and exits 0,
    instead of waiting for a connection that has no natural end."""
    pair, _ = ws_pair

    async def open_then_stop(end: Any) -> tuple[int, float]:
        async with opened(pair, "/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            started = time.monotonic()
            status = await asyncio.to_thread(end.stop, signal.SIGINT, 40.0)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 20)
            return status, time.monotonic() - started

    status, took = run(open_then_stop(pair.server))
    assert status == 0 and took < 30, (status, took, pair.logs())
    pair.restart_server()
    pair.wait_ready(count=2, timeout=30)
    status, took = run(open_then_stop(pair.client))
    assert status == 0 and took < 30, (status, took, pair.logs())
