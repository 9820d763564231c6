"""Tail probe (``redundancy = "Probe"``; connection.py, TAIL_PROBE_MIN_RTT): a lone lost packet on a long link is declared
lost at the time threshold (9/8 x RTT after it was sent), not at the probe timeout, because a PING
follows it srtt / 8 later and the PING's acknowledgement reveals the gap. In-memory pair with a
simulated 50 ms link: every datagram is delivered by hand 25 ms after it was sent (or dropped), so
every deadline is read off the simulated clock."""

from __future__ import annotations

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair, flow_settings

ONE_WAY = 0.025


def _link_pair(pki: DemoPki, redundancy: str = "Probe") -> Pair:
    """An established pair whose RTT estimate is 50 ms (a few exchanges over the simulated link)."""
    pair = Pair(
        pki,
        client_leaf=pki.client,
        client_flow=flow_settings(redundancy=redundancy),  # type: ignore[arg-type]
        server_flow=flow_settings(redundancy=redundancy),  # type: ignore[arg-type]
    )
    pair.roundtrip()
    for _ in range(20):
        _exchange(pair)
    loss = pair.client._loss
    assert 0.04 < loss._rtt_smoothed < 0.06
    return pair


def _deliver(pair: Pair, sender: PatchedQuicConnection, datagrams: list[bytes]) -> None:
    receiver, addr = (pair.server, CLIENT_ADDR) if sender is pair.client else (pair.client, SERVER_ADDR)
    for data in datagrams:
        receiver.receive_datagram(data, addr, now=pair.now)


def _send(conn: PatchedQuicConnection, now: float) -> list[bytes]:
    return [data for data, _ in conn.datagrams_to_send(now=now)]


def _drain(conn: PatchedQuicConnection) -> bytes:
    out = b""
    while (event := conn.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            out += event.data
    return out


def _exchange(pair: Pair) -> None:
    """A request and its response across the 50 ms link, then every timer due until quiet."""
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"q" * 200, end_stream=True)
    request = _send(pair.client, pair.now)
    pair.now += ONE_WAY
    _deliver(pair, pair.client, request)
    _drain(pair.server)
    pair.server.send_stream_data(sid, b"r" * 200, end_stream=True)
    response = _send(pair.server, pair.now)
    pair.now += ONE_WAY
    _deliver(pair, pair.server, response)
    _drain(pair.client)
    _settle(pair, 1.0)


def _settle(pair: Pair, seconds: float) -> None:
    """Run both ends' timers for ``seconds``, every datagram crossing in ONE_WAY."""
    end = pair.now + seconds
    flight: list[tuple[float, PatchedQuicConnection, bytes]] = []
    while True:
        timers = [t for t in (pair.client.get_timer(), pair.server.get_timer()) if t is not None]
        timers += [at for at, _, _ in flight]
        at = min(timers, default=end)
        if at >= end:
            pair.now = end
            return
        pair.now = max(pair.now, at)
        for item in [f for f in flight if f[0] <= pair.now]:
            flight.remove(item)
            _deliver(pair, item[1], [item[2]])
        for conn in (pair.client, pair.server):
            timer = conn.get_timer()
            if timer is not None and timer <= pair.now:
                conn.handle_timer(now=pair.now)
            for data in _send(conn, pair.now):
                flight.append((pair.now + ONE_WAY, conn, data))


def test_a_lone_lost_packet_is_resent_at_the_time_threshold(pki: DemoPki) -> None:
    pair = _link_pair(pki)
    client = pair.client
    loss = client._loss
    srtt = loss._rtt_smoothed
    pto = loss.get_probe_timeout()
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"q" * 200, end_stream=True)
    sent_at = pair.now
    lost = _send(client, pair.now)
    assert len(lost) == 1  # dropped on the wire
    # The client's next deadline is the tail probe, srtt / 8 later, well before the probe timeout.
    at = client.get_timer()
    assert at is not None and abs(at - (sent_at + srtt / 8)) < 1e-9
    pair.now = at
    client.handle_timer(now=pair.now)
    probe = _send(client, pair.now)
    assert len(probe) == 1 and client.tail_probes == 1
    assert client.redundant_bytes == len(probe[0])  # its cost, counted for /metrics
    # The PING reaches the server after the gap: its ACK leaves at once and arrives one RTT later.
    pair.now += ONE_WAY
    _deliver(pair, client, probe)
    ack = _send(pair.server, pair.now)
    assert ack
    pair.now += ONE_WAY
    _deliver(pair, pair.server, ack)
    # The request is declared lost at the time threshold (the connection's: 1 x RTT at first, see
    # lossdetect.py), at once (the ACK came later than that) or by the loss timer.
    deadline = max(pair.now, sent_at + loss._ptp_time_threshold * max(srtt, loss._rtt_latest) + 1e-6)
    again = _send(client, pair.now)
    if not again:
        at = client.get_timer()
        assert at is not None and at <= deadline
        pair.now = max(pair.now, at)
        client.handle_timer(now=pair.now)
        again = _send(client, pair.now)
    assert again and pair.now <= deadline < sent_at + pto
    assert client.tail_probes == 1  # one probe per lone flight
    pair.now += ONE_WAY
    _deliver(pair, client, again)
    assert _drain(pair.server) == b"q" * 200


def test_no_probe_when_the_flight_is_acknowledged_or_rtt_is_short(pki: DemoPki) -> None:
    pair = _link_pair(pki)
    probes = pair.client.tail_probes + pair.server.tail_probes
    # Each lone request and response of an exchange gets one probe (nothing acknowledges it
    # within srtt / 8 on a 50 ms link), and never more than one.
    _exchange(pair)
    assert pair.client.tail_probes + pair.server.tail_probes - probes <= 2
    # In-memory pair without latency: srtt below TAIL_PROBE_MIN_RTT, no probe at all.
    quick = Pair(
        pki,
        client_leaf=pki.client,
        client_flow=flow_settings(redundancy="Probe"),  # type: ignore[arg-type]
        server_flow=flow_settings(redundancy="Probe"),  # type: ignore[arg-type]
    )
    quick.roundtrip()
    sid = quick.client.get_next_available_stream_id()
    quick.client.send_stream_data(sid, b"q" * 200, end_stream=True)
    quick.roundtrip()
    assert quick.client.tail_probes == 0 and quick.server.tail_probes == 0


def test_no_probe_unless_asked_for(pki: DemoPki) -> None:
    """The default ``redundancy = "None"`` sends nothing extra: a lone lost packet waits for the
    probe timeout, and no exchange carries a PING or counts redundant bytes."""
    pair = _link_pair(pki, redundancy="None")
    client = pair.client
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"q" * 200, end_stream=True)
    sent_at = pair.now
    assert len(_send(client, pair.now)) == 1  # dropped on the wire
    at = client.get_timer()
    assert at is not None and at >= sent_at + client._loss.get_probe_timeout() - 1e-6
    _exchange(pair)
    assert client.tail_probes == 0 and pair.server.tail_probes == 0
    assert client.redundant_bytes == 0 and pair.server.redundant_bytes == 0
