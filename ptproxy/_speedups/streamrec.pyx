# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of ``ptproxy.tunnel._streamrec_py``: the per-stream record ``TunnelStream``, a cdef
class with the same ``__all__``, methods, properties, exceptions and state transitions.

The record is made once per request stream at each end and read by the session and the relays
many times per request (``send_closed`` / ``recv_closed`` in ``Session.stream_maybe_done``, the
receive queue, the send checks): here its fields are C slots and its properties C getters, so none
of those reads or the calls between its own methods makes a Python frame. The owner's methods
(``StreamOwner``) are still called through Python.

Imports nothing from ptproxy but ``errors`` (StreamAborted): ``HalfState``, ``DataFrame`` and
``StreamEnded`` are handed in by :func:`configure` (``ptproxy.tunnel.streamrec`` does it at import).
"""

from collections import deque
from asyncio import get_running_loop

from ptproxy.errors import StreamAborted

__all__ = ["TunnelStream"]

# RFC 9114 8.1 H3_REQUEST_CANCELLED (the facade checks it equals aioquic's ErrorCode value).
_CANCELLED = 0x10C

cdef object _OPEN = None
cdef object _CLOSED = None
cdef object _RESET = None
cdef object _DataFrame = None
cdef object _StreamEnded = None


def configure(*, half_state, data_frame, stream_ended):
    """Hand in the classes the record works with (``ptproxy.tunnel.streamrec`` calls it once)."""
    global _OPEN, _CLOSED, _RESET, _DataFrame, _StreamEnded
    _OPEN = half_state.OPEN
    _CLOSED = half_state.CLOSED
    _RESET = half_state.RESET
    _DataFrame = data_frame
    _StreamEnded = stream_ended


cdef class TunnelStream:
    """Receive queue + send helpers for one bidirectional request stream (compiled record)."""

    cdef readonly object stream_id
    cdef object _owner
    cdef readonly object _events  # read by benchmarks/micro/reconnect.py, as on the pure record
    cdef object _waiter
    cdef object _aborted
    cdef object _send_error
    cdef object _send
    cdef object _recv

    def __init__(self, owner, stream_id):
        self._owner = owner
        self.stream_id = stream_id
        self._events = deque()
        self._waiter = None
        self._aborted = None
        self._send_error = None
        self._send = _OPEN
        self._recv = _OPEN

    # -- state --------------------------------------------------------------------------------

    @property
    def send_state(self):
        return self._send

    @property
    def recv_state(self):
        return self._recv

    @property
    def send_closed(self):
        return self._send is not _OPEN

    @property
    def recv_closed(self):
        return self._recv is not _OPEN

    @property
    def aborted(self):
        return self._aborted

    @property
    def send_error(self):
        return self._aborted or self._send_error

    # -- fed by the session -------------------------------------------------------------------

    def _push(self, event):
        self._events.append(event)
        self._wake_c()

    def _abort(self, reason):
        self._abort_c(reason)

    cdef inline void _abort_c(self, reason) except *:
        if self._aborted is None:
            self._aborted = reason
        self._wake_c()

    def _peer_reset(self, code):
        self._recv = _RESET
        self._abort_c(StreamAborted(f"peer reset the stream (code {code:#x})", code))

    def _peer_stopped(self, code):
        self._send = _RESET
        if self._send_error is None:
            self._send_error = StreamAborted(f"peer stopped reading (code {code:#x})", code)

    def _wake(self):
        self._wake_c()

    cdef inline void _wake_c(self) except *:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- receive side -------------------------------------------------------------------------

    async def receive(self):
        """Next event from the peer; raises StreamAborted if the stream was reset or lost."""
        while not self._events:
            if self._aborted is not None:
                raise self._aborted
            self._waiter = get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        self._took_c(event)
        return event

    cdef inline void _took_c(self, event) except *:
        """An event taken from the queue: DATA credited, the FIN closing the receive half."""
        kind = type(event)
        if kind is _DataFrame:
            data = event.data
            if data:
                self._owner.credit(self.stream_id, len(data))
        elif kind is _StreamEnded:
            self._recv = _CLOSED
            self._owner.stream_maybe_done(self)

    def whole_body(self):
        """The rest of the peer's message if it is all here (DATA pieces, the FIN last), else None."""
        events = self._events
        cdef Py_ssize_t n = len(events)
        if self._aborted is not None or n == 0 or type(events[n - 1]) is not _StreamEnded:
            return None
        if n == 2:
            event = events[0]
            return event.data if type(event) is _DataFrame else None
        pieces = []
        for event in events:
            kind = type(event)
            if kind is _DataFrame:
                pieces.append(event.data)
            elif kind is not _StreamEnded:
                return None
        return b"".join(pieces)

    def consume_queued(self):
        """Take every queued event as receive() would (DATA credited, the FIN closing the half)."""
        events = self._events
        while events:
            self._took_c(events.popleft())

    def stop_receiving(self, code=_CANCELLED):
        """We will not read the rest: tell the peer to stop sending, and free the credit."""
        self._stop_receiving_c(code)

    cdef void _stop_receiving_c(self, code) except *:
        if self._recv is not _OPEN:
            return
        events = self._events
        if events and isinstance(events[len(events) - 1], _StreamEnded):
            events.clear()
            self._recv = _CLOSED
        else:
            self._recv = _RESET
            events.clear()
            self._owner.stop_stream(self, code)
        self._owner.stream_maybe_done(self)

    # -- send side ----------------------------------------------------------------------------

    def send_headers(self, headers, end_stream=False):
        self._check_send_c()
        self._owner.send_headers(self, headers, end_stream)
        if end_stream:
            self._sent_fin_c()

    async def send_data(self, data, end_stream=False):
        """Send one DATA frame; waits first while the connection's send buffer is full."""
        self._check_send_c()
        if data:
            await self._owner.wait_send_room(self)
            self._check_send_c()
        self._owner.send_data(self, data, end_stream)
        if end_stream:
            self._sent_fin_c()

    def send_final(self, data):
        """Send ``data`` as the last DATA frame now, without waiting for send-buffer room."""
        self._send_final_c(data)

    cdef void _send_final_c(self, data) except *:
        self._check_send_c()
        self._owner.send_data(self, data, True)
        self._sent_fin_c()

    def end(self):
        """Finish our half without more data."""
        if self._send is _OPEN:
            self._send_final_c(b"")

    def _sent_fin(self):
        self._sent_fin_c()

    cdef inline void _sent_fin_c(self) except *:
        self._send = _CLOSED
        self._owner.stream_maybe_done(self)

    def reset(self, code=_CANCELLED, reason=None):
        """Abort our half: the peer sees a reset, never a silently short message."""
        self._reset_c(code, reason)

    cdef void _reset_c(self, code, reason) except *:
        if self._send is _OPEN:
            self._send = _RESET
            self._owner.reset_stream(self, code)
        self._abort_c(reason if reason is not None else StreamAborted("stream reset by this end", code))
        self._stop_receiving_c(code)
        self._owner.stream_maybe_done(self)

    def finish(self):
        """The exchange is over: close whatever half is still open so the stream is freed."""
        if self._recv is _OPEN:
            if self._aborted is None:
                self._stop_receiving_c(_CANCELLED)
            else:
                self._recv = _RESET
        if self._send is _OPEN:
            self._reset_c(_CANCELLED, None)
        self._owner.stream_maybe_done(self)

    def _check_send(self):
        self._check_send_c()

    cdef inline void _check_send_c(self) except *:
        error = self._aborted or self._send_error
        if error is not None:
            raise error
        if self._send is not _OPEN:
            raise StreamAborted("stream already closed for sending")
