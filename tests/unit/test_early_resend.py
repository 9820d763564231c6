"""A handshake sent again (the server end was not listening) carries the 0-RTT requests again.

In-memory connections, no sockets: the client's first flight (Initial + a 0-RTT request) is lost,
as it is when the server end restarts or the link is out; then the client sends its handshake
again (``resend_handshake``, what an ICMP port unreachable or a waiting request triggers).
"""

from __future__ import annotations

from aioquic import tls
from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from tests.support.quic_pair import CLIENT_ADDR, Pair


def _ticket(pki: DemoPki, store: dict[bytes, tls.SessionTicket]) -> tls.SessionTicket:
    first = Pair(pki, client_leaf=pki.client, tickets=store)
    first.roundtrip()
    assert first.client_tickets, "no ticket issued"
    return first.client_tickets[-1]


def _resumed_with_lost_first_flight(pki: DemoPki) -> tuple[Pair, int]:
    store: dict[bytes, tls.SessionTicket] = {}
    pair = Pair(pki, client_leaf=pki.client, ticket=_ticket(pki, store), tickets=store)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"GET /early", end_stream=True)
    lost = pair.client.datagrams_to_send(now=pair.now)
    assert lost, "the client sent nothing"
    return pair, sid


def test_the_resent_handshake_carries_the_early_request(pki: DemoPki) -> None:
    pair, sid = _resumed_with_lost_first_flight(pki)
    pair.now += 0.05
    assert pair.client.resend_handshake(pair.now)
    for data, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    # Before the client heard anything back, the server has the request: it can answer within
    # the handshake's round trip instead of one round trip after it.
    got = [e for e in Pair.events(pair.server) if isinstance(e, StreamDataReceived) and e.stream_id == sid]
    assert b"".join(e.data for e in got) == b"GET /early"
    assert got[-1].end_stream
    assert pair.server.tls.early_data_accepted


def test_the_early_request_is_delivered_once_and_nothing_is_counted_as_congestion(pki: DemoPki) -> None:
    pair, sid = _resumed_with_lost_first_flight(pki)
    window = pair.client.congestion_controller.congestion_window
    pair.now += 0.05
    pair.client.resend_handshake(pair.now)
    assert pair.client.congestion_controller.congestion_window == window
    pair.roundtrip()
    data = [e for e in Pair.events(pair.server) if isinstance(e, StreamDataReceived) and e.stream_id == sid]
    assert b"".join(e.data for e in data) == b"GET /early"
    assert pair.client.resend_handshake(pair.now) is False  # the handshake is over: nothing to do
