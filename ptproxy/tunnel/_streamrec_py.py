"""Pure twin of the per-stream record ``TunnelStream`` (compiled: ``ptproxy._speedups.streamrec``;
``ptproxy.tunnel.streamrec`` picks one, ``ptproxy.tunnel.stream`` is where the rest of the code
imports it from and describes it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from ptproxy.tunnel.streamtypes import (
    H3_REQUEST_CANCELLED,
    DataFrame,
    HalfState,
    StreamAborted,
    StreamEnded,
    StreamEvent,
)

__all__ = ["TunnelStream"]


class StreamOwner(Protocol):
    """What a stream needs from the connection that carries it (the session)."""

    def credit(self, stream_id: int, nbytes: int) -> None: ...

    def send_headers(self, stream: TunnelStream, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...

    def send_data(self, stream: TunnelStream, data: bytes, end: bool) -> None: ...

    async def wait_send_room(self, stream: TunnelStream) -> None: ...

    def reset_stream(self, stream: TunnelStream, code: int) -> None: ...

    def stop_stream(self, stream: TunnelStream, code: int) -> None: ...

    def stream_maybe_done(self, stream: TunnelStream) -> None: ...


class TunnelStream:
    """Receive queue + send helpers for one bidirectional request stream."""

    __slots__ = ("_aborted", "_events", "_owner", "_recv", "_send", "_send_error", "_waiter", "stream_id")

    def __init__(self, owner: StreamOwner, stream_id: int) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self._events: deque[StreamEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._aborted: Exception | None = None  # a StreamAborted, or the reason given to reset()
        # Only our sending half failed (the peer sent STOP_SENDING): its response still counts.
        self._send_error: Exception | None = None
        self._send = HalfState.OPEN
        self._recv = HalfState.OPEN

    # -- state (read by the session and the relays) -------------------------------------------

    @property
    def send_state(self) -> HalfState:
        return self._send

    @property
    def recv_state(self) -> HalfState:
        return self._recv

    @property
    def send_closed(self) -> bool:
        """Nothing more may be sent: our FIN or a reset (ours, or forced by STOP_SENDING)."""
        return self._send is not HalfState.OPEN

    @property
    def recv_closed(self) -> bool:
        """Nothing more will be read: the peer's FIN consumed, a reset, or we stopped reading."""
        return self._recv is not HalfState.OPEN

    @property
    def aborted(self) -> Exception | None:
        return self._aborted

    @property
    def send_error(self) -> Exception | None:
        """Why nothing more may be sent, if it failed (rather than ended): a reset or abort."""
        return self._aborted or self._send_error

    # -- fed by the session -------------------------------------------------------------------

    def _push(self, event: StreamEvent) -> None:
        self._events.append(event)
        self._wake()

    def _abort(self, reason: Exception) -> None:
        if self._aborted is None:
            self._aborted = reason
        self._wake()

    def _peer_reset(self, code: int) -> None:
        """The peer reset its sending half (RESET_STREAM): our receive half is over, cut short."""
        self._recv = HalfState.RESET
        self._abort(StreamAborted(f"peer reset the stream (code {code:#x})", code))

    def _peer_stopped(self, code: int) -> None:
        """The peer stopped reading (STOP_SENDING); aioquic has already reset our sending half.

        Only that half is over: the peer may still answer (an early response, RFC 9114 4.1), so
        a reader of this stream keeps receiving; a writer gets the error at its next send."""
        self._send = HalfState.RESET
        if self._send_error is None:
            self._send_error = StreamAborted(f"peer stopped reading (code {code:#x})", code)

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
        self._took(event)
        return event

    def _took(self, event: StreamEvent) -> None:
        """An event taken from the queue: a DATA piece's bytes consumed (the credit goes back to
        the peer), the FIN closing the receive half."""
        if isinstance(event, DataFrame):
            if event.data:
                self._owner.credit(self.stream_id, len(event.data))
        elif isinstance(event, StreamEnded):
            self._recv = HalfState.CLOSED
            self._owner.stream_maybe_done(self)

    def whole_body(self) -> bytes | None:
        """The rest of the peer's message if it is all here: only DATA pieces queued, the FIN
        (StreamEnded) last, no abort; their bytes joined (b"" for the FIN alone), else None.

        Nothing is taken: the caller writes the bytes, then :meth:`consume_queued` credits them
        and closes the receive half, as the :meth:`receive` calls that would have read them (a
        whole small response written in one go, before that bookkeeping)."""
        events = self._events
        if self._aborted is not None or not events or type(events[-1]) is not StreamEnded:
            return None
        if len(events) == 2:  # the usual: one piece and the FIN
            event = events[0]
            return event.data if type(event) is DataFrame else None
        pieces = []
        for event in events:
            if type(event) is DataFrame:
                pieces.append(event.data)
            elif type(event) is not StreamEnded:
                return None
        return b"".join(pieces)

    def consume_queued(self) -> None:
        """Take every queued event as :meth:`receive` would (each DATA piece's bytes credited, the
        FIN closing the receive half), after :meth:`whole_body`'s bytes were written.

        The credit must come from here: the session's forget_stream credits unread bytes only
        while aioquic still holds the stream, and a stream whose both halves are over may be
        discarded by its next transmit; bytes never credited shrink the connection's window for
        good, until a busy session stalls on it."""
        events = self._events
        while events:
            self._took(events.popleft())

    def stop_receiving(self, code: int = H3_REQUEST_CANCELLED) -> None:
        """We will not read the rest: tell the peer to stop sending, and free the credit."""
        if self._recv is not HalfState.OPEN:
            return
        if self._events and isinstance(self._events[-1], StreamEnded):
            # The peer's half is complete already (its FIN is queued, unread): nothing to stop.
            self._events.clear()
            self._recv = HalfState.CLOSED
        else:
            self._recv = HalfState.RESET
            self._events.clear()
            self._owner.stop_stream(self, code)
        self._owner.stream_maybe_done(self)

    # -- send side ----------------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        self._check_send()
        self._owner.send_headers(self, headers, end_stream)
        if end_stream:
            self._sent_fin()

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send one DATA frame; waits first while the connection's send buffer is full."""
        self._check_send()
        if data:
            await self._owner.wait_send_room(self)
            self._check_send()
        self._owner.send_data(self, data, end_stream)
        if end_stream:
            self._sent_fin()

    def send_final(self, data: bytes) -> None:
        """Send ``data`` as the last DATA frame now, without waiting for send-buffer room.

        For a short body this end makes up itself (an error response): it must go out even
        when the connection's send buffer is full, and from code that cannot wait."""
        self._check_send()
        self._owner.send_data(self, data, True)
        self._sent_fin()

    def end(self) -> None:
        """Finish our half without more data."""
        if self._send is HalfState.OPEN:
            self.send_final(b"")

    def _sent_fin(self) -> None:
        self._send = HalfState.CLOSED
        self._owner.stream_maybe_done(self)

    def reset(self, code: int = H3_REQUEST_CANCELLED, reason: Exception | None = None) -> None:
        """Abort our half: the peer sees a reset, never a silently short message.

        A task of ours still waiting in :meth:`receive` gets ``reason`` raised (default: a
        StreamAborted), so it can answer with the cause instead of waiting forever."""
        if self._send is HalfState.OPEN:
            self._send = HalfState.RESET
            self._owner.reset_stream(self, code)
        # Nothing will ever arrive once we stop receiving: wake a waiter with the abort instead
        # of leaving it (and shutdown, which waits for it) hanging.
        self._abort(reason if reason is not None else StreamAborted("stream reset by this end", code))
        self.stop_receiving(code)
        self._owner.stream_maybe_done(self)

    def finish(self) -> None:
        """The exchange is over: close whatever half is still open so the stream is freed.

        A FIN still queued (a bodiless request nobody read to the end) closes the receive half
        quietly; unread data means we gave up on it (STOP_SENDING); an unfinished send half is
        reset, never left dangling.
        """
        if self._recv is HalfState.OPEN:
            if self._aborted is None:
                self.stop_receiving()
            else:
                # Aborted already (session lost, or reset by either end): nothing more to tell it.
                self._recv = HalfState.RESET
        if self._send is HalfState.OPEN:
            self.reset()
        self._owner.stream_maybe_done(self)

    def _check_send(self) -> None:
        error = self.send_error
        if error is not None:
            raise error
        if self._send is not HalfState.OPEN:
            raise StreamAborted("stream already closed for sending")
