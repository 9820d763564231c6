"""H1Connection (the asyncio.Protocol at the HTTP/1.1 edge) over a fake transport, in-process.

The protocol is driven the way the event loop drives it (connection_made, data_received in pieces,
eof_received, connection_lost) and read the way the relay reads it (next_event, drain). Both twins
of the hot paths it uses (FlowMarks, the chunk scanner under the parser) are exercised."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ptproxy import h1conn
from ptproxy.errors import ClientProtocolError, ConnectionClosed, HeadTimeout
from ptproxy.h1conn import FLUSH_BYTES, HIGH_WATER, LOW_WATER, H1Connection
from ptproxy.wire import _parsebase
from ptproxy.wire.events import BodyData, ChunkComplete, EndOfMessage, RequestHead
from ptproxy.wire.parser import RequestParser

T = TypeVar("T")

TWINS = {
    "py": ("ptproxy.wire._framing_py", "ptproxy.wire._chunked_py"),
    "c": ("ptproxy._speedups.framing", "ptproxy._speedups.chunked"),
}


@pytest.fixture(params=sorted(TWINS))
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point H1Connection's FlowMarks and the parser's chunk scanner at one twin."""
    try:
        framing, chunked = (importlib.import_module(name) for name in TWINS[request.param])
    except ImportError:
        pytest.skip("compiled twins are not built")
    monkeypatch.setattr(h1conn, "FlowMarks", framing.FlowMarks)
    monkeypatch.setattr(_parsebase, "chunked", chunked)
    return str(request.param)


class FakeTransport(asyncio.Transport):
    """Records what the protocol asks of its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self.calls: list[str] = []  # pause_reading / resume_reading, in order

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.calls.append("resume")

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # No socket: the protocol must not need one (TCP_NODELAY is best effort).
        return {"peername": ("192.0.2.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


def connected() -> tuple[H1Connection, FakeTransport]:
    conn = H1Connection(RequestParser())
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


async def drain_events(conn: H1Connection) -> list[Any]:
    """Every queued event, without waiting for more."""
    out = []
    while conn.has_buffered_input():
        out.append(await conn.next_event())
    return out


def test_connection_made_reads_the_addresses(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        assert conn.peername == ("192.0.2.1", 50000)
        assert conn.sockname == ("127.0.0.1", 8080)

    run(main())


def test_request_fed_in_pieces_gives_its_events_in_order(twin: str) -> None:
    wire = (
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5 ; ext = "v"\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n'
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )

    async def main() -> list[Any]:
        conn, _ = connected()
        events: list[Any] = []
        for i in range(0, len(wire), 7):
            conn.data_received(wire[i : i + 7])
            events += await drain_events(conn)
        return events

    events = run(main())
    heads = [ev for ev in events if isinstance(ev, RequestHead)]
    assert [h.target for h in heads] == [b"/up", b"/next"]
    body = b"".join(ev.data for ev in events if isinstance(ev, BodyData))
    assert body == b"helloabc"
    assert events.count(ChunkComplete()) == 2
    assert [ev for ev in events if isinstance(ev, EndOfMessage)] == [
        EndOfMessage([(b"X-T", b"1")]),
        EndOfMessage([]),
    ]


def test_next_event_waits_for_data_that_arrives_later(twin: str) -> None:
    async def main() -> Any:
        conn, _ = connected()
        waiter = asyncio.ensure_future(conn.next_event())
        await asyncio.sleep(0)
        assert not waiter.done()
        conn.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        return await waiter

    assert isinstance(run(main()), RequestHead)


def test_reading_pauses_above_high_water_and_resumes_at_low_water(twin: str) -> None:
    piece = 32 * 1024
    total = HIGH_WATER + 4 * piece

    async def main() -> FakeTransport:
        conn, transport = connected()
        conn.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % total)
        assert isinstance(await conn.next_event(), RequestHead)
        sent = 0
        while sent <= HIGH_WATER:
            assert transport.reading, "paused before the high-water mark"
            conn.data_received(b"x" * piece)
            sent += piece
        # Past the mark: the protocol asked the transport to stop reading, once.
        assert transport.calls == ["pause"]
        queued = sent
        while queued > LOW_WATER:
            assert not transport.reading
            ev = await conn.next_event()
            queued -= len(ev.data)
        # Consumed down to the low-water mark: reading resumes, once.
        assert transport.calls == ["pause", "resume"]
        conn.data_received(b"x" * (total - sent))
        rest = await drain_events(conn)
        assert rest[-1] == EndOfMessage([])
        return transport

    assert run(main()).reading


def test_eof_then_connection_lost_without_error_is_a_clean_close(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        conn.data_received(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert conn.eof_received() is True  # keep the write side open for the answer
        conn.connection_lost(None)
        assert conn.is_closed and conn.closed_future.done()
        # Events received before the close are still delivered, then the close.
        assert isinstance(await conn.next_event(), RequestHead)
        assert await conn.next_event() == EndOfMessage([])
        with pytest.raises(ConnectionClosed) as info:
            await conn.next_event()
        assert type(info.value) is ConnectionClosed
        with pytest.raises(ConnectionClosed):
            await conn.drain()

    run(main())


def test_connection_lost_with_an_error_is_a_reset(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        waiter = asyncio.ensure_future(conn.next_event())
        await asyncio.sleep(0)
        conn.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        with pytest.raises(ConnectionClosed) as info:
            await waiter
        # A reset is reported as such (never as a clean end), and it is a PtproxyError.
        assert type(info.value).__name__ == "ConnectionReset"
        assert "reset" in str(info.value)
        assert info.value.status == 502

    run(main())


def test_drain_waits_while_writing_is_paused(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"answer")
        await asyncio.sleep(0)  # written at the end of the iteration
        assert transport.written == [b"answer"]
        conn.pause_writing()
        drained = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not drained.done()
        conn.resume_writing()
        await drained
        # A connection lost while paused releases the waiter with ConnectionClosed.
        conn.pause_writing()
        drained = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        conn.connection_lost(None)
        with pytest.raises(ConnectionClosed):
            await drained

    run(main())


def test_parse_error_follows_the_events_before_it(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        conn.data_received(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n")  # no Host
        assert isinstance(await conn.next_event(), RequestHead)
        assert await conn.next_event() == EndOfMessage([])
        with pytest.raises(ClientProtocolError, match="Host"):
            await conn.next_event()

    run(main())


def test_incomplete_head_ends_with_head_timeout(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        conn.data_received(b"GET / HTTP/1.1\r\nHo")
        # HeadTimeout is the 408 of the error tree and still an asyncio timeout.
        with pytest.raises(HeadTimeout):
            await conn.next_event(timeout=60, head_timeout=0.01)
        with pytest.raises(asyncio.TimeoutError):
            await conn.next_event(timeout=60, head_timeout=0.01)

    run(main())


def test_close_and_abort_reach_the_transport_once(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.close()
        assert transport.closed
        conn.connection_lost(None)
        conn.abort()  # already closed: nothing more to do
        assert not transport.aborted
        conn.write(b"late")  # dropped, not raised
        assert transport.written == []

    run(main())


# -- joined writes ------------------------------------------------------------------------------


def test_pieces_written_in_one_iteration_leave_in_one_write(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        conn.write(b"hello")
        assert transport.written == []  # nothing yet: the iteration is not over
        await asyncio.sleep(0)
        assert transport.written == [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]
        assert conn.transport_writes == 1

    run(main())


def test_a_lone_piece_leaves_before_the_loop_waits_for_io(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"alone")
        # One turn of the loop, no timer: a lone piece waits for nothing but the iteration's end.
        await asyncio.sleep(0)
        assert transport.written == [b"alone"]
        conn.write(b"next")
        await asyncio.sleep(0)
        assert transport.written == [b"alone", b"next"]

    run(main())


def test_write_now_leaves_at_once_behind_what_is_pending_and_schedules_nothing(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write_now(b"whole message")
        assert transport.written == [b"whole message"]
        assert not conn._flush_scheduled  # no end-of-iteration flush left to run for nothing
        conn.write(b"head ")
        conn.write_now(b"and the rest")
        assert transport.written == [b"whole message", b"head and the rest"]
        assert conn.transport_writes == 2
        await asyncio.sleep(0)
        assert conn.transport_writes == 2
        conn.connection_lost(None)
        conn.write_now(b"too late")
        assert transport.written == [b"whole message", b"head and the rest"]

    run(main())


def test_pending_bytes_past_flush_bytes_leave_at_once(twin: str) -> None:
    """A writer that never yields (much data queued on the stream) keeps at most FLUSH_BYTES here,
    and the transport sees the rest at once, so its high-water mark can pause the writer."""

    async def main() -> None:
        conn, transport = connected()
        piece = b"x" * (FLUSH_BYTES // 4)
        for _ in range(8):
            conn.write(piece)
        assert transport.written == [piece * 4, piece * 4]
        conn.write(b"tail")
        assert len(transport.written) == 2
        await asyncio.sleep(0)
        assert transport.written[-1] == b"tail"
        assert b"".join(transport.written) == piece * 8 + b"tail"

    run(main())


def test_drain_sees_the_pause_caused_by_a_flush(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"x" * FLUSH_BYTES)
        conn.pause_writing()  # what a real transport does when that write fills its buffer
        drained = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not drained.done()
        conn.resume_writing()
        await drained

    run(main())


def test_close_and_abort_send_pending_bytes_first(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()
        assert transport.written == [b"HTTP/1.1 400 Bad Request\r\n\r\n"] and transport.closed
        conn2, transport2 = connected()
        conn2.write(b"head and partial body")
        conn2.abort()
        assert transport2.written == [b"head and partial body"] and transport2.aborted
        await asyncio.sleep(0)
        assert transport2.written == [b"head and partial body"]

    run(main())


def test_taking_the_transport_flushes_first(twin: str) -> None:
    """A WebSocket splice adopts the transport: the 101 written before must not come after
    the frames it writes there."""

    async def main() -> None:
        conn, transport = connected()
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        taken = conn.transport
        assert taken is transport
        taken.write(b"frame")
        await asyncio.sleep(0)
        assert transport.written == [b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b"frame"]

    run(main())


def test_nothing_is_written_after_connection_lost(twin: str) -> None:
    async def main() -> None:
        conn, transport = connected()
        conn.write(b"lost")
        conn.connection_lost(ConnectionResetError())
        await asyncio.sleep(0)
        assert transport.written == []

    run(main())


def test_real_socket_receives_head_and_body_in_one_segment() -> None:
    """Over a real socketpair on the running loop: head and body written in one iteration are one
    transport write (so one write syscall), and the peer gets them whole and in order."""

    async def main() -> None:
        import socket

        mine, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.connect_accepted_socket(lambda: H1Connection(RequestParser()), mine)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
            conn.write(head)
            conn.write(b"hello")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            theirs.setblocking(True)
            assert theirs.recv(65536) == head + b"hello"
            assert conn.transport_writes == 1
            conn.close()
        finally:
            theirs.close()

    run(main())


def test_one_deadline_timer_serves_successive_waits(twin: str) -> None:
    async def main() -> None:
        conn, _ = connected()
        request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        loop = asyncio.get_running_loop()
        for _ in range(3):  # each wait ends by data: the timer armed by the first one stays
            loop.call_soon(conn.data_received, request)
            assert isinstance(await conn.next_event(timeout=0.05), RequestHead)
            assert await conn.next_event(timeout=0.05) == EndOfMessage([])
        timer = conn._deadline_timer
        assert timer is not None
        loop.call_soon(conn.data_received, request)
        assert isinstance(await conn.next_event(timeout=0.05), RequestHead)
        assert conn._deadline_timer is timer  # reused, not one per wait
        await conn.next_event()
        # A later wait still ends at its own deadline (the old timer fires early and re-arms).
        started = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await conn.next_event(timeout=0.05)
        assert loop.time() - started >= 0.04
        conn.connection_lost(None)
        assert conn._deadline_timer is None

    run(main())


def test_take_last_body_takes_a_body_piece_and_its_end_only_when_both_are_here(twin: str) -> None:
    """What two next_event calls would return at once (a piece, then EndOfMessage without
    trailers), else nothing taken; the flow marks count the piece as consumed."""

    async def main() -> None:
        conn, transport = connected()
        conn.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234")
        assert conn.take_last_body() is None  # the head first
        assert isinstance(await conn.next_event(), RequestHead)
        assert conn.take_last_body() is None  # a piece, its end not here yet
        assert await conn.next_event() == BodyData(b"01234")
        conn.data_received(b"56789")
        assert conn.take_last_body() == b"56789"
        assert not conn.has_buffered_input()
        big = HIGH_WATER + 1  # past the high-water mark: reading paused, resumed once it is taken
        conn.data_received(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big)
        assert isinstance(await conn.next_event(), RequestHead)
        assert transport.calls == ["pause"]
        assert conn.take_last_body() == b"x" * big
        assert transport.calls == ["pause", "resume"]
        wire = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        conn.data_received(wire)
        assert isinstance(await conn.next_event(), RequestHead)
        assert conn.take_last_body() is None  # a chunk's piece: ChunkComplete follows, not the end
        assert await drain_events(conn) == [BodyData(b"abc"), ChunkComplete(), EndOfMessage([(b"X-T", b"1")])]

    run(main())
