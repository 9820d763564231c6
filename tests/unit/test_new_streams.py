"""A request stream's opening at either end (PatchedQuicConnection._get_or_create_stream for the
peer's next stream, _get_or_create_stream_for_send for our next one) leaves the connection as
aioquic's own methods followed by the adoption of the queued stream do: the same streams, limits,
next IDs, blocked lists, marks and errors, for random orders of stream IDs (the shortcut covers
only the next ID; anything else is aioquic's method as before)."""

from __future__ import annotations

import logging
from typing import Any

from aioquic.quic.connection import QuicConnection, QuicConnectionError, StreamFinishedError
from aioquic.quic.stream import QuicStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.aioquic.marks import MarkingStream
from tests.support.quic_pair import Pair, flow_settings

STREAM_FRAME = 0x08


class Reference(PatchedQuicConnection):
    """aioquic's methods for every case, the new stream adopted from the queue (before the shortcut)."""

    def _get_or_create_stream(self, frame_type: int, stream_id: int) -> QuicStream:
        existing = self._streams.get(stream_id)
        if existing is not None:
            return existing
        stream = QuicConnection._get_or_create_stream(self, frame_type, stream_id)
        if self._streams_queue:
            self._ptp_adopt_new()
        return stream

    def _get_or_create_stream_for_send(self, stream_id: int) -> QuicStream:
        stream = QuicConnection._get_or_create_stream_for_send(self, stream_id)
        if self._streams_queue:
            self._ptp_adopt_new()
        return stream


def _stream_state(stream: QuicStream) -> dict[str, Any]:
    def plain(obj: Any) -> dict[str, Any]:
        return {k: (list(v) if hasattr(v, "__iter__") and not isinstance(v, (bytes, bytearray)) else v)
                for k, v in vars(obj).items() if k != "_ptp_marks"}

    assert type(stream) is MarkingStream
    return {
        "stream": {k: v for k, v in vars(stream).items() if k not in ("sender", "receiver")},
        "layout": (list(vars(stream.sender)), list(vars(stream.receiver))),
        "sender": plain(stream.sender),
        "receiver": plain(stream.receiver),
    }


def _state(conn: PatchedQuicConnection) -> dict[str, Any]:
    marks = conn._ptp_marks
    for stream in conn._streams.values():
        assert stream.sender._ptp_marks is marks and stream.receiver._ptp_marks is marks  # type: ignore[attr-defined]
    bidi = conn._local_max_streams_bidi
    return {
        "streams": {sid: _stream_state(s) for sid, s in conn._streams.items()},
        "order": list(conn._streams),
        "used": (bidi.used, bidi.value, conn._local_max_streams_uni.used),
        "next": (conn._local_next_stream_id_bidi, conn._local_next_stream_id_uni),
        "blocked": ([s.stream_id for s in conn._streams_blocked_bidi], conn._streams_blocked_pending),
        "queue": list(conn._streams_queue),
        "marks": (list(marks.ready), list(marks.limits), list(marks.received)),
    }


def _play(pki: DemoPki, cls: type[PatchedQuicConnection], ops: list[tuple[str, int]]) -> list[Any]:
    flow = flow_settings(max_concurrent_streams=4)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    pair.roundtrip()
    for conn in (pair.client, pair.server):
        conn.__class__ = cls
    out: list[Any] = []
    for op, n in ops:
        try:
            if op == "receive":  # the server end gets a frame of the client's stream n
                pair.server._get_or_create_stream(STREAM_FRAME, 4 * n)
            elif op == "receive-uni":
                pair.server._get_or_create_stream(STREAM_FRAME, 4 * n + 2)
            elif op == "send":  # the client end sends on its stream n
                pair.client._get_or_create_stream_for_send(4 * n)
            elif op == "send-server":  # the server end sends on its own stream n
                pair.server._get_or_create_stream_for_send(4 * n + 1)
            else:  # the peer's stream n sent on by the client end (it opened none): an error
                pair.client._get_or_create_stream_for_send(4 * n + 1)
            out.append("ok")
        except (QuicConnectionError, StreamFinishedError, ValueError) as exc:
            out.append((type(exc).__name__, str(exc)))
        if op == "receive" and n % 3 == 2:
            pair.server._streams.pop(4 * n, None)  # discarded: a later frame of it is an error
    out.append(("client", _state(pair.client)))
    out.append(("server", _state(pair.server)))
    return out


OPS = st.lists(
    st.tuples(st.sampled_from(["receive", "receive-uni", "send", "send-server", "send-peer"]), st.integers(0, 7)),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_a_new_stream_leaves_the_connection_as_aioquics_methods_do(pki: DemoPki, ops: list[tuple[str, int]]) -> None:
    assert _play(pki, PatchedQuicConnection, ops) == _play(pki, Reference, ops)


def test_the_next_stream_of_each_end_opens_and_is_marked(pki: DemoPki) -> None:
    ops = [("send", 0), ("receive", 0), ("send", 1), ("receive", 1), ("send", 2), ("send", 3), ("send", 4)]
    ours, theirs = _play(pki, PatchedQuicConnection, ops), _play(pki, Reference, ops)
    assert ours == theirs
    client = dict(ours[-2:])["client"]
    assert client["next"][0] == 20 and client["blocked"] == ([16], True)  # beyond the server's 4 streams
    assert client["marks"][0] == [0, 4, 8, 12, 16]


def test_debug_logging_still_reports_streams_created_and_discarded(pki: DemoPki, caplog: Any) -> None:
    # The shortcuts call the logger adapter only when DEBUG is enabled: when it is, the same lines.
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    with caplog.at_level(logging.DEBUG, logger="quic"):
        pair.client.send_stream_data(0, b"request", end_stream=True)
        pair.roundtrip()
        pair.server.send_stream_data(0, b"response", end_stream=True)
        pair.roundtrip()
    messages = [r.getMessage().split("] ", 1)[-1] for r in caplog.records if r.name == "quic"]  # "[cid] ..."
    assert "Stream 0 created by peer" in messages
    assert messages.count("Stream 0 discarded") == 2  # once at each end
    assert 0 not in pair.client._streams and 0 not in pair.server._streams
    caplog.clear()
    pair.client.send_stream_data(4, b"request", end_stream=True)
    pair.roundtrip()
    pair.server.send_stream_data(4, b"response", end_stream=True)
    pair.roundtrip()
    assert [r for r in caplog.records if r.name == "quic" and r.levelno == logging.DEBUG] == []
