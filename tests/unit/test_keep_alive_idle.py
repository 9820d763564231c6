"""A keep-alive PING sent into a dead path does not keep the connection alive past the peer.

In-memory connections, simulated clock: after the last packet from the peer, everything is lost
(a blackout). aioquic restarts the idle timer on the first ack-eliciting packet sent after a
receipt (RFC 9000 §10.1), so a keep-alive sent 2 s into the blackout kept the client's connection
open 2 s longer than the server's; the next request met a Stateless Reset first.
"""

from __future__ import annotations

from aioquic.quic.events import PingAcknowledged

from ptproxy.ops.devcerts import DemoPki
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair

IDLE = 5.0  # s: the Pair's max_idle_timeout is aioquic's default (60 s); set it below


def _pair(pki: DemoPki) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    for conn in (pair.client, pair.server):
        conn._configuration.idle_timeout = IDLE
    pair.roundtrip()
    return pair


def test_a_keep_alive_into_a_blackout_leaves_the_idle_deadline_alone(pki: DemoPki) -> None:
    pair = _pair(pki)
    last_receipt = pair.now
    deadline = pair.client._close_at
    pair.now += 2.0
    pair.client.send_keep_alive()
    assert pair.client.datagrams_to_send(now=pair.now), "no PING sent"  # lost: the blackout
    assert pair.client._close_at == deadline
    # The connection is over at the deadline the last receipt set, not 2 s later.
    pair.now = last_receipt + IDLE + 0.01
    pair.client.handle_timer(pair.now)
    assert pair.client._state.name == "TERMINATED"


def test_a_live_peer_acknowledging_the_ping_restarts_the_timer(pki: DemoPki) -> None:
    pair = _pair(pki)
    before = pair.client._close_at
    pair.now += 2.0
    pair.client.send_keep_alive()
    for data, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    pair.now += 0.03
    for conn in (pair.server,):
        at = conn.get_timer()
        if at is not None and at <= pair.now:
            conn.handle_timer(pair.now)
    for data, _ in pair.server.datagrams_to_send(now=pair.now):
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    assert any(isinstance(e, PingAcknowledged) for e in Pair.events(pair.client))
    assert pair.client._close_at is not None and before is not None
    assert pair.client._close_at > before + 1.9
