"""A handshake sent again late in an attempt waits for its answer (blackout end, linkbench).

In-memory connections, simulated clock. The client's resuming attempt runs through a blackout:
every Initial is lost and, with nothing received, aioquic's idle deadline stays where the first
Initial put it. A request arriving as the blackout ends sends the handshake again just before
that deadline; it reaches the server end, which uses up the (single-use) session ticket and
answers. The attempt must still be open when the answer arrives one round trip later: given up,
its ticket was offered again by the next attempt and refused (a full handshake, no 0-RTT).
"""

from __future__ import annotations

from aioquic import tls
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair

IDLE = 5.0  # s, linkbench's max_idle_timeout (the Pair's default is aioquic's 60 s)
RTT = 0.05


def _resuming_attempt(pki: DemoPki) -> tuple[Pair, dict[bytes, tls.SessionTicket], int]:
    """A resuming client whose first flight (Initial + a 0-RTT request) is lost."""
    store: dict[bytes, tls.SessionTicket] = {}
    first = Pair(pki, client_leaf=pki.client, tickets=store)
    first.roundtrip()
    pair = Pair(pki, client_leaf=pki.client, ticket=first.client_tickets[-1], tickets=store)
    for conn in (pair.client, pair.server):
        conn._configuration.idle_timeout = IDLE
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"GET /after-blackout", end_stream=True)
    assert pair.client.datagrams_to_send(now=pair.now), "the client sent nothing"  # lost
    return pair, store, sid


def _tick_lost(pair: Pair, until: float) -> None:
    """The client's timers up to ``until`` (probe timeouts), everything it sends lost."""
    while True:
        at = pair.client.get_timer()
        if at is None or at > until:
            break
        pair.now = at
        pair.client.handle_timer(pair.now)
        pair.client.datagrams_to_send(now=pair.now)
    pair.now = until


def test_a_resend_just_before_the_deadline_still_gets_its_answer(pki: DemoPki) -> None:
    pair, store, sid = _resuming_attempt(pki)
    deadline = pair.client._close_at
    assert deadline is not None
    _tick_lost(pair, deadline - 0.01)  # the blackout ends 10 ms before the attempt would give up
    assert pair.client.resend_handshake(pair.now)
    for data, _ in pair.client.datagrams_to_send(now=pair.now):
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert not store, "the server end did not use the ticket"
    answer = pair.server.datagrams_to_send(now=pair.now)
    # One round trip later, past the first deadline: the client's timers ran meanwhile.
    _tick_lost(pair, pair.now + RTT)
    assert pair.client._state is not QuicConnectionState.TERMINATED, "the attempt gave up before the answer"
    for data, _ in answer:
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.roundtrip()
    assert pair.client.tls.session_resumed
    assert pair.server.tls.early_data_accepted
    got = [e for e in Pair.events(pair.server) if isinstance(e, StreamDataReceived) and e.stream_id == sid]
    assert b"".join(e.data for e in got) == b"GET /after-blackout"


def test_resends_keep_a_silent_attempt_at_most_one_probe_timeout_longer(pki: DemoPki) -> None:
    pair, _, _ = _resuming_attempt(pki)
    deadline = pair.client._close_at
    assert deadline is not None
    grace = pair.client.handshake_grace
    assert 0 < grace < IDLE
    # Requests keep hurrying the handshake every 100 ms; the server end never answers.
    while pair.client._state is not QuicConnectionState.TERMINATED and pair.now < deadline + 10:
        _tick_lost(pair, pair.now + 0.1)
        if pair.client.resend_handshake(pair.now):
            pair.client.datagrams_to_send(now=pair.now)
    assert pair.client._state is QuicConnectionState.TERMINATED
    assert pair.now <= deadline + grace + 0.1 + 1e-6


def test_an_early_resend_leaves_the_deadline_alone(pki: DemoPki) -> None:
    pair, _, _ = _resuming_attempt(pki)
    deadline = pair.client._close_at
    pair.now += 0.02  # an ICMP port unreachable, right after the first Initial
    assert pair.client.resend_handshake(pair.now)
    assert pair.client._close_at == deadline
