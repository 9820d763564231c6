"""One HTTP/3 request stream as the application sees it, on either end of the tunnel.

The session (tunnel/session.py) pushes received events in; the frontend/backend pull them out with
``await receive()``. Pulling an event is what grants flow-control credit back to the peer, so a
slow HTTP/1.1 socket on our side slows the sender down instead of growing a buffer here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from aioquic.h3.connection import ErrorCode

from ptproxy.errors import StreamAborted  # re-exported: defined in the one error tree
from ptproxy.tunnel.aioquic.h3 import DataFrame

if TYPE_CHECKING:
    from ptproxy.tunnel.session import Session

__all__ = [
    "Headers",
    "DataFrame",
    "StreamEnded",
    "StreamAborted",
    "StreamEvent",
    "TunnelStream",
    "H3_REQUEST_CANCELLED",
    "H3_INTERNAL_ERROR",
    "H3_REQUEST_INCOMPLETE",
    "H3_MESSAGE_ERROR",
    "H3_REQUEST_REJECTED",
]

H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_REQUEST_INCOMPLETE = int(ErrorCode.H3_REQUEST_INCOMPLETE)
H3_MESSAGE_ERROR = int(ErrorCode.H3_MESSAGE_ERROR)
# RFC 9114 8.1: the request was not processed at all (safe to send again elsewhere or later).
H3_REQUEST_REJECTED = int(ErrorCode.H3_REQUEST_REJECTED)


@dataclass(frozen=True, slots=True)
class Headers:
    """A HEADERS frame: request or response head (1xx interim included), or trailers."""

    headers: list[tuple[bytes, bytes]]
    stream_ended: bool


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer finished its half of the stream (FIN)."""


StreamEvent = Union[Headers, DataFrame, StreamEnded]


class TunnelStream:
    """Receive queue + send helpers for one bidirectional request stream."""

    __slots__ = (
        "session",
        "stream_id",
        "_events",
        "_waiter",
        "_aborted",
        "send_closed",
        "recv_closed",
        "bytes_in",
        "bytes_out",
    )

    def __init__(self, session: "Session", stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self._events: deque[StreamEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._aborted: Exception | None = None  # a StreamAborted, or the reason given to reset()
        self.send_closed = False
        self.recv_closed = False
        self.bytes_in = 0
        self.bytes_out = 0

    # -- fed by the session -------------------------------------------------------------------

    def _push(self, event: StreamEvent) -> None:
        self._events.append(event)
        self._wake()

    def _abort(self, reason: Exception) -> None:
        if self._aborted is None:
            self._aborted = reason
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- receive side -------------------------------------------------------------------------

    async def receive(self) -> StreamEvent:
        """Next event from the peer; raises StreamAborted if the stream was reset or lost."""
        while not self._events:
            if self._aborted is not None:
                raise self._aborted
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, DataFrame) and event.data:
            # Consumed: give the credit back to the peer.
            self.bytes_in += len(event.data)
            self.session.credit(self.stream_id, len(event.data))
        elif isinstance(event, StreamEnded):
            self.recv_closed = True
            self.session.stream_maybe_done(self)
        return event

    def stop_receiving(self, code: int = H3_REQUEST_CANCELLED) -> None:
        """We will not read the rest: tell the peer to stop sending, and free the credit."""
        if not self.recv_closed:
            self.recv_closed = True
            self._events.clear()
            self.session.stop_stream(self, code)
            self.session.stream_maybe_done(self)

    # -- send side ----------------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        self._check_send()
        self.session.send_headers(self, headers, end_stream)
        if end_stream:
            self.send_closed = True
            self.session.stream_maybe_done(self)

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send one DATA frame; waits first while the connection's send buffer is full."""
        self._check_send()
        if data:
            await self.session.wait_send_room(self)
            self._check_send()
        self.bytes_out += len(data)
        self.session.send_data(self, data, end_stream)
        if end_stream:
            self.send_closed = True
            self.session.stream_maybe_done(self)

    def end(self) -> None:
        """Finish our half without more data."""
        if not self.send_closed:
            self._check_send()
            self.session.send_data(self, b"", True)
            self.send_closed = True
            self.session.stream_maybe_done(self)

    def reset(self, code: int = H3_REQUEST_CANCELLED, reason: Exception | None = None) -> None:
        """Abort our half: the peer sees a reset, never a silently short message.

        A task of ours still waiting in :meth:`receive` gets ``reason`` raised (default: a
        StreamAborted), so it can answer with the cause instead of waiting forever."""
        if not self.send_closed:
            self.send_closed = True
            self.session.reset_stream(self, code)
        # Nothing will ever arrive once we stop receiving: wake a waiter with the abort instead
        # of leaving it (and shutdown, which waits for it) hanging.
        self._abort(reason if reason is not None else StreamAborted("stream reset by this end", code))
        self.stop_receiving(code)
        self.session.stream_maybe_done(self)

    def finish(self) -> None:
        """The exchange is over: close whatever half is still open so the stream is freed.

        A FIN still queued (a bodiless request nobody read to the end) closes the receive half
        quietly; unread data means we gave up on it (STOP_SENDING); an unfinished send half is
        reset, never left dangling.
        """
        if not self.recv_closed:
            if len(self._events) == 1 and isinstance(self._events[0], StreamEnded):
                self._events.clear()
                self.recv_closed = True
            elif self._aborted is None:
                self.stop_receiving()
            else:
                self.recv_closed = True
        if not self.send_closed:
            self.reset()
        self.session.stream_maybe_done(self)

    def _check_send(self) -> None:
        if self._aborted is not None:
            raise self._aborted
        if self.send_closed:
            raise StreamAborted("stream already closed for sending")

    @property
    def aborted(self) -> Exception | None:
        return self._aborted
