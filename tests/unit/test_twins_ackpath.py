"""The compiled ACK-received path (``ptproxy._speedups.ackpath``) against aioquic's own
(``_ackpath_py``: ``QuicConnection._handle_ack_frame`` with ``pull_ack_frame``,
``QuicPacketRecovery.on_ack_received``, ``_detect_loss`` and the delivery handlers).

Hypothesis writes a sequence of packets sent (in the Initial, Handshake and 1-RTT spaces, with gaps
in their numbers, in flight or not, ack-eliciting or not, carrying stream data of plain and marking
streams, ACK frames, PINGs, MAX_STREAM_DATA, HANDSHAKE_DONE, a plain-function handler, a reset
stream's data), clock steps, and ACK frames: of chosen sent packets (with gaps, unknown and
already-acknowledged numbers), with the ECN counts or not, cut short, or made of random fields
(negative packet numbers, huge delays and gaps). The same sequence is applied to two identical
connections, the ACK frames going through each twin. Both must raise the same (a
QuicConnectionError with the same code, frame type and reason), read as far into the frame, make
the same calls to the congestion controller and pacer (recorded, in order, with their arguments)
and leave the same RTT, PTO, loss-time, sent-packet, ACK-queue, stream, mark and event state.
Runs cover the four controllers, ACK delay exponents, address validation, qlog and a recovery
with a method replaced on the instance (both take aioquic's code in the compiled twin).
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionError
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.aioquic import _ackpath_py as py
from ptproxy.tunnel.aioquic import ackpath
from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection
from ptproxy.tunnel.aioquic.marks import MarkingStream, StreamMarks
from tests.conftest import compiled_twin
from tests.support.quic_pair import flow_settings

EPOCHS = (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT)


def _compiled() -> ModuleType:
    module = compiled_twin("ptproxy._speedups.ackpath")
    module.configure(**ackpath._objects())
    return module


def _value(value: Any) -> Any:
    """A recorded argument, comparable across the two connections."""
    if isinstance(value, QuicSentPacket):
        return ("packet", value.packet_number)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "filter":
        return [_value(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


class Recorder:
    """A congestion controller (or pacer) that logs each call and hands it to the real one."""

    def __init__(self, name: str, real: Any, log: list[Any]) -> None:
        self._name, self._real, self._log = name, real, log

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._real, attr)
        if not callable(target):
            return target
        log, name = self._log, self._name

        def call(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("packets") is not None and not isinstance(kwargs["packets"], list):
                kwargs["packets"] = list(kwargs["packets"])  # a filter: read once
            log.append((name, attr, _value(args), sorted((k, _value(v)) for k, v in kwargs.items())))
            return target(*args, **kwargs)

        return call


class Side:
    """One connection with its spaces, streams and recorders."""

    def __init__(self, algorithm: str, exponent: int, validated: bool, variant: str) -> None:
        conn = PatchedQuicConnection(
            configuration=QuicConfiguration(is_client=True), flow=flow_settings(congestion_algorithm=algorithm)
        )
        self.conn = conn
        self.log: list[Any] = []
        loss = conn._loss
        conn._spaces = {epoch: QuicPacketSpace(is_application_data=epoch == tls.Epoch.ONE_RTT) for epoch in EPOCHS}
        loss.spaces = list(conn._spaces.values())
        loss.peer_completed_address_validation = validated
        conn._remote_ack_delay_exponent = exponent
        real_cc = loss._cc
        loss._cc = Recorder("cc", real_cc, self.log)  # type: ignore[assignment]
        loss._pacer = Recorder("pacer", loss._pacer, self.log)  # type: ignore[assignment]
        self.real_cc = real_cc
        for space in conn._spaces.values():
            space.ack_queue.add(0, 50)
        if variant == "qlog":
            trace = QuicLogger().start_trace(is_client=True, odcid=b"")
            conn._quic_logger = loss._quic_logger = trace
        elif variant == "shadowed":
            loss._detect_loss = functools.partial(QuicPacketRecovery._detect_loss, loss)  # type: ignore[method-assign]
        self.marks = StreamMarks()
        self.streams: list[QuicStream] = []
        for i in range(4):
            cls = MarkingStream if i % 2 else QuicStream
            stream = cls(stream_id=4 * i, max_stream_data_local=1, max_stream_data_remote=1)
            if i % 2:
                stream.sender._ptp_marks = self.marks
            self.streams.append(stream)
        self.handled: list[Any] = []
        self.next_number = dict.fromkeys(EPOCHS, 0)

    def handler(self, kind: int, space: QuicPacketSpace) -> tuple[Any, Any]:
        """A delivery handler and its arguments, of one of the kinds a packet may carry."""
        conn = self.conn
        if kind < 4:  # stream data (or a FIN) of stream ``kind``
            sender = self.streams[kind].sender
            if sender._reset_error_code is not None:
                return conn._on_ping_delivery, ((kind,),)
            if sender._buffer_fin is None:
                sender.write(bytes(300), end_stream=False)
            frame = sender.get_frame(120 + 40 * kind)
            if frame is None:
                return conn._on_ping_delivery, ((kind,),)
            return sender.on_data_delivery, (frame.offset, frame.offset + len(frame.data), frame.fin)
        if kind == 4:  # the FIN of stream 1 (and no more data to it)
            sender = self.streams[1].sender
            if sender._buffer_fin is None:
                sender.write(b"", end_stream=True)
            frame = sender.get_frame(1000)
            if frame is None:
                return conn._on_ping_delivery, ((kind,),)
            return sender.on_data_delivery, (frame.offset, frame.offset + len(frame.data), frame.fin)
        if kind == 5:
            return conn._on_ack_delivery, (space, len(self.handled) + 3)
        if kind == 6:
            return conn._on_ping_delivery, ((len(self.handled),),)
        if kind == 7:
            return conn._on_max_stream_data_delivery, (self.streams[kind % 4],)
        if kind == 8:
            return conn._on_handshake_done_delivery, []
        if kind == 9:  # a stream reset meanwhile: deliveries of its data are ignored
            sender = self.streams[2].sender
            if sender._reset_error_code is not None:
                return conn._on_ping_delivery, ((kind,),)
            sender.write(bytes(50))
            frame = sender.get_frame(80)
            if sender._reset_error_code is None:
                sender.reset(7)
            if frame is None:
                return conn._on_ping_delivery, ((kind,),)
            return sender.on_data_delivery, (frame.offset, frame.offset + len(frame.data), frame.fin)
        handled = self.handled

        def plain(delivery: Any, *args: Any) -> None:
            handled.append((delivery.name, args))

        return plain, (kind,)

    def send(self, epoch_index: int, skip: int, now: float, in_flight: bool, eliciting: bool,
             size: int, kinds: list[int]) -> None:
        epoch = EPOCHS[epoch_index]
        space = self.conn._spaces[epoch]
        number = self.next_number[epoch] + skip
        self.next_number[epoch] = number + 1
        packet = QuicSentPacket(
            epoch=epoch,
            in_flight=in_flight,
            is_ack_eliciting=eliciting,
            is_crypto_packet=False,
            packet_number=number,
            packet_type=QuicPacketType.ONE_RTT,
            sent_time=now,
            sent_bytes=size,
        )
        packet.delivery_handlers = [self.handler(kind, space) for kind in kinds]
        self.conn._loss.on_packet_sent(packet=packet, space=space)

    def state(self) -> dict[str, Any]:
        conn, loss = self.conn, self.conn._loss
        streams = []
        for stream in self.streams:
            fields = {k: v for k, v in vars(stream.sender).items() if k != "_ptp_marks"}
            for name in ("_pending", "_acked"):
                fields[name] = list(fields[name])
            fields["_buffer"] = bytes(fields["_buffer"])
            streams.append(fields)
        return {
            "loss": {
                k: _value(v)
                for k, v in vars(loss).items()
                if k.startswith(("_rtt", "_pto", "peer_", "max_ack", "_time_of", "_ptp_"))
            },
            "spaces": [
                (
                    space.largest_acked_packet,
                    _value(space.loss_time),
                    space.ack_eliciting_in_flight,
                    list(space.sent_packets),
                    list(space.ack_queue),
                )
                for space in conn._spaces.values()
            ],
            "cc": (self.real_cc.bytes_in_flight, self.real_cc.congestion_window, self.real_cc.ssthresh),
            "log": self.log,
            "streams": streams,
            "marks": list(self.marks.ready),
            "events": list(conn._events),
            "handled": self.handled,
            "lost": conn._ptp_lost_packets,
            "pending": conn._handshake_done_pending,
        }


def _encode(fields: list[int], ecn: bool, cut: int) -> bytes:
    buf = Buffer(capacity=16 * len(fields) + 32)
    for value in fields:
        buf.push_uint_var(value)
    if ecn:
        for value in (1, 300, 2**40):
            buf.push_uint_var(value)
    data = buf.data
    return data[: max(0, len(data) - cut)]


def _ack_fields(numbers: list[int], delay: int) -> list[int]:
    """An ACK frame's fields (after its type) acknowledging exactly ``numbers``."""
    ranges: list[list[int]] = []
    for number in sorted(set(numbers), reverse=True):
        if ranges and ranges[-1][1] == number + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])  # [high, low]
    fields = [ranges[0][0], delay, len(ranges) - 1, ranges[0][0] - ranges[0][1]]
    for (_, prev_low), (high, low) in zip(ranges, ranges[1:], strict=False):
        fields += [prev_low - high - 2, high - low]
    return fields


SEND = st.tuples(
    st.just("send"),
    st.sampled_from([2, 2, 2, 2, 1, 0]),
    st.sampled_from([0, 0, 0, 0, 1, 2]),  # packet numbers skipped
    st.booleans() | st.just(True),
    st.booleans() | st.just(True),
    st.integers(0, 1500),
    st.lists(st.integers(0, 10), max_size=3),
)
TIME = st.tuples(st.just("time"), st.sampled_from([0.0, 0.0005, 0.001, 0.003, 0.02, 0.1, 0.5, 4.0]))
ACK = st.tuples(
    st.just("ack"),
    st.sampled_from([2, 2, 2, 2, 1, 0]),
    # packet numbers acknowledged, counted back from the largest sent (0: it, negative: beyond it)
    st.lists(st.integers(-3, 40) | st.integers(0, 6), min_size=1, max_size=16),
    st.sampled_from([0, 1, 7, 100, 3000, 3000, 40000, 2**30, 2**62 - 1]),  # encoded ACK delay
    st.booleans(),  # ECN counts
    st.sampled_from([0, 0, 0, 0, 0, 0, 0, 1, 2, 5]),  # bytes cut off the end
)
RAW = st.tuples(
    st.just("raw"),
    st.sampled_from([2, 2, 1]),
    st.lists(st.sampled_from([0, 1, 2, 3, 5, 20, 63, 64, 2**14, 2**30, 2**62 - 1]), min_size=0, max_size=10),
    st.booleans(),
    st.sampled_from([0, 0, 1]),
)
# Weighted by kind (st.one_of would draw each kind about as often).
OP = st.sampled_from(["send"] * 4 + ["time"] * 2 + ["ack"] * 3 + ["raw"]).flatmap(
    {"send": SEND, "time": TIME, "ack": ACK, "raw": RAW}.__getitem__
)
OPS = st.lists(OP, min_size=8, max_size=60)


def _outcome(handle: Any, side: Side, epoch: Any, frame_type: int, body: bytes, now: float) -> tuple[Any, ...]:
    buf = Buffer(data=body)
    context = SimpleNamespace(epoch=epoch, time=now, quic_logger_frames=[])
    try:
        result: Any = ("ok", handle(side.conn, context, frame_type, buf))
    except QuicConnectionError as exc:
        result = ("QuicConnectionError", exc.error_code, exc.frame_type, exc.reason_phrase)
    except Exception as exc:  # noqa: BLE001 - any exception: both twins must raise the same one
        result = (type(exc).__name__, str(exc))
    return result, buf.tell(), context.quic_logger_frames


def _apply(compiled: ModuleType, op: tuple[Any, ...], sides: tuple[Side, Side], clock: list[float]) -> None:
    ours, theirs = sides
    if op[0] == "send":
        for side in sides:
            side.send(op[1], op[2], clock[0], op[3], op[4], op[5], op[6])
    elif op[0] == "time":
        clock[0] += op[1]
    else:
        if op[0] == "ack":
            _, epoch_index, back, delay, ecn, cut = op
            largest = ours.next_number[EPOCHS[epoch_index]] - 1
            numbers = [largest - k for k in back if largest - k >= 0] or [0]
            body = _encode(_ack_fields(numbers, delay), ecn, cut)
        else:
            _, epoch_index, fields, ecn, cut = op
            body = _encode(fields, ecn, cut)
        frame_type = 0x03 if ecn else 0x02
        epoch = EPOCHS[epoch_index]
        got = _outcome(compiled.handle_ack_frame, ours, epoch, frame_type, body, clock[0])
        want = _outcome(py.handle_ack_frame, theirs, epoch, frame_type, body, clock[0])
        assert got == want


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    algorithm=st.sampled_from(["NewReno", "Cubic", "Bbr", "None"]),
    exponent=st.sampled_from([3, 3, 0, 20]),
    validated=st.booleans(),
    variant=st.sampled_from(["plain", "plain", "plain", "plain", "qlog", "shadowed"]),
)
def test_handle_ack_frame_matches_aioquic(
    ops: list[tuple[Any, ...]], algorithm: str, exponent: int, validated: bool, variant: str
) -> None:
    compiled = _compiled()
    sides = (Side(algorithm, exponent, validated, variant), Side(algorithm, exponent, validated, variant))
    clock = [1000.0]
    for op in ops:
        _apply(compiled, op, sides, clock)
        assert sides[0].state() == sides[1].state()


def _python_calls(run: Any) -> list[str]:
    """The Python functions ``run`` calls (by name), seen by a profile hook."""
    names: list[str] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            names.append(frame.f_code.co_name)

    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    return names


def test_the_common_path_runs_no_aioquic_python() -> None:
    # Stream data acknowledged in order: the frame read, the walk, the stream deliveries and the RTT
    # estimate happen in C; Python runs only the controller and the pacer (our loss handler only
    # when something was lost).
    compiled = _compiled()
    side = Side("NewReno", 3, True, "plain")
    side.conn._loss._cc = side.real_cc
    side.conn._loss._pacer = side.real_cc.pacer
    for _ in range(5):
        side.send(2, 0, 1000.0, True, True, 1200, [1, 3, 5])
    body = _encode(_ack_fields([0, 1, 2, 3, 4], 10), False, 0)
    context = SimpleNamespace(epoch=tls.Epoch.ONE_RTT, time=1000.05, quic_logger_frames=None)
    calls = _python_calls(lambda: compiled.handle_ack_frame(side.conn, context, 0x02, Buffer(data=body)))
    assert not side.conn._spaces[tls.Epoch.ONE_RTT].sent_packets
    assert side.conn._loss._rtt_initialized
    for name in ("on_ack_received", "_detect_loss", "on_data_delivery", "_on_ack_delivery", "pull_ack_frame"):
        assert name not in calls, calls
    assert "on_packet_acked" in calls  # NewReno's
    assert "_ptp_packets_lost" not in calls and "on_packets_lost" not in calls  # nothing lost: not called


def test_installed_only_when_compiled() -> None:
    method = PatchedQuicConnection._handle_ack_frame
    if ackpath.IMPLEMENTATION == "compiled":
        assert ackpath.INSTALLED and method is ackpath.handle_ack_frame
        conn = PatchedQuicConnection(configuration=QuicConfiguration(is_client=True), flow=flow_settings())
        assert conn._QuicConnection__frame_handlers[0x02][0] == conn._QuicConnection__frame_handlers[0x03][0]
        assert conn._QuicConnection__frame_handlers[0x02][0].__func__ is ackpath.handle_ack_frame
    else:
        assert not ackpath.INSTALLED and method is py.handle_ack_frame


def test_layout_holds() -> None:
    conn = PatchedQuicConnection(configuration=QuicConfiguration(is_client=True), flow=flow_settings())
    assert ackpath.layout_holds(conn)


# -- the holding handler (PatchedQuicConnection._ptp_ack_frame) and its extent reader ---------------

FRAME_BODY = st.one_of(
    st.builds(
        lambda numbers, delay, ecn, cut: _encode(_ack_fields(numbers, delay), ecn, cut),
        st.lists(st.integers(0, 300) | st.sampled_from([2**30, 2**62 - 1]), min_size=1, max_size=12),
        st.sampled_from([0, 3, 2**62 - 1]),
        st.booleans(),
        st.sampled_from([0, 0, 0, 1, 2, 7]),
    ),
    # random fields: negative packet numbers, huge counts and gaps, cut anywhere
    st.builds(
        _encode,
        st.lists(st.sampled_from([0, 1, 2, 3, 5, 20, 63, 64, 2**14, 2**30, 2**62 - 1]), max_size=10),
        st.booleans(),
        st.sampled_from([0, 0, 1, 3]),
    ),
    st.binary(max_size=40),
)


def _skip_outcome(skip: Any, data: bytes, start: int, frame_type: Any) -> tuple[Any, ...]:
    buf = Buffer(data=data)
    buf.seek(start)
    try:
        result: Any = ("ok", skip(buf, frame_type))
    except Exception as exc:  # noqa: BLE001 - both twins must raise the same one
        result = (type(exc).__name__, str(exc))
    return result, buf.tell()


class Holder:
    """What hold_ack_frame reads and writes on a connection: the held list, its qlog logger and
    the bound handler (here, a recorder that reads the frame as aioquic's handler would)."""

    def __init__(self, logged: bool) -> None:
        self._quic_logger = object() if logged else None
        self._ptp_held_acks: list[tuple[Any, ...]] = []
        self.handled: list[tuple[Any, ...]] = []

    def _ptp_ack_handler(self, context: Any, frame_type: int, buf: Buffer) -> None:
        start = buf.tell()
        self.handled.append((context.epoch, frame_type, start))
        py.skip_ack_frame(buf, frame_type)  # raises for a malformed frame, as the handler does


def _hold_outcome(hold: Any, data: bytes, start: int, frame_type: int, epoch: Any, logged: bool) -> tuple[Any, ...]:
    conn = Holder(logged)
    buf = Buffer(data=data)
    buf.seek(start)
    context = SimpleNamespace(epoch=epoch)
    try:
        result: Any = ("ok", hold(conn, context, frame_type, buf))
    except Exception as exc:  # noqa: BLE001 - both twins must raise the same one
        result = (type(exc).__name__, str(exc))
    held = []
    for held_context, held_type, held_buf, offset in conn._ptp_held_acks:
        assert held_context is context and held_buf is buf  # the packet's own Buffer, no copy
        held.append((held_type, offset))
    return result, buf.tell(), held, conn.handled


@settings(max_examples=600, deadline=None)
@given(
    body=FRAME_BODY,
    before=st.binary(max_size=3),
    after=st.binary(max_size=3),
    frame_type=st.sampled_from([0x02, 0x03]),
    epoch=st.sampled_from([tls.Epoch.ONE_RTT, tls.Epoch.ONE_RTT, tls.Epoch.ONE_RTT, tls.Epoch.HANDSHAKE]),
    logged=st.sampled_from([False, False, False, True]),
)
def test_hold_ack_frame_matches_the_pure_twin(
    body: bytes, before: bytes, after: bytes, frame_type: int, epoch: Any, logged: bool
) -> None:
    """The same frame read past (or the same exception, at the same position), the same entry held
    (the frame's offset in the packet's Buffer) or the same call of the bound handler."""
    compiled = _compiled()
    data = before + body + after
    start = len(before)
    assert _skip_outcome(compiled.skip_ack_frame, data, start, frame_type) == _skip_outcome(
        py.skip_ack_frame, data, start, frame_type
    )
    got = _hold_outcome(compiled.hold_ack_frame, data, start, frame_type, epoch, logged)
    want = _hold_outcome(py.hold_ack_frame, data, start, frame_type, epoch, logged)
    assert got == want


def test_hold_ack_frame_holds_the_frame_in_place() -> None:
    """Both twins: a well-formed 1-RTT frame is read past and held as its packet's Buffer and the
    frame's offset there; the next frame is read from where it ends."""
    twins = [py] + ([_compiled()] if ackpath.IMPLEMENTATION == "compiled" else [])
    body = _encode(_ack_fields([0, 1, 2, 5, 9], 3), True, 0)
    for twin in twins:
        conn = Holder(logged=False)
        buf = Buffer(data=b"\x01" + body + b"\x01")
        buf.seek(1)
        context = SimpleNamespace(epoch=tls.Epoch.ONE_RTT)
        twin.hold_ack_frame(conn, context, 0x03, buf)
        assert conn._ptp_held_acks == [(context, 0x03, buf, 1)] and not conn.handled
        assert buf.tell() == 1 + len(body)


def test_hold_ack_frame_installed_only_when_compiled() -> None:
    method = PatchedQuicConnection._ptp_ack_frame
    if ackpath.IMPLEMENTATION == "compiled":
        assert ackpath.INSTALLED and method is ackpath.hold_ack_frame
    else:
        assert method is py.hold_ack_frame
