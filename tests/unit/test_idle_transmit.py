"""datagrams_to_send's idle shortcut (PatchedQuicConnection._ptp_nothing_due).

A transmit with nothing to send (after a datagram that needs no answer, about once per request at
each end) skips aioquic's packet-building pass. The shortcut must only be taken when that pass would
build nothing: the random runs of test_stream_marks are replayed with a connection that, whenever
the shortcut says "idle", runs aioquic's pass anyway and checks that it built no datagram and left
the same pacing time.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair
from tests.unit.test_stream_marks import OPS, _play


class Checked(PatchedQuicConnection):
    """Takes aioquic's full pass every time, and checks it against the shortcut's verdict."""

    idle_verdicts = 0
    busy_verdicts = 0
    discards = 0

    def _ptp_nothing_due(self, space: QuicPacketSpace, now: float) -> list[QuicStream] | None:
        finished = super()._ptp_nothing_due(space, now)
        self._said_idle = finished is not None and not self._max_streams_due_after(finished)
        if self._said_idle:
            Checked.idle_verdicts += 1
            Checked.discards += len(finished or ())
            self._expected_pacing = self._loss._pacer.next_send_time(now=now)
            self._to_discard = [s.stream_id for s in finished or ()]
        else:
            Checked.busy_verdicts += 1
        return None  # the full pass runs, and is checked below

    def _max_streams_due_after(self, finished: list[QuicStream]) -> bool:
        """Whether discarding ``finished`` makes a MAX_STREAMS due (the shortcut then runs the pass)."""
        values = {"bidi": self._local_max_streams_bidi.value, "uni": self._local_max_streams_uni.value}
        for stream in finished:
            sid = stream.stream_id
            if (not sid & 1) != self._is_client:
                values["uni" if sid & 2 else "bidi"] += 1
        for kind, limit in (("bidi", self._local_max_streams_bidi), ("uni", self._local_max_streams_uni)):
            value = values[kind]
            if value != limit.sent and limit.sent - limit.used < value - limit.sent:
                return True
        return False

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self._said_idle = False
        packet_number = self._packet_number
        datagrams = super().datagrams_to_send(now)
        if self._said_idle:
            assert datagrams == [], "the shortcut said idle, aioquic's pass built a packet"
            assert self._packet_number == packet_number
            assert self._pacing_at == self._expected_pacing
            # ... and dropped every mark, as the shortcut does (no stream had anything to do).
            assert not self._ptp_marks.ready and not self._ptp_marks.limits
            # ... and discarded exactly the streams the shortcut would have.
            assert all(sid not in self._streams for sid in self._to_discard)
        return datagrams


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, drops=st.lists(st.booleans(), min_size=1, max_size=12))
def test_the_shortcut_is_taken_only_when_aioquic_would_send_nothing(
    pki: DemoPki, ops: list[tuple[str, int, int]], drops: list[bool]
) -> None:
    Checked.idle_verdicts = Checked.busy_verdicts = Checked.discards = 0
    _play(pki, Checked, ops, drops)
    assert Checked.busy_verdicts > 0
    assert Checked.idle_verdicts > 0  # the settling at the end always has idle passes


def _idle_pair(pki: DemoPki) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    for _ in range(3):
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_stream_data(sid, b"request", end_stream=True)
        pair.roundtrip()
        pair.server.send_stream_data(sid, b"response", end_stream=True)
        pair.roundtrip()
    pair.now += 1.0  # every ACK delay over
    for conn in (pair.client, pair.server):
        at = conn.get_timer()
        if at is not None and at <= pair.now:
            conn.handle_timer(pair.now)
        Pair.events(conn)
    pair.roundtrip()
    return pair


def test_an_idle_transmit_skips_aioquics_pass(pki: DemoPki) -> None:
    pair = _idle_pair(pki)
    passes = []
    original = PatchedQuicConnection._write_application

    def counting(self: Any, builder: Any, network_path: Any, now: float) -> None:
        passes.append(now)
        original(self, builder, network_path, now)

    PatchedQuicConnection._write_application = counting  # type: ignore[method-assign]
    try:
        for conn in (pair.client, pair.server):
            assert conn.datagrams_to_send(now=pair.now) == []
        assert passes == []
        # Turned off, the same transmits run the full pass (and it builds nothing either).
        for conn in (pair.client, pair.server):
            conn._ptp_idle_fast = False
            assert conn.datagrams_to_send(now=pair.now) == []
        assert len(passes) == 2
    finally:
        PatchedQuicConnection._write_application = original  # type: ignore[method-assign]


def test_stale_marks_do_not_defeat_the_shortcut(pki: DemoPki) -> None:
    """The real case: after a datagram that needs no answer, some stream is marked (a request whose
    FIN arrived, bytes just credited) with nothing to send. The shortcut applies and drops the marks
    as aioquic's pass would (without this, it almost never applied between two real ends)."""
    pair = _idle_pair(pki)
    client, server = pair.client, pair.server
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"GET", end_stream=True)
    for data, _ in client.datagrams_to_send(now=pair.now):
        server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    for event in Pair.events(server):
        if isinstance(event, StreamDataReceived):
            server.credit(event.stream_id, len(event.data))
    marks = server._ptp_marks
    assert sid in marks.ready and sid in marks.limits  # the request's FIN, its credited bytes
    space = server._spaces[tls.Epoch.ONE_RTT]
    assert space.ack_at is not None and space.ack_at > pair.now  # the ACK waits for the response
    assert server._ptp_nothing_due(space, pair.now) is not None
    assert server.datagrams_to_send(now=pair.now) == []
    assert not marks.ready and not marks.limits
    # The response is work: the pass runs and sends it (with the ACK).
    server.send_stream_data(sid, b"200", end_stream=True)
    assert server._ptp_nothing_due(space, pair.now) is None
    assert server.datagrams_to_send(now=pair.now) != []



def test_whatever_is_due_still_goes_out(pki: DemoPki) -> None:
    """Each kind of frame an otherwise idle connection may owe defeats the shortcut."""

    def ping(conn: PatchedQuicConnection) -> None:
        conn.send_ping(1)

    def new_connection_id(conn: PatchedQuicConnection) -> None:
        conn._host_cids[-1].was_sent = False

    def handshake_done_lost(conn: PatchedQuicConnection) -> None:
        conn._handshake_done_pending = True

    def max_data_lost(conn: PatchedQuicConnection) -> None:
        conn._local_max_data.sent = 0

    def max_data_earned(conn: PatchedQuicConnection) -> None:
        conn.credit(0, conn._ptp_conn_window)

    def ack_due(conn: PatchedQuicConnection) -> None:
        space = conn._spaces[tls.Epoch.ONE_RTT]
        space.ack_queue.add(10_000, 10_001)
        space.ack_at = pair.now

    def probe(conn: PatchedQuicConnection) -> None:
        conn._probe_pending = True

    def stream_data(conn: PatchedQuicConnection) -> None:
        conn.send_stream_data(conn.get_next_available_stream_id(), b"more")

    def _opened(conn: PatchedQuicConnection) -> int:
        sid = conn.get_next_available_stream_id()
        conn.send_stream_data(sid, b"")  # opens it, nothing to send: a stale mark, no work
        assert conn._ptp_nothing_due(conn._spaces[tls.Epoch.ONE_RTT], pair.now) is not None
        return sid

    def stream_reset(conn: PatchedQuicConnection) -> None:
        conn.reset_stream(_opened(conn), 5)

    def stream_stopped(conn: PatchedQuicConnection) -> None:
        conn.stop_stream(_opened(conn), 6)

    def stream_window_owed(conn: PatchedQuicConnection) -> None:
        sid = _opened(conn)
        conn._streams[sid].max_stream_data_local_sent = 0  # its MAX_STREAM_DATA was lost
        conn._ptp_marks.limits[sid] = None

    kinds = (
        ping, new_connection_id, handshake_done_lost, max_data_lost, max_data_earned, ack_due, probe,
        stream_data, stream_reset, stream_stopped, stream_window_owed,
    )
    for make_due in kinds:
        pair = _idle_pair(pki)
        conn = pair.client
        space = conn._spaces[tls.Epoch.ONE_RTT]
        assert conn._ptp_nothing_due(space, pair.now) is not None, make_due.__name__
        make_due(conn)
        assert conn._ptp_nothing_due(space, pair.now) is None, make_due.__name__
        assert conn.datagrams_to_send(now=pair.now) != [], make_due.__name__


def test_the_shortcut_discards_finished_streams_as_the_pass_would(pki: DemoPki) -> None:
    """A request stream finished both ways (the response's ACK arrived) is discarded by the next
    pass, which lets the peer open another (MAX_STREAMS, batched): the shortcut does the same."""
    pair = _idle_pair(pki)
    client, server = pair.client, pair.server
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"GET", end_stream=True)
    pair.roundtrip()
    server.send_stream_data(sid, b"200", end_stream=True)
    for data, _ in server.datagrams_to_send(now=pair.now):
        client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.now += 0.01  # the client's ACK delay
    client.handle_timer(pair.now)
    for data, _ in client.datagrams_to_send(now=pair.now):
        server.receive_datagram(data, CLIENT_ADDR, now=pair.now)  # acknowledges the response
    assert sid in server._streams and server._streams[sid].is_finished
    space = server._spaces[tls.Epoch.ONE_RTT]
    finished = server._ptp_nothing_due(space, pair.now)
    assert finished is not None and [s.stream_id for s in finished] == [sid]
    limit = server._local_max_streams_bidi
    value = limit.value
    assert server.datagrams_to_send(now=pair.now) == []  # MAX_STREAMS batched: not due yet
    assert sid not in server._streams
    assert limit.value == value + 1
