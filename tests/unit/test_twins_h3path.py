"""The compiled HTTP/3 request-stream receive path (``ptproxy._speedups.h3path``) against
PatchedH3Connection's own (``_h3path_py``: h3.py's ``handle_event`` over aioquic's
``H3Connection``).

Hypothesis writes up to three request streams of frames (DATA, HEADERS with real QPACK blocks from a
pylsqpack encoder - valid and invalid request, response, interim and trailer field sections -,
HEADERS with garbage blocks, unknown and reserved frame types, PUSH_PROMISE, WEBTRANSPORT_STREAM,
frames whose length runs past the data, raw bytes), cuts each stream's bytes at random points, puts
the FIN on the last piece, on one in the middle or on a bare FIN, and interleaves the pieces of the
streams with the peer's QPACK encoder stream (sent first, or last so header blocks are blocked),
resets and ``forget_stream`` calls. The same events go to two identically prepared connections, one
through each twin, at the client and the server end, with QPACK decoder instructions held or
written at once. After each event both must return the same events (same classes and fields, in
order) or raise the same exception, make the same calls on the QUIC connection (stream data,
close with the same code and reason, resets) and leave the same stream, decoder and h3.py state.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import pylsqpack
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3Connection, StreamType
from aioquic.quic.events import StreamDataReceived, StreamReset
from aioquic.quic.logger import QuicLogger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.aioquic import _h3path_py as py
from ptproxy.tunnel.aioquic import h3path
from ptproxy.tunnel.aioquic.h3 import DataFrame, PatchedH3Connection
from tests.conftest import compiled_twin

PEER_ENCODER_STREAM = {True: 3, False: 2}  # the peer's first unidirectional streams: server's 3, client's 2
SETTINGS = dict(max_table_capacity=4096, blocked_streams=16)


def _compiled() -> ModuleType:
    module = compiled_twin("ptproxy._speedups.h3path")
    module.configure(**h3path._objects())
    module.configure_send(**h3path._send_objects())
    return module


class FakeQuic:
    """What PatchedH3Connection calls on its QUIC connection, recorded."""

    def __init__(self, is_client: bool, hold: bool) -> None:
        self.configuration = SimpleNamespace(is_client=is_client)
        self._quic_logger = None
        self._next_uni = 2 if is_client else 3
        self.calls: list[tuple[Any, ...]] = []
        if hold:
            self.set_held_data = self._set_held_data

    def _set_held_data(self, release: Any) -> None:
        self.release = release

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        stream_id = self._next_uni
        self._next_uni += 4
        return stream_id

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.calls.append(("send", stream_id, bytes(data), end_stream))

    def close(self, error_code: int, reason_phrase: str = "") -> None:
        self.calls.append(("close", int(error_code), reason_phrase))

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.calls.append(("reset", stream_id, int(error_code)))


def _connection(is_client: bool, hold: bool) -> PatchedH3Connection:
    return PatchedH3Connection(FakeQuic(is_client, hold))  # type: ignore[arg-type]


def _state(h3: PatchedH3Connection) -> dict[str, Any]:
    streams = {sid: dict(vars(stream)) for sid, stream in h3._stream.items()}
    held = h3._ptp_held_decoder
    return {
        "streams": streams,
        "in_frame": set(h3._ptp_in_frame),
        "ignored": set(h3._ptp_ignored),
        "held": None if held is None else bytes(held),
        "decoder_bytes_sent": h3._decoder_bytes_sent,
        "is_done": h3._is_done,
        "calls": list(h3._ptp_quic.calls),  # type: ignore[attr-defined]
    }


def _outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        events = call(*args)
    except Exception as exc:  # noqa: BLE001 - any exception: both twins must raise the same one
        return type(exc).__name__, str(exc)
    # dataclass equality compares the class too; the list keeps the order.
    return "ok", [(type(ev), ev) for ev in events]


def _frame(frame_type: int, payload: bytes, declared: int | None = None) -> bytes:
    size = len(payload) if declared is None else declared
    return encode_uint_var(frame_type) + encode_uint_var(size) + payload


REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/a")]
EXTRA = [
    (b"content-length", b"5"),
    (b"content-length", b"x"),
    (b"x-custom", b"value"),
    (b"user-agent", b"hypothesis"),
    (b"te", b"trailers"),
    (b"te", b"gzip"),
    (b"Upper", b"x"),
    (b"connection", b"close"),
    (b"x-space", b" lead"),
    (b":path", b"/late"),
    (b"content-length", b"-1"),
    (b"content-length", b" 7 "),
    (b"content-length", b"1_0"),
    (b"content-length", b"+3"),
    (b"x:y", b"1"),
    (b"x-nul", b"a\x00b"),
    (b"x-cr", b"a\rb"),
    (b"x-tab", b"a\t"),
    (b"x-one", b" "),
    (b"x-del", b"\x7f"),
    (b"x\x7f", b"v"),
    (b"te", b"TRAILERS"),
    (b"transfer-encoding", b"chunked"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":authority", b""),
    (b":status", b"200"),
]
FIELD_SECTIONS = st.one_of(
    st.tuples(st.just(REQUEST), st.lists(st.sampled_from(EXTRA), max_size=3)),
    st.tuples(st.just(REQUEST[:1]), st.lists(st.sampled_from(EXTRA), max_size=2)),
    st.tuples(
        st.sampled_from([b"200", b"204", b"103", b"100", b"101", b"2x0", b"20", b"1000", b"\xd9\xa3\xd9\xa3"]).map(lambda s: [(b":status", s)]),
        st.lists(st.sampled_from(EXTRA), max_size=3),
    ),
    st.tuples(st.just([]), st.lists(st.sampled_from(EXTRA[2:4]), min_size=1, max_size=2)),
    st.tuples(
        st.just([(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"")]),
        st.lists(st.sampled_from(EXTRA), max_size=2),
    ),
    st.tuples(st.just([(b":method", b"GET"), (b":authority", b"a")]), st.lists(st.sampled_from(EXTRA), max_size=2)),
).map(lambda t: [*t[0], *t[1]])

PAYLOAD = st.binary(max_size=40)
FRAME = st.one_of(
    st.tuples(st.just("data"), PAYLOAD),
    st.tuples(st.just("data"), PAYLOAD),
    st.tuples(st.just("headers"), FIELD_SECTIONS),
    st.tuples(st.just("headers"), FIELD_SECTIONS),
    st.tuples(st.just("garbage_headers"), PAYLOAD),
    st.tuples(
        st.just("other"),
        st.sampled_from([0x21, 0x40, 0x1F * 3 + 0x21, 2, 3, 4, 5, 6, 7, 8, 9, 0xD, 0x41, 2**40]),
        PAYLOAD,
    ),
    st.tuples(st.just("oversized"), st.sampled_from([0, 1, 0x21]), PAYLOAD, st.integers(1, 2**20)),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=6)),
)
STREAM = st.lists(FRAME, min_size=0, max_size=6)
# Most streams open as they should (request headers at the server end, a response at the client
# end, sometimes after an interim one) and carry mostly DATA, so that malformed input comes after
# valid frames too rather than only closing the connection at once.
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain")]
INTERIM = [(b":status", b"103"), (b"link", b"</a>")]
WELL_FORMED = st.lists(
    st.one_of(*[st.tuples(st.just("data"), PAYLOAD)] * 6, FRAME, st.tuples(st.just("headers"), st.just([(b"x-trailer", b"1")]))),
    max_size=8,
)


def _encode(frames: list[tuple[Any, ...]], stream_id: int, encoder: pylsqpack.Encoder, enc_out: bytearray) -> bytes:
    out = bytearray()
    for frame in frames:
        kind = frame[0]
        if kind == "data":
            out += _frame(0, frame[1])
        elif kind == "headers":
            instructions, block = encoder.encode(stream_id, frame[1])
            enc_out += instructions
            out += _frame(1, block)
        elif kind == "garbage_headers":
            out += _frame(1, frame[1])
        elif kind == "other":
            out += _frame(frame[1], frame[2])
        elif kind == "oversized":
            out += _frame(frame[1], frame[2], len(frame[2]) + frame[3])
        else:
            out += frame[1]
    return bytes(out)


def _apply(compiled: ModuleType, conns: tuple[PatchedH3Connection, PatchedH3Connection], op: tuple[Any, ...]) -> None:
    """One step on both connections (``ours`` through the compiled twin), compared."""
    ours, theirs = conns
    if op[0] == "event":
        event = op[1]
        got = _outcome(compiled.handle_event, ours, event)
        want = _outcome(py.handle_event, theirs, event)
        assert got == want, f"{event!r}: c {got!r} != py {want!r}"
    elif op[0] == "forget":
        ours.forget_stream(op[1])
        theirs.forget_stream(op[1])
    elif op[0] == "release":
        ours.release_decoder()
        theirs.release_decoder()
    assert _state(ours) == _state(theirs), op


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[bool, bool, list[tuple[Any, ...]]]:
    is_client = draw(st.booleans())
    hold = draw(st.booleans())
    encoder = pylsqpack.Encoder()
    enc_out = bytearray(encode_uint_var(StreamType.QPACK_ENCODER))
    enc_out += encoder.apply_settings(**SETTINGS)
    pieces: list[list[tuple[Any, ...]]] = []
    for sid in draw(st.lists(st.sampled_from([0, 4, 8]), min_size=1, max_size=3, unique=True)):
        opening = draw(st.sampled_from(["valid", "valid", "valid", "interim", "random", "none"]))
        first: list[tuple[Any, ...]] = []
        if opening == "random":
            first.append(("headers", draw(FIELD_SECTIONS)))
        elif opening != "none":
            if opening == "interim" and is_client:
                first.append(("headers", INTERIM))
            first.append(("headers", RESPONSE if is_client else REQUEST))
        body = draw(WELL_FORMED if opening != "none" else STREAM)
        data = _encode(first + body, sid, encoder, enc_out)
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        fin = draw(st.sampled_from(["last", "middle", "bare", "none"]))
        events: list[tuple[Any, ...]] = []
        fin_at = len(chunks) - 1 if fin == "last" else draw(st.integers(0, len(chunks) - 1))
        for i, chunk in enumerate(chunks):
            events.append(("event", StreamDataReceived(data=chunk, end_stream=fin == "middle" and i == fin_at or fin == "last" and i == fin_at, stream_id=sid)))
        if fin == "bare":
            events.append(("event", StreamDataReceived(data=b"", end_stream=True, stream_id=sid)))
        extra = draw(st.sampled_from([None, None, None, "forget", "reset"]))
        if extra is not None:
            at = draw(st.integers(0, len(events)))
            step = ("forget", sid) if extra == "forget" else ("event", StreamReset(error_code=0x10C, stream_id=sid))
            events.insert(at, step)
        pieces.append(events)
    # Interleave the streams' pieces, each stream's in order.
    ops: list[tuple[Any, ...]] = []
    while any(pieces):
        lane = draw(st.sampled_from([p for p in pieces if p]))
        ops.append(lane.pop(0))
        if draw(st.integers(0, 9)) == 0:
            ops.append(("release",))
    enc_event = ("event", StreamDataReceived(data=bytes(enc_out), end_stream=False, stream_id=PEER_ENCODER_STREAM[is_client]))
    if draw(st.sampled_from([True, True, True, False])):
        ops.insert(0, enc_event)
    else:
        ops.append(enc_event)  # header blocks arrive before the table entries they use: blocked
        ops.append(("event", StreamDataReceived(data=b"", end_stream=True, stream_id=0)))
    return is_client, hold, ops


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_request_stream_receive_matches_python(scenario: tuple[bool, bool, list[tuple[Any, ...]]]) -> None:
    compiled = _compiled()
    is_client, hold, ops = scenario
    conns = _connection(is_client, hold), _connection(is_client, hold)
    assert h3path.layout_holds(conns[0])
    for op in ops:
        _apply(compiled, conns, op)


FIELD = st.one_of(
    st.sampled_from(EXTRA),
    st.sampled_from(REQUEST + RESPONSE + INTERIM),
    st.tuples(
        st.one_of(st.binary(min_size=1, max_size=6), st.sampled_from([b":method", b":path", b":x", b"te", b"content-length"])),
        st.one_of(st.binary(max_size=6), st.sampled_from([b"0", b"12", b"trailers", b"https", b"http", b"", b"101", b"1xx"])),
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(
        [
            [],
            [(b":method", b"GET"), (b":authority", b"")],
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"")],
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")],
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"")],
            [(b":status", b"101")],
            [(b":status", b"2x0")],
            [(b":status", b"20")],
            [(b":status", b"1")],
        ]
    ),
    fields=st.lists(FIELD, max_size=8),
    opening=st.sampled_from(["none", "request", "response", "interim"]),
    is_client=st.booleans(),
    end_stream=st.booleans(),
)
def test_header_validation_matches_aioquic(
    prefix: list[tuple[bytes, bytes]], fields: list[tuple[bytes, bytes]], opening: str, is_client: bool, end_stream: bool
) -> None:
    """One field section (as request headers, a response, after an interim response or as
    trailers): the same verdict and message as aioquic's validate_* functions, the same
    expected_content_length."""
    compiled = _compiled()
    encoder = pylsqpack.Encoder()
    enc = bytearray(encode_uint_var(StreamType.QPACK_ENCODER)) + encoder.apply_settings(**SETTINGS)
    body = bytearray()
    first = {"none": [], "request": [REQUEST], "response": [RESPONSE], "interim": [INTERIM]}[opening]
    for section in [*first, prefix + fields]:
        instructions, block = encoder.encode(0, section)
        enc += instructions
        body += _frame(1, block)
    events = [
        StreamDataReceived(data=bytes(enc), end_stream=False, stream_id=PEER_ENCODER_STREAM[is_client]),
        StreamDataReceived(data=bytes(body), end_stream=end_stream, stream_id=0),
    ]
    conns = _connection(is_client, True), _connection(is_client, True)
    for event in events:
        _apply(compiled, conns, ("event", event))


def _exchange(is_client: bool) -> list[StreamDataReceived]:
    encoder = pylsqpack.Encoder()
    enc = bytearray(encode_uint_var(StreamType.QPACK_ENCODER)) + encoder.apply_settings(**SETTINGS)
    headers = [(b":status", b"200")] if is_client else REQUEST
    _, block = encoder.encode(0, [*headers, (b"x-custom", b"value")])
    body = _frame(1, block) + _frame(0, b"hello") + _frame(0x21, b"zz") + _frame(0, b"world" * 10)
    return [
        StreamDataReceived(data=bytes(enc), end_stream=False, stream_id=PEER_ENCODER_STREAM[is_client]),
        StreamDataReceived(data=body[:7], end_stream=False, stream_id=0),
        StreamDataReceived(data=body[7:-20], end_stream=False, stream_id=0),
        StreamDataReceived(data=body[-20:-3], end_stream=False, stream_id=0),
        StreamDataReceived(data=body[-3:], end_stream=False, stream_id=0),
        StreamDataReceived(data=b"", end_stream=True, stream_id=0),
    ]


def test_a_whole_exchange_gives_the_same_events_and_frames() -> None:
    compiled = _compiled()
    for is_client in (True, False):
        conns = _connection(is_client, True), _connection(is_client, True)
        seen = []
        for event in _exchange(is_client):
            got = _outcome(compiled.handle_event, conns[0], event)
            assert got == _outcome(py.handle_event, conns[1], event)
            seen.extend(ev for _, ev in got[1])
            assert _state(conns[0]) == _state(conns[1])
        frames = [ev for ev in seen if isinstance(ev, DataFrame)]
        assert b"".join(f.data for f in frames) == b"hello" + b"world" * 10
        assert [f.frame_size for f in frames if f.frame_size is not None] == [5, 50]
        assert sum(f.frame_end for f in frames) == 2
        assert frames[-1].stream_ended and not any(f.stream_ended for f in frames[:-1])


def test_unusual_connections_take_the_python_code() -> None:
    """A qlog logger, a subclass or a replaced method: the compiled twin calls the Python one."""
    compiled = _compiled()

    class Sub(PatchedH3Connection):
        pass

    def variants() -> list[tuple[PatchedH3Connection, PatchedH3Connection]]:
        out = []
        for make in ("logger", "subclass", "instance_method"):
            pair = []
            for _ in range(2):
                if make == "subclass":
                    conn: PatchedH3Connection = Sub(FakeQuic(True, True))  # type: ignore[arg-type]
                else:
                    conn = _connection(True, True)
                if make == "logger":
                    conn._quic_logger = QuicLogger().start_trace(is_client=True, odcid=b"")
                elif make == "instance_method":
                    conn._decode_headers = H3Connection._decode_headers.__get__(conn)  # type: ignore[method-assign]
                pair.append(conn)
            out.append((pair[0], pair[1]))
        return out

    for ours, theirs in variants():
        for event in _exchange(True):
            got = _outcome(compiled.handle_event, ours, event)
            assert got == _outcome(py.handle_event, theirs, event)
            assert _state(ours) == _state(theirs)


def test_a_method_replaced_on_the_class_after_a_compiled_call_takes_the_python_code(monkeypatch: Any) -> None:
    """The compiled twin checks the class's inlined methods only when the class's version tag moved
    since they were last found as verified: a method replaced on the class (or a base) after
    compiled calls must still send the next call to the Python code, and a restored one back."""
    compiled = _compiled()
    calls: list[Any] = []  # the connections the replaced method was called for

    def run_receive() -> tuple[Any, Any]:
        ours, theirs = _connection(True, True), _connection(True, True)
        for event in _exchange(True):
            got = _outcome(compiled.handle_event, ours, event)
            assert got == _outcome(py.handle_event, theirs, event)
            assert _state(ours) == _state(theirs)
        return ours, theirs

    def run_send() -> tuple[Any, Any]:
        ours, theirs = _connection(False, True), _connection(False, True)
        for conn, impl in ((ours, compiled), (theirs, py)):
            impl.handle_event(conn, StreamDataReceived(data=b"", end_stream=False, stream_id=0))
            impl.send_headers(conn, 0, RESPONSE, False)
            impl.send_data(conn, 0, b"body", False)
            impl.finish_stream(conn, 0)
        assert ours._quic.calls == theirs._quic.calls  # type: ignore[attr-defined]
        assert _state(ours) == _state(theirs)
        return ours, theirs

    # A method of the class itself, one of a base class (H3Connection's _encode_headers and
    # _get_or_create_stream: changing a base gives the subclass a new tag too), and one of ours.
    for name, owner, run in (
        ("_decode_headers", PatchedH3Connection, run_receive),
        ("_get_or_create_stream", H3Connection, run_receive),
        ("_encode_headers", H3Connection, run_send),
    ):
        original = getattr(owner, name)
        ours, theirs = run()  # compiled, verified: the class's tag is noted
        assert calls == []

        def recording(self: Any, *args: Any, _original: Any = original) -> Any:
            calls.append(self)
            return _original(self, *args)

        monkeypatch.setattr(owner, name, recording)
        ours, theirs = run()
        # The Python code ran for both, through the replaced method, as often.
        assert calls.count(theirs) > 0, name
        assert calls.count(ours) == calls.count(theirs), name
        monkeypatch.undo()
        calls.clear()
        run()
        assert calls == [], name


def test_headers_received_is_built_as_its_dataclass_init_would(monkeypatch: Any) -> None:
    """The compiled twin sets HeadersReceived's fields itself (no __init__ frame): the same values,
    types and instance layout (attribute order) as aioquic's constructor gives."""
    from aioquic.h3.events import HeadersReceived

    compiled = _compiled()
    inits: list[Any] = []
    original = HeadersReceived.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        inits.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(HeadersReceived, "__init__", recording)
    for is_client in (True, False):
        ours, theirs = _connection(is_client, True), _connection(is_client, True)
        for event in _exchange(is_client):
            got = _outcome(compiled.handle_event, ours, event)
            want = _outcome(py.handle_event, theirs, event)
            assert got == want
            for (_, ev), (_, ref) in zip(got[1], want[1], strict=True):
                if isinstance(ref, HeadersReceived):
                    assert type(ev) is HeadersReceived
                    assert list(vars(ev).items()) == list(vars(ref).items())
                    assert [type(v) for v in vars(ev).values()] == [type(v) for v in vars(ref).values()]
        built_by_init = len(inits)
        assert built_by_init > 0  # the Python twin's
        inits.clear()
        ours = _connection(is_client, True)
        for event in _exchange(is_client):
            compiled.handle_event(ours, event)
        assert inits == []  # the compiled twin's: no __init__ call


# --- the send side -------------------------------------------------------------------------------------

SEND_HEADERS = st.sampled_from([REQUEST, RESPONSE, INTERIM, [(b"x-trailer", b"1")], [(b":status", b"100")], []])
SEND_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("headers"), st.sampled_from([0, 4, 2, 3]), SEND_HEADERS, st.booleans()),
        st.tuples(
            st.just("data"),
            st.sampled_from([0, 4, 2]),
            st.one_of(st.binary(max_size=70), st.binary(max_size=20).map(bytearray)),
            st.booleans(),
        ),
        st.tuples(st.just("data_big"), st.sampled_from([0, 4]), st.sampled_from([63, 64, 16383, 16384, 70000]), st.booleans()),
        st.tuples(st.just("finish"), st.sampled_from([0, 4, 2])),
        st.tuples(st.just("fin_in"), st.sampled_from([0, 4])),
        st.tuples(st.just("hold"), st.binary(min_size=1, max_size=3)),
        st.tuples(st.just("forget"), st.sampled_from([0, 4])),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=SEND_OPS, is_client=st.booleans(), hold=st.booleans())
def test_send_side_matches_python(ops: list[tuple[Any, ...]], is_client: bool, hold: bool) -> None:
    """send_headers / send_data / finish_stream: the same QUIC calls (held QPACK decoder
    instructions first, encoder instructions, the frame bytes), exceptions and stream state."""
    compiled = _compiled()
    ours, theirs = _connection(is_client, hold), _connection(is_client, hold)
    for op in ops:
        kind = op[0]
        if kind == "headers":
            got = _outcome_none(compiled.send_headers, ours, op[1], op[2], op[3])
            want = _outcome_none(py.send_headers, theirs, op[1], op[2], op[3])
        elif kind in ("data", "data_big"):
            data = op[2] if kind == "data" else bytes(op[2])
            got = _outcome_none(compiled.send_data, ours, op[1], data, op[3])
            want = _outcome_none(py.send_data, theirs, op[1], data, op[3])
        elif kind == "finish":
            got = _outcome_none(compiled.finish_stream, ours, op[1])
            want = _outcome_none(py.finish_stream, theirs, op[1])
        elif kind == "fin_in":  # the peer's FIN: both halves over, the stream is dropped
            event = StreamDataReceived(data=b"", end_stream=True, stream_id=op[1])
            got = _outcome(compiled.handle_event, ours, event)
            want = _outcome(py.handle_event, theirs, event)
        elif kind == "hold":
            for conn in (ours, theirs):
                if conn._ptp_held_decoder is not None:
                    conn._ptp_held_decoder += op[1]
            got = want = ("ok", None)
        else:
            ours.forget_stream(op[1])
            theirs.forget_stream(op[1])
            got = want = ("ok", None)
        assert got == want, op
        assert _state(ours) == _state(theirs), op
        assert {sid: vars(s) for sid, s in ours._stream.items()} == {sid: vars(s) for sid, s in theirs._stream.items()}


def _outcome_none(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except Exception as exc:  # noqa: BLE001 - any exception: both twins must raise the same one
        return type(exc).__name__, str(exc)


# --- the peer's QPACK decoder stream ---------------------------------------------------------------

PEER_DECODER_STREAM = {True: 7, False: 6}  # a unidirectional stream of the peer (server's 7, client's 6)


def _decoder_state(h3: PatchedH3Connection) -> dict[str, Any]:
    # The encoder's state shows in what it encodes next: acknowledged entries may be referenced.
    _, block = h3._encoder.encode(12, [*REQUEST, (b"x-other", b"value")])
    return {**_state(h3), "decoder_bytes_received": h3._decoder_bytes_received, "next_block": block}


def _decoder_instructions(h3: PatchedH3Connection, peer: pylsqpack.Decoder) -> bytes:
    """What the peer's decoder writes after our encoder's first two header blocks (the second one
    inserts into the dynamic table): a Section Acknowledgment."""
    out = b""
    for sid in (0, 4):
        enc, block = h3._encoder.encode(sid, [*REQUEST, (b"x-custom", b"value")])
        if enc:
            peer.feed_encoder(enc)
        instructions, _ = peer.feed_header(sid, block)
        out += instructions
    assert out
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    is_client=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=8), max_size=4),
    type_apart=st.booleans(),
    tail=st.sampled_from([b"", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x00", b"\x81"]),
    fin=st.booleans(),
)
def test_decoder_stream_matches_python(is_client: bool, cuts: list[int], type_apart: bool, tail: bytes, fin: bool) -> None:
    compiled = _compiled()
    conns = _connection(is_client, True), _connection(is_client, True)
    peers = pylsqpack.Decoder(4096, 16), pylsqpack.Decoder(4096, 16)
    instructions = []
    for conn, peer in zip(conns, peers, strict=True):
        conn._encoder.apply_settings(**SETTINGS)
        instructions.append(_decoder_instructions(conn, peer))
    assert instructions[0] == instructions[1]
    data = instructions[0] + tail  # a bad tail: a DecoderStreamError
    pieces = [encode_uint_var(StreamType.QPACK_DECODER)] if type_apart else []
    rest = data if type_apart else encode_uint_var(StreamType.QPACK_DECODER) + data
    pos = 0
    for cut in sorted(cuts):
        pieces.append(rest[pos:cut])
        pos = max(pos, cut)
    pieces.append(rest[pos:])
    sid = PEER_DECODER_STREAM[is_client]
    for i, piece in enumerate(pieces):
        event = StreamDataReceived(data=piece, end_stream=fin and i == len(pieces) - 1, stream_id=sid)
        got = _outcome(compiled.handle_event, conns[0], event)
        assert got == _outcome(py.handle_event, conns[1], event)
        assert _state(conns[0]) == _state(conns[1])
        assert conns[0]._decoder_bytes_received == conns[1]._decoder_bytes_received
    assert _decoder_state(conns[0]) == _decoder_state(conns[1])


def test_decoder_stream_instructions_reach_the_encoder_in_c() -> None:
    # The Section Acknowledgment of a request, after the stream type: no Python code on the way.
    compiled = _compiled()
    calls = []

    def spy(self: Any, event: Any) -> Any:
        calls.append(event)
        return py.handle_event(self, event)

    conn = _connection(True, True)
    conn._encoder.apply_settings(**SETTINGS)
    data = _decoder_instructions(conn, pylsqpack.Decoder(4096, 16))
    sid = PEER_DECODER_STREAM[True]
    compiled.configure(**{**h3path._objects(), "handle_event": spy})
    try:
        assert compiled.handle_event(conn, StreamDataReceived(data=encode_uint_var(StreamType.QPACK_DECODER), end_stream=False, stream_id=sid)) == []
        assert len(calls) == 1  # the stream's type: Python
        assert compiled.handle_event(conn, StreamDataReceived(data=data, end_stream=False, stream_id=sid)) == []
        assert len(calls) == 1 and conn._decoder_bytes_received == len(data)
        assert compiled.handle_event(conn, StreamDataReceived(data=b"\x00", end_stream=False, stream_id=sid)) == []  # increment 0
        assert conn._is_done and conn._ptp_quic.calls[-1][0] == "close"  # type: ignore[attr-defined]
    finally:
        _compiled()  # the real objects again
