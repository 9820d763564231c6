"""Small packets cost the pacer their own size, not a whole datagram.

aioquic charges the pacer one full datagram per packet before it knows the packet's size; the
connection gives back the difference once the packets are built (``Pacer.refund``). Without that,
a few short exchanges (a request, a QPACK instruction, an ACK) drained a pacer whose rate came
from those very exchanges, the next response waited a datagram's time (83 ms at the 17 kB/s a
server end had learned), and BBR learned an even smaller rate from the delayed sample: sequential
GETs on loopback took 10-20 ms instead of 1.5 in two pairs out of three.
"""

from __future__ import annotations

import pytest

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.cc.ccpath import Pacer
from tests.support.quic_pair import Pair, flow_settings

MDS = 1452


def _small_packet(pacer: Pacer, now: float, size: int) -> None:
    """What the connection does for one packet of ``size`` bytes."""
    pacer.update_after_send(now)
    pacer.refund(MDS - size)


def test_small_packets_at_a_low_rate_are_not_held() -> None:
    pacer = Pacer(max_datagram_size=MDS, rate=17_000.0)
    now = 100.0
    for _ in range(200):  # an exchange every 8 ms: ACK + QPACK (42 B) then the response (75 B)
        assert pacer.next_send_time(now) is None
        _small_packet(pacer, now, 42)
        assert pacer.next_send_time(now + 0.0004) is None
        _small_packet(pacer, now + 0.0004, 75)
        now += 0.008


def test_without_the_refund_the_second_packet_waits_a_datagram_time() -> None:
    pacer = Pacer(max_datagram_size=MDS, rate=17_000.0)
    pacer.update_after_send(100.0)
    pacer.update_after_send(100.0)
    wake = pacer.next_send_time(100.0004)
    assert wake is not None and wake - 100.0004 > 0.05  # what the refund avoids


def test_a_refund_never_overfills_the_bucket() -> None:
    pacer = Pacer(max_datagram_size=MDS, rate=12_000.0)
    full = pacer.tokens
    _small_packet(pacer, 0.0, 60)
    assert pacer.tokens == pytest.approx(full - 60)
    pacer.refund(10**9)
    assert pacer.tokens == pacer.capacity
    pacer.refund(-5.0)  # nothing to give back
    assert pacer.tokens == pacer.capacity


@pytest.mark.parametrize("algorithm", ["Bbr", "Cubic", "NewReno"])
def test_the_connection_charges_a_small_packet_its_size(pki: DemoPki, algorithm: str) -> None:
    flow = flow_settings(congestion_algorithm=algorithm)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    pair.roundtrip()
    pacer = pair.client._loss._pacer
    pacer.tokens = pacer.capacity
    before = pacer.tokens
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"GET /item", end_stream=True)
    datagrams = pair.client.datagrams_to_send(now=pair.now)
    assert len(datagrams) == 1
    size = len(datagrams[0][0])
    assert size < 100
    # The bucket refilled nothing (same instant): it lost exactly the packet's bytes.
    assert pacer.tokens == pytest.approx(before - size)
