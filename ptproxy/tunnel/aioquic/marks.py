"""Which streams a packet needs to look at: the marks behind PatchedQuicConnection._write_application.

aioquic 1.7.2 walks every open stream for every packet it builds (a MAX_STREAM_DATA check per stream,
then the send queue, rebuilt), so an idle connection with 64 open streams paid ~100 µs for a
``datagrams_to_send`` that sent nothing. A stream only has something to send after one of a few
events, each a method of its send or receive half; the subclasses below (built in place of
aioquic's by :func:`install`) note the stream in :class:`StreamMarks` when one happens, and the
connection visits only the marked streams:

- ``ready``: may have a frame to send or be finished (to discard): data or a FIN written, data or a
  FIN or a RESET_STREAM / STOP_SENDING lost, a reset or stop requested, a half finished;
- ``limits``: a MAX_STREAM_DATA may be due (new stream, credit given, the frame lost) - marked by the
  connection, which owns the credit;
- ``received``: data arrived, so the peer may now be blocked by this stream's window (metrics).

A mark may be stale (nothing to do after all): the connection drops it after one visit. A missing
mark would lose a frame, so every state change that aioquic's send loop reacts to is hooked here.
"""

from __future__ import annotations

from aioquic.quic import connection as qc
from aioquic.quic import stream as _stream_module
from aioquic.quic.events import StreamDataReceived, StreamReset
from aioquic.quic.packet import QuicErrorCode, QuicStreamFrame
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.stream import QuicStream, QuicStreamReceiver, QuicStreamSender

__all__ = ["NO_MARKS", "MarkingReceiver", "MarkingSender", "MarkingStream", "StreamMarks", "adopt", "install"]


class StreamMarks:
    """Stream IDs to visit, each dict in the order the marks were made (insertion order)."""

    __slots__ = ("limits", "ready", "received")

    def __init__(self) -> None:
        self.ready: dict[int, None] = {}
        self.limits: dict[int, None] = {}
        self.received: dict[int, None] = {}


class _Discard(dict[int, None]):
    """Marks nobody reads (a stream of a connection that walks all streams, or a crypto stream)."""

    def __setitem__(self, key: int, value: None) -> None:
        return None


NO_MARKS = StreamMarks()
NO_MARKS.ready = NO_MARKS.limits = NO_MARKS.received = _Discard()


class MarkingSender(QuicStreamSender):
    """aioquic's send half, marking its stream ready whenever it may have a frame to send."""

    def __init__(self, stream_id: int | None, writable: bool) -> None:
        super().__init__(stream_id, writable)
        # Set here, not later: attributes added after construction slow every attribute access.
        self._ptp_marks = NO_MARKS
        # None only for crypto streams, which mark NO_MARKS (no typing.cast: a call per stream).
        self._ptp_id: int = stream_id  # type: ignore[assignment]

    def write(self, data: bytes, end_stream: bool = False) -> None:
        # aioquic 1.7.2's QuicStreamSender.write, in this frame (a request's HEADERS, a response's
        # HEADERS, DATA and FIN, the QPACK streams' bytes: several per request and end; ~2k
        # instructions less each than through super()). test_twins_streamframes compares the two.
        if self._buffer_fin is not None:
            raise RuntimeError("Cannot send data after FIN")
        if self._reset_error_code is not None:
            raise RuntimeError("Cannot send data after the stream was reset")
        size = len(data)
        if size:
            self.buffer_is_empty = False
            stop = self._buffer_stop
            self._pending.add(stop, stop + size)
            self._buffer += data
            self._buffer_stop = stop + size
        if end_stream:
            self.buffer_is_empty = False
            self._buffer_fin = self._buffer_stop
            self._pending_eof = True
        self._ptp_marks.ready[self._ptp_id] = None

    def reset(self, error_code: int) -> None:
        super().reset(error_code)
        if self.reset_pending:
            self._ptp_marks.ready[self._ptp_id] = None

    def on_data_delivery(self, delivery: QuicDeliveryState, start: int, stop: int, fin: bool) -> None:
        super().on_data_delivery(delivery, start, stop, fin)
        # Lost: data or the FIN to send again. Acknowledged: finished once everything is.
        if delivery is not QuicDeliveryState.ACKED or self.is_finished:
            self._ptp_marks.ready[self._ptp_id] = None

    def on_reset_delivery(self, delivery: QuicDeliveryState) -> None:
        super().on_reset_delivery(delivery)
        self._ptp_marks.ready[self._ptp_id] = None  # finished, or the reset to send again


class MarkingReceiver(QuicStreamReceiver):
    """aioquic's receive half, marking its stream when it finishes, has a STOP_SENDING to send, or
    received data (its window may be used up)."""

    def __init__(self, stream_id: int | None, readable: bool) -> None:
        super().__init__(stream_id, readable)
        self._ptp_marks = NO_MARKS
        self._ptp_id: int = stream_id  # type: ignore[assignment]

    def handle_frame(self, frame: QuicStreamFrame) -> StreamDataReceived | None:
        event = super().handle_frame(frame)
        marks = self._ptp_marks
        marks.received[self._ptp_id] = None
        if self.is_finished:
            marks.ready[self._ptp_id] = None
        return event

    def handle_reset(self, *, final_size: int, error_code: int = QuicErrorCode.NO_ERROR) -> StreamReset | None:
        event = super().handle_reset(final_size=final_size, error_code=error_code)
        self._ptp_marks.ready[self._ptp_id] = None
        return event

    def stop(self, error_code: int = QuicErrorCode.NO_ERROR) -> None:
        super().stop(error_code)
        self._ptp_marks.ready[self._ptp_id] = None

    def on_stop_sending_delivery(self, delivery: QuicDeliveryState) -> None:
        super().on_stop_sending_delivery(delivery)
        if self.stop_pending:
            self._ptp_marks.ready[self._ptp_id] = None


_new = object.__new__


class MarkingStream(QuicStream):
    """aioquic's QuicStream made of the marking halves (the same attributes, set the same way:
    test_stream_marks compares them), reporting to NO_MARKS until a connection adopts it."""

    sender: MarkingSender
    receiver: MarkingReceiver

    def __init__(
        self,
        stream_id: int | None = None,
        max_stream_data_local: int = 0,
        max_stream_data_remote: int = 0,
        readable: bool = True,
        writable: bool = True,
    ) -> None:
        # Not super().__init__(): it would build aioquic's halves only for us to replace them. The
        # halves are made here too, in this one frame (one per request stream and end, on the way
        # to the request's packet): their attributes stored as aioquic 1.7.2's __init__ and ours
        # store them, in the same order (the same shared-key layout, which the compiled ackpath
        # and streamframes read), instead of four more __init__ frames (~6k instructions less).
        self.is_blocked = False
        self.max_stream_data_local = max_stream_data_local
        self.max_stream_data_local_sent = max_stream_data_local
        self.max_stream_data_remote = max_stream_data_remote
        ranges = _stream_module.RangeSet  # looked up now: quicpath may have put its twin there
        receiver = _new(MarkingReceiver)
        receiver.highest_offset = 0
        receiver.is_finished = not readable
        receiver.stop_pending = False
        receiver._buffer = bytearray()
        receiver._buffer_start = 0
        receiver._final_size = None
        receiver._ranges = ranges()
        receiver._stream_id = stream_id
        receiver._stop_error_code = None
        receiver._ptp_marks = NO_MARKS
        receiver._ptp_id = stream_id  # type: ignore[assignment]
        self.receiver = receiver
        sender = _new(MarkingSender)
        sender.buffer_is_empty = True
        sender.highest_offset = 0
        sender.is_finished = not writable
        sender.reset_pending = False
        sender._acked = ranges()
        sender._acked_fin = False
        sender._buffer = bytearray()
        sender._buffer_fin = None
        sender._buffer_start = 0
        sender._buffer_stop = 0
        sender._pending = ranges()
        sender._pending_eof = False
        sender._reset_error_code = None
        sender._stream_id = stream_id
        sender._ptp_marks = NO_MARKS
        sender._ptp_id = stream_id  # type: ignore[assignment]
        self.sender = sender
        self.stream_id = stream_id


def install() -> None:
    """Make aioquic's connection create MarkingStreams (once; harmless to connections that do not
    adopt them: their marks go nowhere)."""
    if qc.QuicStream is not MarkingStream:
        qc.QuicStream = MarkingStream  # type: ignore[misc]


def adopt(stream: QuicStream, marks: StreamMarks) -> None:
    """Make a stream aioquic just created report to ``marks`` (before it sent or received anything),
    and mark it everywhere once: a new stream may already owe a MAX_STREAM_DATA."""
    assert isinstance(stream, MarkingStream), "install() was not called"
    stream.sender._ptp_marks = stream.receiver._ptp_marks = marks
    sid = stream.sender._ptp_id
    marks.ready[sid] = None
    marks.limits[sid] = None
    marks.received[sid] = None
