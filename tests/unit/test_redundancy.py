"""redundancy = "Tail" on an in-memory pair with a simulated clock: the tail of a small flight is
sent a second time shortly after it, the receiver delivers the data once, the copies stay within
their cap, and nothing of the sort happens by default."""

from __future__ import annotations

import dataclasses
import random

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection, connection_stats
from ptproxy.tunnel.aioquic.redundancy import MIN_DELAY, TailRedundancy
from tests.support.quic_pair import CLIENT_ADDR, Pair, flow_settings


def _pair(pki: DemoPki, redundancy: str = "Tail", max_share: float = 1.0) -> Pair:
    flow = dataclasses.replace(flow_settings(), redundancy=redundancy, redundancy_max_share=max_share)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    pair.roundtrip()
    tail = pair.client._ptp_tail
    if tail is not None:
        tail._rng = random.Random(7)  # deterministic jitter
    return pair


def _request(pair: Pair, size: int = 300) -> tuple[int, list[bytes]]:
    """The client sends ``size`` bytes on a new stream; the datagrams that carried them."""
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"q" * size, end_stream=True)
    return sid, [data for data, _ in pair.client.datagrams_to_send(now=pair.now)]


def _received(server: PatchedQuicConnection, sid: int) -> bytes:
    out = b""
    while (event := server.next_event()) is not None:
        if isinstance(event, StreamDataReceived) and event.stream_id == sid:
            out += event.data
    return out


def _fire(pair: Pair) -> list[bytes]:
    """Advance the clock to the client's timer, fire it, and return what it sends then."""
    at = pair.client.get_timer()
    assert at is not None
    pair.now = max(pair.now, at)
    pair.client.handle_timer(now=pair.now)
    return [data for data, _ in pair.client.datagrams_to_send(now=pair.now)]


def test_the_tail_is_sent_twice_and_delivered_once(pki: DemoPki) -> None:
    pair = _pair(pki)
    start = pair.now
    sid, first = _request(pair)
    assert len(first) == 1
    # The timer is the tail's: a few ms after the send, long before the probe timeout.
    at = pair.client.get_timer()
    tail = pair.client._ptp_tail
    assert tail is not None and at == tail.deadline
    assert at is not None and start + MIN_DELAY <= at <= start + 0.02
    again = _fire(pair)
    assert len(again) == 1
    assert pair.client.redundant_bytes > 0
    assert connection_stats(pair.client)["redundant_bytes"] == pair.client.redundant_bytes
    # Both copies reach the server: the data is delivered once.
    for data in first + again:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert _received(pair.server, sid) == b"q" * 300
    pair.roundtrip()
    assert _received(pair.server, sid) == b""
    # A copy is not copied again, and no loss was counted.
    assert pair.client._ptp_lost_packets == 0


def test_a_lost_original_is_recovered_by_the_copy(pki: DemoPki) -> None:
    pair = _pair(pki)
    sid, _lost = _request(pair)
    sent_at = pair.now
    again = _fire(pair)
    for data in again:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert _received(pair.server, sid) == b"q" * 300
    assert pair.now - sent_at < 0.01  # not a probe timeout later


def test_copies_are_not_copied_again(pki: DemoPki) -> None:
    pair = _pair(pki)
    _request(pair)
    assert _fire(pair)
    copied = pair.client.redundant_bytes
    # The only packets in flight now are copies: no new tail timer of ours.
    tail = pair.client._ptp_tail
    assert tail is not None and tail.deadline is None
    assert pair.client.redundant_bytes == copied


def test_the_cap_holds(pki: DemoPki) -> None:
    pair = _pair(pki, max_share=0.1)
    tail = pair.client._ptp_tail
    assert isinstance(tail, TailRedundancy)
    sent = 0
    for _ in range(40):
        sid, first = _request(pair, size=200)
        sent += sum(len(d) for d in first)
        again = _fire(pair) if pair.client.get_timer() == tail.deadline else []
        sent += sum(len(d) for d in again)
        for data in first + again:
            pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
        pair.roundtrip()
    assert tail.redundant_bytes > 0
    assert tail.skipped > 0
    # Everything the client sent in this phase (plus the handshake before it) bounds the copies.
    assert tail.redundant_bytes <= 0.1 * (sent + tail.redundant_bytes) + 1500


def test_off_by_default(pki: DemoPki) -> None:
    pair = _pair(pki, redundancy="None")
    assert flow_settings().redundancy == "None"
    assert pair.client._ptp_tail is None
    sid, first = _request(pair)
    for data in first:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    pair.roundtrip()
    assert _received(pair.server, sid) == b"q" * 300
    assert pair.client.redundant_bytes == 0
    assert connection_stats(pair.client)["redundant_bytes"] == 0
