"""Few new streams per packet on a long link (connection.py, FRESH_STREAMS_PER_PACKET, SPLIT_MIN_RTT):
requests (or responses) sent in one pass go out at most two per packet once the path's minimum RTT
is 8 ms or more, so a lost packet delays two exchanges at most and the packets after it reveal the
gap long before the probe timeout. The simulated 50 ms link of test_tail_probe (every datagram
delivered by hand 25 ms after it was sent, or dropped), the handshake included."""

from __future__ import annotations

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.aioquic.connection import FRESH_STREAMS_PER_PACKET
from tests.support.quic_pair import CLIENT_ADDR, Pair, flow_settings
from tests.unit.test_tail_probe import ONE_WAY, _deliver, _exchange, _link_pair, _send

PER_PACKET = FRESH_STREAMS_PER_PACKET


def _long_pair(pki: DemoPki, redundancy: str = "None") -> Pair:
    """An established pair whose every packet, the handshake's included, crossed the 50 ms link."""
    flow = flow_settings(redundancy=redundancy)  # type: ignore[arg-type]
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    ends = (pair.client, pair.server)
    flight: list[tuple[float, PatchedQuicConnection, bytes]] = []
    while not (
        pair.client._handshake_confirmed and pair.server._handshake_confirmed and not flight
    ):
        for conn in ends:
            if conn._network_paths:  # the server end has a path once the first datagram arrived
                flight += [(pair.now + ONE_WAY, conn, data) for data in _send(conn, pair.now)]
        timers = [t for t in (c.get_timer() for c in ends if c._network_paths) if t is not None]
        pair.now = max(pair.now, min(timers + [at for at, _, _ in flight]))
        for item in [f for f in flight if f[0] <= pair.now]:
            flight.remove(item)
            _deliver(pair, item[1], [item[2]])
        for conn in ends:
            timer = conn.get_timer() if conn._network_paths else None
            if timer is not None and timer <= pair.now:
                conn.handle_timer(now=pair.now)
    for _ in range(5):
        _exchange(pair)
    for conn in ends:
        assert 0.04 < conn._loss._rtt_min <= conn._loss._rtt_smoothed < 0.06
    return pair


def _stream_ids(conn: PatchedQuicConnection) -> list[int]:
    ids = []
    while (event := conn.next_event()) is not None:
        if isinstance(event, StreamDataReceived) and event.stream_id not in ids:
            ids.append(event.stream_id)
    return ids


def _requests(conn: PatchedQuicConnection, n: int) -> list[int]:
    sids = []
    for _ in range(n):
        sid = conn.get_next_available_stream_id()
        conn.send_stream_data(sid, b"q" * 60, end_stream=True)
        sids.append(sid)
    return sids


def test_concurrent_requests_and_responses_leave_a_few_per_packet(pki: DemoPki) -> None:
    assert PER_PACKET == 2
    pair = _long_pair(pki)
    sids = _requests(pair.client, 3 * PER_PACKET)
    datagrams = _send(pair.client, pair.now)
    assert len(datagrams) == 3
    pair.now += ONE_WAY
    seen = []
    for data in datagrams:  # each datagram carries PER_PACKET requests, in order
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
        ids = _stream_ids(pair.server)
        assert len(ids) == PER_PACKET
        seen += ids
    assert seen == sids
    for sid in sids:  # the responses, written in one go, leave the same way
        pair.server.send_stream_data(sid, b"r" * 60, end_stream=True)
    assert len(_send(pair.server, pair.now)) == 3


def test_a_lost_packet_delays_only_its_requests_and_is_resent_before_the_probe_timeout(
    pki: DemoPki,
) -> None:
    pair = _long_pair(pki)
    client = pair.client
    pto = client._loss.get_probe_timeout()
    sids = _requests(client, 3 * PER_PACKET)
    sent_at = pair.now
    first, *rest = _send(client, pair.now)  # the first packet is lost on the wire
    pair.now += ONE_WAY
    _deliver(pair, client, rest)
    assert sorted(_stream_ids(pair.server)) == sids[PER_PACKET:]  # the others arrive
    ack = _send(pair.server, pair.now)  # after a gap: acknowledged at once
    assert ack
    pair.now += ONE_WAY
    _deliver(pair, pair.server, ack)
    # The client's timers in turn (an ACK, the loss timer, ...) until the lost requests are resent:
    # found through the later packets' acknowledgement, before the probe timeout.
    for _ in range(50):
        at = client.get_timer()
        assert at is not None
        pair.now = max(pair.now, at)
        assert pair.now < sent_at + pto
        client.handle_timer(now=pair.now)
        out = _send(client, pair.now)
        _deliver(pair, client, out)  # (at once: only what arrives is checked here)
        if _stream_ids(pair.server) == sids[:PER_PACKET]:
            break
    else:
        raise AssertionError("the lost requests were not resent")


def test_one_packet_on_a_short_link_or_with_tail_redundancy(pki: DemoPki) -> None:
    quick = Pair(pki, client_leaf=pki.client)  # in memory, no latency: srtt below SPLIT_MIN_RTT
    quick.roundtrip()
    _requests(quick.client, 3 * PER_PACKET)
    assert len(_send(quick.client, quick.now)) == 1
    # srtt of 50 ms but a handshake without latency: the minimum RTT says the path is short.
    short = _link_pair(pki, redundancy="None")
    assert short.client._loss._rtt_smoothed > 0.04 and short.client._loss._rtt_min < 0.008
    _requests(short.client, 3 * PER_PACKET)
    assert len(_send(short.client, short.now)) == 1
    tail = _long_pair(pki, redundancy="Tail")  # its copies cover bursts of a few packets
    _requests(tail.client, 3 * PER_PACKET)
    assert len(_send(tail.client, tail.now)) == 1
