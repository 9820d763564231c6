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
from aioquic.quic import connection as qc
from aioquic.quic.recovery import QuicPacketSpace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from tests.support.quic_pair import Pair
from tests.unit.test_stream_marks import OPS, _play


class Checked(PatchedQuicConnection):
    """Takes aioquic's full pass every time, and checks it against the shortcut's verdict."""

    idle_verdicts = 0
    busy_verdicts = 0

    def _ptp_nothing_due(self, space: QuicPacketSpace, now: float) -> bool:
        idle = super()._ptp_nothing_due(space, now)
        self._said_idle = idle
        if idle:
            Checked.idle_verdicts += 1
            self._expected_pacing = self._loss._pacer.next_send_time(now=now)
        else:
            Checked.busy_verdicts += 1
        return False  # the full pass runs, and is checked below

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self._said_idle = False
        packet_number = self._packet_number
        datagrams = super().datagrams_to_send(now)
        if self._said_idle:
            assert datagrams == [], "the shortcut said idle, aioquic's pass built a packet"
            assert self._packet_number == packet_number
            assert self._pacing_at == self._expected_pacing
        return datagrams


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, drops=st.lists(st.booleans(), min_size=1, max_size=12))
def test_the_shortcut_is_taken_only_when_aioquic_would_send_nothing(
    pki: DemoPki, ops: list[tuple[str, int, int]], drops: list[bool]
) -> None:
    Checked.idle_verdicts = Checked.busy_verdicts = 0
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
    original = qc.QuicConnection._write_application

    def counting(self: Any, builder: Any, network_path: Any, now: float) -> None:
        passes.append(now)
        original(self, builder, network_path, now)

    qc.QuicConnection._write_application = counting  # type: ignore[method-assign]
    try:
        for conn in (pair.client, pair.server):
            assert conn.datagrams_to_send(now=pair.now) == []
        assert passes == []
        # Turned off, the same transmits run aioquic's pass (and it builds nothing either).
        for conn in (pair.client, pair.server):
            conn._ptp_idle_fast = False
            assert conn.datagrams_to_send(now=pair.now) == []
        assert len(passes) == 2
    finally:
        qc.QuicConnection._write_application = original  # type: ignore[method-assign]


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

    for make_due in (ping, new_connection_id, handshake_done_lost, max_data_lost, max_data_earned, ack_due, probe, stream_data):
        pair = _idle_pair(pki)
        conn = pair.client
        space = conn._spaces[tls.Epoch.ONE_RTT]
        assert conn._ptp_nothing_due(space, pair.now), make_due.__name__
        make_due(conn)
        assert not conn._ptp_nothing_due(space, pair.now), make_due.__name__
        assert conn.datagrams_to_send(now=pair.now) != [], make_due.__name__
