"""The compiled STREAM frame methods (``ptproxy._speedups.streamframes``) against aioquic's own
(``_streamframes_py``: ``QuicConnection._write_stream_frame`` with ``QuicStreamSender.get_frame``).

Send: hypothesis writes a sequence of stream writes (with and without FIN), resets, frames asked for
with random packet room and flow-control limits (the buffer frames are written into sometimes too
small), and deliveries of sent frames (acknowledged or lost, in any order, more than once), applied
to two identical streams, one through each twin. Both must return the same, raise the same, start
the same frames (type, capacity, delivery handler and arguments), write the same bytes and leave
the same sender state and stream marks.

Receive: hypothesis writes a sequence of STREAM frames (in and out of order, overlapping,
duplicated, with and without FIN, past a final size, on send-only, peer- or locally-initiated,
unknown and discarded streams, beyond stream and connection flow-control limits, beyond 2^62,
without offset or length fields, cut short), resets and discards of finished streams, applied to
two identical connections, one through each twin. Both must raise the same (the same close code,
frame type and reason), read as far into the frame, and leave the same streams, receive buffers,
events, flow-control counters, stream counts and marks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilderStop
from aioquic.quic.stream import QuicStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.aioquic import _streamframes_py as py
from ptproxy.tunnel.aioquic import streamframes
from ptproxy.tunnel.aioquic.marks import MarkingStream, StreamMarks
from tests.conftest import compiled_twin


def _compiled() -> ModuleType:
    module = compiled_twin("ptproxy._speedups.streamframes")
    module.configure(**streamframes._objects())
    return module


class Builder:
    """The part of QuicPacketBuilder _write_stream_frame uses: room left, frames started into a Buffer."""

    def __init__(self, room: int, slack: int) -> None:
        self.remaining_flight_space = room
        self.buf = Buffer(capacity=max(0, room + slack))
        self.frames: list[tuple[Any, ...]] = []

    def start_frame(
        self, frame_type: int, capacity: int = 1, handler: Any = None, handler_args: Any = ()
    ) -> Buffer:
        if capacity > self.remaining_flight_space:
            raise QuicPacketBuilderStop
        self.buf.push_uint_var(frame_type)
        self.frames.append((frame_type, capacity, handler.__func__.__name__, handler_args))
        return self.buf


def _state(stream: QuicStream) -> dict[str, Any]:
    fields = dict(vars(stream.sender))
    fields.pop("_ptp_marks", None)
    for name in ("_pending", "_acked"):
        fields[name] = list(fields[name])
    fields["_buffer"] = bytes(fields["_buffer"])
    return fields


def _outcome(call: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except Exception as exc:  # noqa: BLE001 - any exception: both twins must raise the same one
        return type(exc).__name__, str(exc)


WRITE = st.tuples(st.just("write"), st.integers(0, 3000), st.booleans())
SEND = st.tuples(
    st.just("send"),
    st.integers(-4, 1400),  # room left in the packet (negative: not even the header fits)
    st.one_of(st.none(), st.integers(0, 12000)),  # flow-control limit (max_offset)
    st.sampled_from([16, 16, 16, 0, -2, -6]),  # buffer room beyond the packet's
)
DELIVER = st.tuples(st.just("deliver"), st.integers(0, 50), st.booleans())
RESET = st.tuples(st.just("reset"), st.integers(0, 5))
# The connection as _write_stream_frame sees it: no qlog logger.
CONN = SimpleNamespace(_quic_logger=None)
OPS = st.lists(st.one_of(WRITE, WRITE, SEND, SEND, SEND, DELIVER, DELIVER, RESET), max_size=40)


def _apply(
    compiled: ModuleType,
    op: tuple[Any, ...],
    pair: tuple[QuicStream, QuicStream],
    start: int,
    sent: list[Any],
) -> None:
    """One operation on both streams (``ours`` through the compiled twin), compared."""
    ours, theirs = pair
    if op[0] == "write":
        data = (bytes(range(256)) * (op[1] // 256 + 1))[: op[1]]
        assert _outcome(ours.sender.write, data, op[2]) == _outcome(
            theirs.sender.write, data, op[2]
        )
    elif op[0] == "send":
        _, room, max_offset, slack = op
        limit = None if max_offset is None else start + max_offset
        builders = Builder(room, slack), Builder(room, slack)
        got = _outcome(compiled.write_stream_frame, CONN, builders[0], None, ours, limit)
        assert got == _outcome(py.write_stream_frame, CONN, builders[1], None, theirs, limit)
        assert builders[0].frames == builders[1].frames
        assert builders[0].buf.tell() == builders[1].buf.tell()
        assert builders[0].buf.data == builders[1].buf.data
        sent.extend(frame[3] for frame in builders[1].frames)
    elif op[0] == "deliver" and sent:
        args = sent[op[1] % len(sent)]
        state = QuicDeliveryState.ACKED if op[2] else QuicDeliveryState.LOST
        assert _outcome(ours.sender.on_data_delivery, state, *args) == _outcome(
            theirs.sender.on_data_delivery, state, *args
        )
    elif op[0] == "reset":
        ours.sender.reset(op[1])
        theirs.sender.reset(op[1])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    stream_id=st.sampled_from([0, 3, 4, 60, 64, 16383 * 4, 2**30 * 4 + 1]),
    start=st.sampled_from([0, 1, 63, 64, 16383, 16384, 2**30]),
    marking=st.booleans(),
)
def test_write_stream_frame_matches_aioquic(
    ops: list[tuple[Any, ...]], stream_id: int, start: int, marking: bool
) -> None:
    compiled = _compiled()
    cls = MarkingStream if marking else QuicStream
    ours, theirs = (
        cls(stream_id=stream_id, max_stream_data_local=1, max_stream_data_remote=1) for _ in "ab"
    )
    marks = StreamMarks(), StreamMarks()
    for stream, stream_marks in zip((ours, theirs), marks, strict=True):
        if marking:
            stream.sender._ptp_marks = stream_marks
        # a stream already some way in: offsets of every varint size
        stream.sender._buffer_start = stream.sender._buffer_stop = stream.sender.highest_offset = (
            start
        )
    sent: list[tuple[int, int, bool]] = []
    for op in ops:
        _apply(compiled, op, (ours, theirs), start, sent)
        assert _state(ours) == _state(theirs)
    assert [list(m.ready) for m in marks[:1]] == [list(m.ready) for m in marks[1:]]


def test_installed_only_when_compiled() -> None:
    from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection

    method = PatchedQuicConnection._write_stream_frame
    if streamframes.IMPLEMENTATION == "compiled":
        assert streamframes.INSTALLED and method is streamframes.write_stream_frame
    else:
        assert not streamframes.INSTALLED and method is py.write_stream_frame
    # aioquic's send loop calls it by keyword
    inspect.signature(method).bind(None, builder=None, space=None, stream=None, max_offset=None)


def test_stream_layout_holds() -> None:
    assert streamframes.layout_holds()


# -- receive -------------------------------------------------------------------------------------


def _frame(
    stream_id: int, offset: int, size: int, fin: bool, bits: int, cut: int
) -> tuple[int, bytes]:
    """A STREAM frame body after its type: the offset and length fields as ``bits`` says, maybe cut short."""
    data = bytes((offset + i) & 0xFF for i in range(size))  # each byte tells its stream offset
    frame_type = 0x08 | bits | int(fin)
    buf = Buffer(capacity=32 + len(data))
    buf.push_uint_var(stream_id)
    if bits & 4:
        buf.push_uint_var(offset)
    if bits & 2:
        buf.push_uint_var(len(data))
    buf.push_bytes(data)
    body = buf.data
    return frame_type, body[: len(body) - cut] if cut else body


FRAME = st.tuples(
    st.just("frame"),
    st.sampled_from([0, 0, 0, 4, 4, 1, 2, 3, 5, 6, 7, 8, 12, 397, 4 * 200, 2**62 - 1]),
    st.one_of(*[st.integers(0, 1500)] * 8, st.sampled_from([2**62 - 5, 2**62 - 1])),
    st.integers(0, 300),
    st.booleans(),
    st.sampled_from([6, 6, 6, 2, 4, 0]),  # offset and length fields present or not
    st.sampled_from([0, 0, 0, 0, 1, 3]),  # bytes cut off the end (a short frame)
)
RECEIVE_OPS = st.lists(
    st.one_of(
        FRAME,
        FRAME,
        FRAME,
        st.tuples(st.just("reset"), st.integers(0, 8), st.integers(0, 3000)),
        st.tuples(st.just("discard")),
    ),
    max_size=40,
)


def _connection(is_client: bool, max_data: int, max_stream_data: int) -> Any:
    from aioquic.quic.configuration import QuicConfiguration

    from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection
    from tests.support.quic_pair import flow_settings

    conn = PatchedQuicConnection(
        configuration=QuicConfiguration(is_client=True), flow=flow_settings()
    )
    conn._is_client = is_client  # the same connection, taking either role towards stream IDs
    conn._local_max_data.value = max_data
    conn._local_max_stream_data_bidi_remote = conn._local_max_stream_data_uni = max_stream_data
    return conn


def _receive_state(conn: Any) -> dict[str, Any]:
    streams = {}
    for sid, stream in conn._streams.items():
        fields = {k: v for k, v in vars(stream.receiver).items() if k != "_ptp_marks"}
        fields["_ranges"] = list(fields["_ranges"])
        fields["_buffer"] = bytes(fields["_buffer"])
        streams[sid] = (
            fields,
            stream.max_stream_data_local,
            stream.max_stream_data_remote,
            stream.sender.is_finished,
        )
    marks = conn._ptp_marks
    return {
        "streams": streams,
        "queue": [s.stream_id for s in conn._streams_queue],
        "events": list(conn._events),
        "max_data": (conn._local_max_data.used, conn._local_max_data.value),
        "limits": (conn._local_max_streams_bidi.used, conn._local_max_streams_uni.used),
        "marks": (list(marks.ready), list(marks.limits), list(marks.received)),
    }


def _receive_one(compiled: ModuleType, op: tuple[Any, ...], pair: tuple[Any, Any]) -> None:
    ours, theirs = pair
    if op[0] == "frame":
        frame_type, body = _frame(*op[1:])
        outcomes = []
        for conn, handle in (
            (ours, compiled.handle_stream_frame),
            (theirs, py.handle_stream_frame),
        ):
            buf = Buffer(data=body)
            outcome = _outcome(handle, conn, None, frame_type, buf)
            if outcome[0] == "QuicConnectionError":
                outcome = (outcome[0], _connection_error(conn, handle, frame_type, body))
            outcomes.append((outcome, buf.tell()))
        assert outcomes[0] == outcomes[1]
    elif op[0] == "reset":
        for conn in pair:
            stream = conn._streams.get(op[1])
            if stream is not None:
                _outcome(functools.partial(stream.receiver.handle_reset, final_size=op[2]))
    else:  # what _write_application does with a stream finished both ways
        for conn in pair:
            for sid in [sid for sid, s in conn._streams.items() if s.receiver.is_finished]:
                del conn._streams[sid]


def _connection_error(conn: Any, handle: Any, frame_type: int, body: bytes) -> tuple[Any, ...]:
    """The error code, frame type and reason of the QuicConnectionError the frame raises."""
    from aioquic.quic.connection import QuicConnectionError

    try:
        handle(conn, None, frame_type, Buffer(data=body))
    except QuicConnectionError as exc:
        return exc.error_code, exc.frame_type, exc.reason_phrase
    return ()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=RECEIVE_OPS,
    is_client=st.booleans(),
    max_data=st.sampled_from([10**6, 5000, 700]),
    max_stream_data=st.sampled_from([10**6, 2500, 400]),
)
def test_handle_stream_frame_matches_aioquic(
    ops: list[tuple[Any, ...]], is_client: bool, max_data: int, max_stream_data: int
) -> None:
    compiled = _compiled()
    pair = (
        _connection(is_client, max_data, max_stream_data),
        _connection(is_client, max_data, max_stream_data),
    )
    for op in ops:
        _receive_one(compiled, op, pair)
        assert _receive_state(pair[0]) == _receive_state(pair[1])
