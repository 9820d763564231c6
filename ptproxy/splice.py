"""A byte relay both ways between a TCP connection and a tunnel stream (a CONNECT stream, or an
HTTP/1.1 connection once it switched protocols).

API::

    from ptproxy.splice import SocketEnd, Splice

    # the socket side: the protocol of a new connection ...
    server = await loop.create_server(SocketEnd, host, port)          # or create_connection
    # ... or an existing transport taken over from another protocol (an upgraded HTTP/1.1
    # connection), with the bytes that protocol had read past the head and whether it saw EOF:
    end = SocketEnd.adopt(transport, leftover=b"...", eof=False)

    await end.wait_connected()          # after create_server: connection_made comes a step later
    splice = Splice(end, stream, idle_timeout=300.0, on_bytes=count)   # on_bytes(direction, n)
    result = await splice.run()         # returns when both ways ended, or one failed
    splice.abort("shutting down")       # from elsewhere: end it now (both sides reset)

``run()`` never raises for I/O failures and logs nothing: it returns a :class:`SpliceResult`
(``clean``, ``reason``, bytes each way) for the caller to log in one line naming its route. On
return the socket is closed and the stream finished either way.

What it does:

- backpressure both ways, bounded memory: reading the socket pauses while more than ``HIGH_WATER``
  bytes wait to go on the stream (which waits while the connection's send buffer is full); the
  stream is read (and so its flow-control credit given back) only once the socket's write buffer
  drained below asyncio's high-water mark.
- half-close carried both ways: the socket's EOF ends our half of the stream (FIN); the stream's
  FIN becomes ``write_eof()`` (``shutdown(SHUT_WR)``). Each direction goes on until its own end.
- reset both ways: a reset socket (or one that failed) resets the stream with ``H3_CONNECT_ERROR``
  (RFC 9114 4.4); a reset stream (or a lost session) aborts the socket with an RST (SO_LINGER 0),
  so neither peer takes a cut stream for a clean end.
- idle timeout: no byte either way for ``idle_timeout`` seconds ends both sides (the socket is
  closed, the stream reset).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from ptproxy.errors import ConnectionClosed, ConnectionReset, PtproxyError, StreamAborted
from ptproxy.h1conn import WriteFlow
from ptproxy.tunnel import DataFrame, StreamEnded, TunnelStream
from ptproxy.values import MutableValue

__all__ = [
    "H3_CONNECT_ERROR",
    "HIGH_WATER",
    "READ_CHUNK",
    "Direction",
    "SocketEnd",
    "Splice",
    "SpliceIdle",
    "SpliceResult",
    "TcpMeter",
    "metered_bytes",
]

# RFC 9114 8.1: the connection of a CONNECT request was reset or closed abnormally.
H3_CONNECT_ERROR = 0x10F
HIGH_WATER = 256 * 1024  # bytes read from the socket and not yet sent on the stream: pause above
LOW_WATER = 64 * 1024  # ... and resume below
READ_CHUNK = 128 * 1024  # the most one DATA frame carries

Direction = Literal["to_stream", "to_socket"]


class SpliceIdle(PtproxyError, status=504):
    """No byte went either way for the idle timeout."""


class TcpMeter(Protocol):
    """Per-route counters of TCP streams (ops/metrics.py implements it). ``direction``:
    ``to_origin`` or ``to_client``, the same at both ends."""

    def tcp_opened(self, route: str) -> None: ...

    def tcp_closed(self, route: str) -> None: ...

    def tcp_bytes(self, route: str, direction: str, nbytes: int) -> None: ...


def metered_bytes(
    meter: TcpMeter | None, route: str, names: dict[Direction, str]
) -> Callable[[Direction, int], None] | None:
    """A :class:`Splice` ``on_bytes`` that adds to ``meter``'s counters of ``route``, each direction
    under its name in ``names`` (``to_origin`` / ``to_client``: which way that is depends on the
    end); None without a meter."""
    if meter is None:
        return None
    return lambda direction, nbytes: meter.tcp_bytes(route, names[direction], nbytes)


class SocketEnd(WriteFlow):
    """The socket side of a splice: received bytes in a bounded buffer, writes with ``drain()``."""

    def __init__(self, *, tcp_nodelay: bool = True) -> None:
        self.transport: asyncio.Transport | None = None
        self.peername: object = None
        self._tcp_nodelay = tcp_nodelay
        self._buffer = bytearray()
        self._eof = False
        self._error: Exception | None = None  # why the input was cut (not ended by a FIN)
        self._closed = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._connected: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    @classmethod
    def adopt(
        cls,
        transport: asyncio.Transport,
        leftover: bytes = b"",
        *,
        eof: bool = False,
        tcp_nodelay: bool = True,
    ) -> SocketEnd:
        """Take over a connected transport from its protocol (which must not use it again):
        ``leftover`` are the bytes it had received and not consumed, ``eof`` whether it saw the
        peer's FIN."""
        end = cls(tcp_nodelay=tcp_nodelay)
        transport.set_protocol(end)
        end.connection_made(transport)
        if leftover:
            end.data_received(leftover)
        if eof:
            end.eof_received()
        if not end._paused:
            transport.resume_reading()  # the old protocol may have paused it
        return end

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        self._set_nodelay(transport)
        if not self._connected.done():
            self._connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._paused and len(self._buffer) > HIGH_WATER and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep our write side open: the peer half-closed, it may still read

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._eof:
            self._error = exc
        self._closed = True
        self._eof = True
        self._wake()
        self._release_drain_waiters()
        if not self._connected.done():
            self._connected.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- reading ------------------------------------------------------------------------------

    async def wait_connected(self) -> None:
        await self._connected

    async def read(self, limit: int = READ_CHUNK) -> bytes:
        """Up to ``limit`` bytes; ``b""`` at the peer's FIN; ConnectionReset if the input was cut."""
        while not self._buffer:
            if self._error is not None:
                raise ConnectionReset(f"connection reset: {_describe(self._error)}")
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        if (
            self._paused
            and len(self._buffer) < LOW_WATER
            and self.transport is not None
            and not self._closed
        ):
            self._paused = False
            self.transport.resume_reading()
        return data

    # -- writing ------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        if self._closed or self.transport is None:
            raise ConnectionClosed("connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self._write_paused and not self._closed:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut
        if self._closed:
            raise ConnectionClosed("connection closed")

    def write_eof(self) -> None:
        """Half-close: FIN after what is buffered (``shutdown(SHUT_WR)``); reading goes on."""
        if self.transport is not None and not self._closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        """Close cleanly (FIN after what is buffered)."""
        if self.transport is not None and not self._closed:
            self.transport.close()

    def abort(self) -> None:
        """Close with an RST: the peer sees ECONNRESET, never a clean end."""
        if self.transport is None or self._closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()


class SpliceResult(MutableValue):
    """How a splice ended: ``clean`` when both ways ended with a FIN; else ``reason``."""

    # Written out, not @dataclass(slots=True) (the same fields, __init__, __eq__ and repr): this
    # module is imported on the client end's path to serving, after its first Initial.
    __slots__ = ("clean", "reason", "to_stream", "to_socket", "seconds")
    __match_args__ = ("clean", "reason", "to_stream", "to_socket", "seconds")

    def __init__(self, clean: bool, reason: str, to_stream: int, to_socket: int, seconds: float) -> None:
        self.clean = clean
        self.reason = reason
        self.to_stream = to_stream
        self.to_socket = to_socket
        self.seconds = seconds


class _Failed(PtproxyError):
    """One direction failed: ``reset_stream`` tells which side must be reset (the other one)."""

    def __init__(self, reason: str, *, reset_stream: bool, reset_socket: bool) -> None:
        super().__init__(reason)
        self.reset_stream = reset_stream
        self.reset_socket = reset_socket


class Splice:
    """One relay between ``end`` and ``stream`` (both already connected / answered)."""

    def __init__(
        self,
        end: SocketEnd,
        stream: TunnelStream,
        *,
        idle_timeout: float,
        on_bytes: Callable[[Direction, int], None] | None = None,
    ) -> None:
        self.end = end
        self.stream = stream
        self.idle_timeout = idle_timeout
        self._on_bytes = on_bytes
        self.to_stream = 0
        self.to_socket = 0
        self._last = time.monotonic()
        self._aborted: asyncio.Future[str] = asyncio.get_event_loop().create_future()

    def abort(self, reason: str) -> None:
        """End the splice now (both sides reset); ``run()`` returns with ``reason``."""
        if not self._aborted.done():
            self._aborted.set_result(reason)

    async def run(self) -> SpliceResult:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        tasks = {
            loop.create_task(self._socket_to_stream()),
            loop.create_task(self._stream_to_socket()),
        }
        # Cancelled (or a bug) before the end is known: both sides are reset, never left open.
        failure: _Failed | None = _Failed("cancelled", reset_stream=True, reset_socket=True)
        try:
            failure = await self._wait(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._close(failure)
        reason = str(failure) if failure is not None else "closed by both sides"
        return SpliceResult(
            failure is None, reason, self.to_stream, self.to_socket, time.monotonic() - started
        )

    async def run_in(
        self, running: set[Splice], meter: TcpMeter | None = None, route: str = ""
    ) -> SpliceResult:
        """:meth:`run`, with this splice in ``running`` meanwhile (the set a shutdown aborts) and,
        given a ``meter``, counted as an open TCP stream of ``route``."""
        running.add(self)
        if meter is not None:
            meter.tcp_opened(route)
        try:
            return await self.run()
        finally:
            running.discard(self)
            if meter is not None:
                meter.tcp_closed(route)

    async def _wait(self, tasks: set[asyncio.Task[None]]) -> _Failed | None:
        """Until both directions ended (None) or one failed, the idle timeout passed, or
        :meth:`abort` was called (the failure)."""
        pending: set[asyncio.Future[Any]] = {*tasks, self._aborted}
        while tasks & pending:
            remaining = self._last + self.idle_timeout - time.monotonic()
            if remaining <= 0:
                return _Failed(
                    f"no byte either way for {self.idle_timeout:g}s",
                    reset_stream=True,
                    reset_socket=False,
                )
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if self._aborted in done:
                return _Failed(self._aborted.result(), reset_stream=True, reset_socket=True)
            for task in done:
                error = task.exception()
                if isinstance(error, _Failed):
                    return error
                if error is not None:
                    raise error
        return None

    def _close(self, failure: _Failed | None) -> None:
        if failure is None:
            self.end.close()
            self.stream.finish()
            return
        if failure.reset_stream:
            self.stream.reset(H3_CONNECT_ERROR)
        else:
            self.stream.finish()  # stream's end is the cause: it was reset already, or ended
        if failure.reset_socket:
            self.end.abort()
        else:
            self.end.close()

    def _count(self, direction: Direction, nbytes: int) -> None:
        self._last = time.monotonic()
        if direction == "to_stream":
            self.to_stream += nbytes
        else:
            self.to_socket += nbytes
        if self._on_bytes is not None:
            self._on_bytes(direction, nbytes)

    async def _socket_to_stream(self) -> None:
        stream = self.stream
        while True:
            try:
                data = await self.end.read()
            except ConnectionReset as exc:
                raise _Failed(f"TCP peer {exc}", reset_stream=True, reset_socket=True) from None
            try:
                if not data:
                    stream.end()  # the TCP peer's FIN: end our half of the stream
                    return
                await stream.send_data(data)
            except StreamAborted as exc:
                raise _Failed(f"stream: {exc}", reset_stream=True, reset_socket=True) from None
            self._count("to_stream", len(data))

    async def _stream_to_socket(self) -> None:
        end = self.end
        while True:
            try:
                event = await self.stream.receive()
            except StreamAborted as exc:
                raise _Failed(f"stream: {exc}", reset_stream=False, reset_socket=True) from None
            try:
                if type(event) is DataFrame:
                    if event.data:
                        end.write(event.data)
                        self._count("to_socket", len(event.data))
                        await end.drain()
                elif type(event) is StreamEnded:
                    end.write_eof()  # the stream's FIN: shutdown(SHUT_WR)
                    return
                # HEADERS after the response (trailers) carry nothing for a byte stream.
            except ConnectionClosed as exc:
                raise _Failed(
                    f"TCP peer went away: {exc}", reset_stream=True, reset_socket=True
                ) from None


def _describe(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
