"""ptproxy.splice between a real loopback TCP connection and a TunnelStream over a fake owner
(the session's part: what was sent, resets, credit), so each behaviour is checked in-process."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ptproxy.errors import ClientProtocolError
from ptproxy.splice import H3_CONNECT_ERROR, HIGH_WATER, SocketEnd, Splice
from ptproxy.tunnel import DataFrame, StreamEnded, TunnelStream
from ptproxy.wire.h3map import request_from_h3


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A sync test running ``scenario`` in a fresh event loop (no async test plugin here)."""

    @functools.wraps(scenario)
    def test() -> None:
        asyncio.run(scenario())

    return test


class FakeOwner:
    """Records what the stream sends; ``room`` gates send_data (a full send buffer)."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.fin = False
        self.reset_code: int | None = None
        self.stopped: int | None = None
        self.credited = 0
        self.room = asyncio.Event()
        self.room.set()
        self.changed = asyncio.Event()

    def credit(self, stream_id: int, nbytes: int) -> None:
        self.credited += nbytes

    def send_headers(
        self, stream: TunnelStream, headers: list[tuple[bytes, bytes]], end: bool
    ) -> None:
        pass

    def send_data(self, stream: TunnelStream, data: bytes, end: bool) -> None:
        self.sent += data
        self.fin = self.fin or end
        self.changed.set()

    async def wait_send_room(self, stream: TunnelStream) -> None:
        await self.room.wait()

    def reset_stream(self, stream: TunnelStream, code: int) -> None:
        self.reset_code = code
        self.changed.set()

    def stop_stream(self, stream: TunnelStream, code: int) -> None:
        self.stopped = code

    def stream_maybe_done(self, stream: TunnelStream) -> None:
        pass


async def _pair(
    **splice_args: Any,
) -> tuple[socket.socket, SocketEnd, TunnelStream, FakeOwner, Splice]:
    """A connected client socket (blocking, used from threads) and the splice on its far side."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[SocketEnd] = loop.create_future()

    def factory() -> SocketEnd:
        end = SocketEnd()
        accepted.set_result(end)
        return end

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 10)
    end = await asyncio.wait_for(accepted, 10)
    await end.wait_connected()
    server.close()
    owner = FakeOwner()
    stream = TunnelStream(owner, 0)
    splice = Splice(end, stream, idle_timeout=splice_args.pop("idle_timeout", 30.0), **splice_args)
    return client, end, stream, owner, splice


async def _until_fin(owner: FakeOwner, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not owner.fin:
            owner.changed.clear()
            await owner.changed.wait()


def _recv_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


@run
async def test_half_close_both_ways_and_counts() -> None:
    counted: list[tuple[str, int]] = []
    client, _end, stream, owner, splice = await _pair(on_bytes=lambda d, n: counted.append((d, n)))
    task = asyncio.create_task(splice.run())
    await asyncio.to_thread(client.sendall, b"hello")
    client.shutdown(socket.SHUT_WR)
    await _until_fin(owner)
    assert bytes(owner.sent) == b"hello"
    # The client's FIN went on; the other way still carries bytes, then its own FIN.
    stream._push(
        DataFrame(stream_id=0, data=b"world", frame_size=5, frame_end=True, stream_ended=False)
    )
    stream._push(StreamEnded())
    assert await asyncio.to_thread(_recv_all, client) == b"world"
    result = await asyncio.wait_for(task, 10)
    assert result.clean and result.to_stream == 5 and result.to_socket == 5
    assert owner.reset_code is None and owner.credited == 5
    assert sum(n for d, n in counted if d == "to_stream") == 5
    client.close()


@run
async def test_stream_end_first_then_socket_keeps_sending() -> None:
    client, _end, stream, owner, splice = await _pair()
    task = asyncio.create_task(splice.run())
    stream._push(StreamEnded())
    assert await asyncio.to_thread(_recv_all, client) == b""  # EOF while we may still send
    await asyncio.to_thread(client.sendall, b"late")
    client.shutdown(socket.SHUT_WR)
    result = await asyncio.wait_for(task, 10)
    assert result.clean and bytes(owner.sent) == b"late" and owner.fin
    client.close()


@run
async def test_socket_reading_pauses_while_stream_has_no_room() -> None:
    client, end, stream, owner, splice = await _pair()
    owner.room.clear()
    task = asyncio.create_task(splice.run())
    client.setblocking(False)
    sent = 0
    block = b"x" * 65536
    for _ in range(400):  # far more than HIGH_WATER plus the kernel's buffers
        try:
            sent += client.send(block)
        except BlockingIOError:
            await asyncio.sleep(0.02)
    assert sent < 400 * 65536  # the sender was held back
    assert len(end._buffer) <= HIGH_WATER + 65536 * 4  # bounded here
    owner.room.set()
    client.setblocking(True)
    client.shutdown(socket.SHUT_WR)
    stream._push(StreamEnded())
    await asyncio.wait_for(task, 30)
    assert len(owner.sent) == sent
    client.close()


@run
async def test_socket_reset_resets_stream() -> None:
    client, _end, _stream, owner, splice = await _pair()
    task = asyncio.create_task(splice.run())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST
    result = await asyncio.wait_for(task, 10)
    assert not result.clean and "reset" in result.reason
    assert owner.reset_code == H3_CONNECT_ERROR


@run
async def test_stream_reset_aborts_socket() -> None:
    client, _end, stream, _owner, splice = await _pair()
    task = asyncio.create_task(splice.run())
    stream._peer_reset(H3_CONNECT_ERROR)
    result = await asyncio.wait_for(task, 10)
    assert not result.clean
    with pytest.raises(ConnectionResetError):
        await asyncio.to_thread(_recv_all, client)
    client.close()


@run
async def test_idle_timeout_closes_both() -> None:
    client, _end, _stream, owner, splice = await _pair(idle_timeout=0.3)
    result = await asyncio.wait_for(splice.run(), 10)
    assert not result.clean and "no byte either way" in result.reason
    assert owner.reset_code == H3_CONNECT_ERROR
    assert await asyncio.to_thread(_recv_all, client) == b""
    client.close()


# -- the CONNECT request the server end receives (wire/h3map) -----------------------------------


def test_plain_connect_is_a_request_kind_of_its_own() -> None:
    request = request_from_h3(
        [(b":method", b"CONNECT"), (b":authority", b"pg"), (b"ptproxy-route", b"pg")], False
    )
    assert (
        request.is_connect
        and request.authority == b"pg"
        and request.fields == [(b"ptproxy-route", b"pg")]
    )
    get = request_from_h3(
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")], True
    )
    assert not get.is_connect


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"CONNECT")],
        [(b":method", b"CONNECT"), (b":authority", b"pg"), (b":path", b"/")],
        [(b":method", b"CONNECT"), (b":scheme", b"http"), (b":authority", b"pg")],
    ],
)
def test_malformed_connect_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ClientProtocolError, match="malformed CONNECT"):
        request_from_h3(headers, False)
