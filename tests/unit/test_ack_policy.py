"""ACK policy (RFC 9000 §13.2) of PatchedQuicConnection: one ack-eliciting packet is acknowledged
after ACK_DELAY, the ACK_PACKET_THRESHOLD-th (tenth) one at once, and one that reveals a gap at once;
after ACK_FLUSH_PACKETS unacknowledged ones the session is told to send it in the middle of a read."""

from __future__ import annotations

from aioquic import tls

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.aioquic.connection import (
    ACK_DELAY,
    ACK_FLUSH_PACKETS,
    ACK_PACKET_THRESHOLD,
    ACK_UNIT_BYTES,
    MAX_ACK_DELAY_MS,
)
from tests.support.quic_pair import CLIENT_ADDR, Pair


def _ready(pki: DemoPki) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    pair.now += 1.0
    pair.roundtrip()
    return pair


def _client_packets(pair: Pair, count: int) -> list[bytes]:
    """``count`` ack-eliciting 1-RTT datagrams from the client, one small stream write each."""
    out: list[bytes] = []
    for _ in range(count):
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_stream_data(sid, b"GET", end_stream=True)
        sent = pair.client.datagrams_to_send(now=pair.now)
        assert len(sent) == 1
        out.append(sent[0][0])
    return out


def _ack_only(conn: PatchedQuicConnection, now: float) -> int:
    before = conn.packets_sent["ack"]
    conn.datagrams_to_send(now=now)
    return conn.packets_sent["ack"] - before


def test_ack_delay_stays_under_the_advertised_max() -> None:
    assert 0.001 < ACK_DELAY < MAX_ACK_DELAY_MS / 1000


def test_a_lone_packet_is_acknowledged_after_the_delay(pki: DemoPki) -> None:
    pair = _ready(pki)
    (packet,) = _client_packets(pair, 1)
    pair.server.receive_datagram(packet, CLIENT_ADDR, now=pair.now)
    pair.events(pair.server)
    assert _ack_only(pair.server, pair.now + 0.001) == 0  # aioquic would have acknowledged by now
    timer = pair.server.get_timer()
    assert timer is not None and timer <= pair.now + ACK_DELAY + 1e-9
    pair.server.handle_timer(now=pair.now + ACK_DELAY)
    assert _ack_only(pair.server, pair.now + ACK_DELAY) == 1


def test_the_threshold_packet_is_acknowledged_at_once(pki: DemoPki) -> None:
    assert ACK_PACKET_THRESHOLD == 10
    pair = _ready(pki)
    packets = _client_packets(pair, ACK_PACKET_THRESHOLD)
    for packet in packets[:-1]:  # in order, below the threshold: the ACK waits (or rides along)
        pair.server.receive_datagram(packet, CLIENT_ADDR, now=pair.now)
        pair.events(pair.server)
        assert _ack_only(pair.server, pair.now) == 0
    pair.server.receive_datagram(packets[-1], CLIENT_ADDR, now=pair.now)
    pair.events(pair.server)
    assert _ack_only(pair.server, pair.now) == 1
    # The count starts over after an ACK: the next lone packet waits again.
    (after,) = _client_packets(pair, 1)
    pair.server.receive_datagram(after, CLIENT_ADDR, now=pair.now)
    pair.events(pair.server)
    assert _ack_only(pair.server, pair.now) == 0


def test_a_datagram_of_threshold_size_is_acknowledged_at_once(pki: DemoPki) -> None:
    """A datagram counts as the packets of ACK_UNIT_BYTES it could hold: with 16 KiB datagrams
    (path MTU discovery on loopback) a sender down to a window of a few datagrams must not wait
    out the ACK delay per window (10 MiB GETs after a run of small requests: 13 MB/s)."""
    pair = _ready(pki)
    size = ACK_UNIT_BYTES * ACK_PACKET_THRESHOLD
    pair.client._ptp_use_datagram_size(size)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * size, end_stream=False)
    (first, *_) = [data for data, _ in pair.client.datagrams_to_send(now=pair.now)]
    assert len(first) > ACK_UNIT_BYTES * (ACK_PACKET_THRESHOLD - 1)
    pair.server.receive_datagram(first, CLIENT_ADDR, now=pair.now)
    pair.events(pair.server)
    assert _ack_only(pair.server, pair.now) == 1


def test_a_gap_is_acknowledged_at_once(pki: DemoPki) -> None:
    pair = _ready(pki)
    _lost, after = _client_packets(pair, 2)
    pair.server.receive_datagram(after, CLIENT_ADDR, now=pair.now)
    pair.events(pair.server)
    assert _ack_only(pair.server, pair.now) == 1
    assert pair.server._spaces[tls.Epoch.ONE_RTT].ack_at is None


def test_a_long_read_asks_for_its_ack_at_the_flush_count(pki: DemoPki) -> None:
    assert ACK_PACKET_THRESHOLD < ACK_FLUSH_PACKETS
    pair = _ready(pki)
    packets = _client_packets(pair, ACK_FLUSH_PACKETS + 1)
    server = pair.server
    # One read: the ACK is due from the tenth packet on, but only the flush count asks for it now.
    for packet in packets[: ACK_FLUSH_PACKETS - 1]:
        server.receive_datagram(packet, CLIENT_ADDR, now=pair.now)
        pair.events(server)
        assert not server.ack_flush_due()
    server.receive_datagram(packets[ACK_FLUSH_PACKETS - 1], CLIENT_ADDR, now=pair.now)
    pair.events(server)
    assert server.ack_flush_due()
    assert _ack_only(server, pair.now) == 1
    assert not server.ack_flush_due()  # the count starts over with the ACK sent
    server.receive_datagram(packets[-1], CLIENT_ADDR, now=pair.now)
    pair.events(server)
    assert not server.ack_flush_due()
