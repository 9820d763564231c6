"""The HTTP/1.1 socket edge: an asyncio Protocol that turns bytes into parser events and back.

Used for both the listener's connections (client end) and the origin connections (server end).
Reading pauses while more than ``HIGH_WATER`` bytes of parsed body wait in the queue, so a slow
tunnel slows the local sender down through TCP instead of growing memory here; writing exposes
``drain()`` so a slow local reader slows the tunnel down (and, through flow-control credit, the
peer).

Writes are joined: bytes written in one loop iteration (a response head and the body bytes already
received with it, several DATA frames read in one go) leave in one ``transport.write`` at the end
of the iteration, or at once when ``FLUSH_BYTES`` are pending, so the pending buffer stays bounded
and ``pause_writing`` still follows the socket (``drain()`` sees it after the flush).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, Protocol

from ptproxy.errors import (  # re-exported
    ConnectionClosed,
    ConnectionReset,
    HeadTimeout,
    PtproxyError,
)
from ptproxy.wire.events import BodyData, EndOfMessage
from ptproxy.wire.framing import FlowMarks

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "ConnectionClosed",
    "ConnectionReset",
    "EventParser",
    "FLUSH_BYTES",
    "H1Connection",
    "HeadTimeout",
    "WriteFlow",
]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# Pending written bytes that go to the transport at once rather than at the end of the iteration:
# bounds what a writer looping without yielding (a stream with much data queued) holds here, and
# lets the transport's high-water mark pause it through drain().
FLUSH_BYTES = 64 * 1024


class EventParser(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...


class WriteFlow(asyncio.Protocol):
    """What the two socket protocols (H1Connection here, splice.SocketEnd) do alike: TCP_NODELAY
    when connected, and the write side's flow control (``pause_writing``/``resume_writing`` from the
    transport, the futures their ``drain()`` waits on released at resume and at close)."""

    _tcp_nodelay: bool
    _write_paused: bool
    _drain_waiters: list[asyncio.Future[None]]

    def _set_nodelay(self, transport: asyncio.BaseTransport) -> None:
        # Both event loops (asyncio's selector transport, uvloop's TCPTransport) set TCP_NODELAY on
        # every TCP socket they wrap, accepted or connected: with the option on (the default) there
        # is nothing to do (not even fetching the socket object), with it off Nagle is put back.
        if self._tcp_nodelay:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            except OSError:
                pass

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drain_waiters()

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class H1Connection(WriteFlow):
    """Bytes in → events out (queue with backpressure); bytes out with ``drain()``."""

    def __init__(self, parser: EventParser | None = None, *, tcp_nodelay: bool = True) -> None:
        self.parser = parser
        self._transport: asyncio.Transport | None = None
        self._tcp_nodelay = tcp_nodelay
        self._events: deque[Any] = deque()
        self._marks = FlowMarks(HIGH_WATER, LOW_WATER)
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._eof = False
        self._reset: Exception | None = None  # why the connection ended, if not by a clean FIN
        self._closed = False
        self._raw: bytearray = bytearray()  # bytes received while no parser is set
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._pending: list[bytes] = []  # written this iteration, not yet given to the transport
        self._pending_bytes = 0
        self._flush_scheduled = False
        self.transport_writes = 0  # transport.write calls made (tests and measurements)
        self.closed_future: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.peername: Any = None
        self.sockname: Any = None
        # Loop time of the first byte received since the last EndOfMessage (None: none yet), so a
        # listener can tell an idle keep-alive connection from a slow (slowloris) request head.
        self.message_started_at: float | None = None
        # The running wait's deadline (loop time; None: no wait with a timeout), and the one
        # timer that enforces it (see _arm_deadline).
        self._deadline: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_timer_at = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        """The socket's transport. Handing it out flushes the pending bytes first: whoever uses it
        directly (a WebSocket splice adopting it) must not get ahead of what was written here."""
        self.flush()
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self._set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        if self.message_started_at is None and data:
            self.message_started_at = asyncio.get_running_loop().time()
            self._wake()  # a waiter with a head_timeout switches from the idle to the head deadline
        if self.parser is None:
            self._raw += data
            self._wake()
            return
        try:
            events = self.parser.feed(data)
        except PtproxyError as exc:
            self._error = exc
            self._wake()
            return
        self._enqueue(events)
        # A valid message followed by a bad one: the parser returns the good events and keeps
        # the error; surface it after them so the bad request still gets its answer.
        error = getattr(self.parser, "error", None)
        if error is not None:
            self._error = error
            self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return True  # keep the write side open: a half-closed client may still read the answer

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._eof:
            # ECONNRESET and the like: the input was cut, not ended. After a FIN, all the input
            # arrived; a later error (writing to a peer that is gone) does not change that.
            self._reset = exc
        self._closed = True
        self._eof = True
        self._drop_pending()
        self._cancel_deadline()  # a closed connection must not stay referenced by a timer
        self._wake()
        self._release_drain_waiters()
        if not self.closed_future.done():
            self.closed_future.set_result(None)

    # -- events in ----------------------------------------------------------------------------

    def _enqueue(self, events: list[Any]) -> None:
        if not events:
            return
        pause = False
        marks = self._marks
        for ev in events:
            if type(ev) is BodyData:
                pause = marks.add(len(ev.data)) or pause
            elif type(ev) is EndOfMessage:
                self.message_started_at = None
        self._events.extend(events)
        if pause and self._transport is not None:
            self._transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def set_parser(self, parser: EventParser) -> None:
        """Switch to a new parser (one per origin response); replays bytes received meanwhile."""
        self.parser = parser
        if self._raw:
            raw, self._raw = bytes(self._raw), bytearray()
            self.data_received(raw)

    def message_error(self) -> BaseException | None:
        """The parse error waiting behind the queued events, if it belongs to the message in
        progress (no EndOfMessage queued before it): that message is known to be bad already,
        so the caller can refuse it before forwarding any of it."""
        if self._error is None or any(type(ev) is EndOfMessage for ev in self._events):
            return None
        return self._error

    def take_last_body(self) -> bytes | None:
        """Take the next two events if they are already here and are a body piece and the
        EndOfMessage (without trailers) right behind it, i.e. the rest of a message whose head was
        just delivered (what two :meth:`next_event` calls would return at once); the piece's bytes,
        else None (nothing taken)."""
        events = self._events
        if len(events) < 2 or type(events[0]) is not BodyData:
            return None
        end = events[1]
        if type(end) is not EndOfMessage or end.trailers:
            return None
        data: bytes = events.popleft().data
        events.popleft()
        if self._marks.remove(len(data)) and self._transport is not None:
            self._transport.resume_reading()
        return data

    def take_end_of_message(self) -> bool:
        """Take the next event if it is already here and is an EndOfMessage without trailers
        (what :meth:`next_event` would return at once); whether it was."""
        events = self._events
        if events and type(events[0]) is EndOfMessage and not events[0].trailers:
            events.popleft()
            return True
        return False

    def has_buffered_input(self) -> bool:
        return bool(self._events) or bool(self._raw)

    async def next_event(self, timeout: float | None = None, *, head_timeout: float | None = None) -> Any:
        """The next parser event; raises the parse error, ConnectionClosed, or TimeoutError.

        ``timeout`` bounds the wait while no byte of a new message has arrived; with
        ``head_timeout``, once one has, the wait ends ``head_timeout`` seconds after that byte
        with :class:`HeadTimeout` instead."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._eof:
                if self._reset is not None:
                    raise ConnectionReset(f"connection reset: {_describe_os_error(self._reset)}")
                raise ConnectionClosed("connection closed by peer")
            in_head = head_timeout is not None and self.message_started_at is not None
            if in_head:
                remaining: float | None = self.message_started_at + head_timeout - loop.time()  # type: ignore[operator]
            elif timeout is not None:
                remaining = start + timeout - loop.time()
            else:
                remaining = None
            if remaining is not None and remaining <= 0:
                raise HeadTimeout("request head incomplete") if in_head else TimeoutError()
            # One future, woken by the data or by the deadline timer: asyncio.wait_for would add a
            # second future and a callback between them, i.e. one more loop iteration per message.
            waiter = self._waiter = loop.create_future()
            if remaining is not None:
                self._arm_deadline(loop, loop.time() + remaining, remaining)
            try:
                await waiter
            finally:
                self._waiter = None
                self._deadline = None
        ev = self._events.popleft()
        if type(ev) is BodyData and self._marks.remove(len(ev.data)) and self._transport is not None:
            self._transport.resume_reading()
        return ev

    def _arm_deadline(self, loop: asyncio.AbstractEventLoop, deadline: float, delay: float) -> None:
        """Wake the waiter at ``deadline`` (loop time). The one timer outlives the wait it was
        armed for: a wait that ends first leaves it running, and the next wait, whose deadline
        is usually later (the same timeout from a later start), reuses it, since on firing it
        only re-arms for the deadline then current. A timer per wait meant a libuv timer made
        and closed per message at both ends (uvloop allocates one per call_later)."""
        self._deadline = deadline
        timer = self._deadline_timer
        if timer is not None:
            if self._deadline_timer_at <= deadline:
                return
            timer.cancel()
        self._deadline_timer_at = deadline
        self._deadline_timer = loop.call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        deadline = self._deadline
        if deadline is None or self._closed:
            return  # no wait with a deadline now: the next one arms its own timer
        loop = asyncio.get_running_loop()
        now = loop.time()
        if deadline > now:
            # The wait now running started after this timer was armed: its deadline is later.
            self._deadline_timer_at = deadline
            self._deadline_timer = loop.call_later(deadline - now, self._on_deadline)
            return
        self._wake()  # next_event re-checks the time and raises its timeout

    def _cancel_deadline(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    @property
    def at_eof(self) -> bool:
        return self._eof

    # -- bytes out ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; it leaves with everything else written in this loop iteration (one
        write syscall instead of one per piece), or at once past ``FLUSH_BYTES``."""
        if self._transport is None or self._closed or not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            # call_soon, not a timer: the flush runs before the loop next blocks on I/O, so a lone
            # piece is not delayed, only joined with what this iteration writes after it.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def write_now(self, data: bytes) -> None:
        """:meth:`write` then :meth:`flush`: ``data`` leaves at once, behind what is pending, in one
        transport call, and no end-of-iteration flush is scheduled for it (a message complete
        already: a bodiless request to the origin, a whole response)."""
        if self._transport is None or self._closed or not data:
            return
        if self._pending:
            self._pending.append(data)
            self.flush()
            return
        self.transport_writes += 1
        self._transport.write(data)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Give the pending bytes to the transport now, in one call (one syscall)."""
        if not self._pending:
            return
        pending = self._pending
        self._pending = []
        self._pending_bytes = 0
        if self._transport is None or self._closed:
            return
        self.transport_writes += 1
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            # uvloop sends a list as one writev, without first copying the pieces into one.
            self._transport.writelines(pending)

    def _drop_pending(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    @property
    def drain_needed(self) -> bool:
        """Whether :meth:`drain` would wait or raise: a caller may skip awaiting it otherwise (a
        coroutine per body piece for nothing)."""
        return self._write_paused or self._closed

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self._closed:
            raise ConnectionClosed("connection closed by peer")
        if self._write_paused:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut
            if self._closed:
                raise ConnectionClosed("connection closed by peer")

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self.flush()  # a close sends what was written before it (an error response)
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            # What was written goes first, as it did before writes were joined: the peer sees
            # the head and the bytes it got, then the reset (not a reset instead of them).
            self.flush()
            self._transport.abort()


def _describe_os_error(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
