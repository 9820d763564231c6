"""redundancy = "Tail" on an in-memory pair with a simulated clock: the tail of a small burst is
sent a second time shortly after it, the receiver delivers the data once, concurrent bursts are
each copied, bulk data never is, the copies stay within their cap, and nothing of the sort happens
by default. No wall-clock timing: every deadline is read off the simulated clock."""

from __future__ import annotations

import dataclasses
import random

from aioquic import tls
from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.config import Transport
from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import FlowSettings, PatchedQuicConnection, connection_stats
from ptproxy.tunnel.aioquic.redundancy import MAX_FLIGHT, MIN_DELAY, SHORT, TailRedundancy
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair, flow_settings


def _pair(pki: DemoPki, redundancy: str = "Tail", max_share: float = 1.0) -> Pair:
    flow = dataclasses.replace(flow_settings(), redundancy=redundancy, redundancy_max_share=max_share)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    pair.roundtrip()
    for conn in (pair.client, pair.server):
        if conn._ptp_tail is not None:
            conn._ptp_tail._rng = random.Random(7)  # deterministic jitter
    return pair


def _tail(conn: PatchedQuicConnection) -> TailRedundancy:
    tail = conn._ptp_tail
    assert tail is not None
    return tail


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


def _fire(pair: Pair, conn: PatchedQuicConnection | None = None) -> list[bytes]:
    """Advance the clock to the client's (or ``conn``'s) timer, fire it, and return what it sends then."""
    conn = conn or pair.client
    at = conn.get_timer()
    assert at is not None
    pair.now = max(pair.now, at)
    conn.handle_timer(now=pair.now)
    return [data for data, _ in conn.datagrams_to_send(now=pair.now)]


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


def test_the_default_cap_never_binds() -> None:
    assert Transport().redundancy_max_share == 1.0
    assert FlowSettings(1, 1, 1, "NewReno", 1).redundancy_max_share == 1.0
    assert TailRedundancy().max_share == 1.0


def test_concurrent_small_bursts_are_each_copied(pki: DemoPki) -> None:
    """Requests sent one after another while the earlier ones are still unacknowledged: far more
    than MAX_FLIGHT packets in flight, yet each request is a burst of its own and is copied."""
    pair = _pair(pki)
    n = 3 * MAX_FLIGHT
    sids, first = [], []
    for _ in range(n):
        sid, datagrams = _request(pair)
        assert len(datagrams) == 1
        sids.append(sid)
        first += datagrams
    space = pair.client._spaces[tls.Epoch.ONE_RTT]
    assert space.ack_eliciting_in_flight >= n > MAX_FLIGHT
    tail = _tail(pair.client)
    assert tail.deadline is not None and pair.client.get_timer() == tail.deadline
    pair.now = max(pair.now, max(deadline for deadline, _ in tail._pending))
    pair.client.handle_timer(now=pair.now)
    again = [data for data, _ in pair.client.datagrams_to_send(now=pair.now)]
    assert tail.copied_bursts == n
    assert again and sum(map(len, again)) >= tail.redundant_bytes * 0.9
    assert tail.deadline is None  # the copies are not copied again
    for data in first + again:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    got = {sid: b"" for sid in sids}
    while (event := pair.server.next_event()) is not None:
        if isinstance(event, StreamDataReceived):
            got[event.stream_id] += event.data
    assert got == {sid: b"q" * 300 for sid in sids}  # each once, duplicates discarded
    pair.roundtrip()
    assert pair.client._ptp_lost_packets == 0
    assert tail.copied_bursts == n


def test_a_copy_mixed_with_new_data_is_not_counted_a_copy(pki: DemoPki) -> None:
    """New data leaving in the same transmit as the copies starts a burst of its own, copied too."""
    pair = _pair(pki)
    _request(pair)
    tail = _tail(pair.client)
    at = tail.deadline
    assert at is not None
    pair.now = at
    pair.client.handle_timer(now=pair.now)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"n" * 300, end_stream=True)
    pair.client.datagrams_to_send(now=pair.now)
    assert tail.copied_bursts == 1
    assert len(tail._pending) == 1 and tail.deadline is not None
    _fire(pair)
    assert tail.copied_bursts == 2


def test_the_server_copies_its_response(pki: DemoPki) -> None:
    """A response is a small burst of the server's: its copy goes out a few ms after it."""
    pair = _pair(pki)
    sid, request = _request(pair)
    for data in request:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    assert _received(pair.server, sid) == b"q" * 300
    start = pair.now
    pair.server.send_stream_data(sid, b"r" * 800, end_stream=True)
    response = [data for data, _ in pair.server.datagrams_to_send(now=pair.now)]
    assert len(response) == 1
    tail = _tail(pair.server)
    at = pair.server.get_timer()
    assert at is not None and at == tail.deadline and start + MIN_DELAY <= at <= start + 0.02
    again = _fire(pair, pair.server)
    assert len(again) == 1 and tail.redundant_bytes > 0
    for data in response + again:
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    got = b""
    while (event := pair.client.next_event()) is not None:
        if isinstance(event, StreamDataReceived) and event.stream_id == sid:
            got += event.data
    assert got == b"r" * 800
    assert connection_stats(pair.server)["redundant_bytes"] == tail.redundant_bytes


def test_a_big_burst_is_never_copied(pki: DemoPki) -> None:
    """Stream data in more than MAX_FLIGHT packets at once (well under SHORT): no copy, ever."""
    pair = _pair(pki)
    sid = pair.client.get_next_available_stream_id()
    size = (MAX_FLIGHT + 4) * 1200
    assert size < SHORT
    pair.client.send_stream_data(sid, b"b" * size, end_stream=True)
    sent = pair.client.datagrams_to_send(now=pair.now)
    assert len(sent) > MAX_FLIGHT
    tail = _tail(pair.client)
    assert tail.deadline is None and not tail._pending
    for data, _ in sent:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    pair.roundtrip()
    assert _received(pair.server, sid) == b"b" * size
    assert tail.redundant_bytes == 0


def test_bulk_transfer_is_never_copied(pki: DemoPki) -> None:
    """A transfer held back by the congestion window: one long burst, no copies."""
    pair = _pair(pki)
    sid = pair.client.get_next_available_stream_id()
    size = 400_000
    pair.client.send_stream_data(sid, b"B" * size, end_stream=True)
    pair.roundtrip(rounds=2000)
    assert _received(pair.server, sid) == b"B" * size
    assert _tail(pair.client).redundant_bytes == 0


def test_a_trickling_stream_is_copied_only_at_its_start(pki: DemoPki) -> None:
    """A stream written in small pieces is one small burst per piece; past its first SHORT bytes
    none is copied (a slow origin's long response is bulk, not a short exchange)."""
    pair = _pair(pki)
    tail = _tail(pair.client)
    sid = pair.client.get_next_available_stream_id()
    piece = 1000
    copied_at_short = 0
    for i in range(3 * SHORT // piece):
        pair.client.send_stream_data(sid, b"t" * piece)
        first = [data for data, _ in pair.client.datagrams_to_send(now=pair.now)]
        again = _fire(pair) if pair.client.get_timer() == tail.deadline and tail.deadline is not None else []
        for data in first + again:
            pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
        pair.roundtrip()
        if i * piece < SHORT:
            assert again, i  # starts within the stream's first SHORT bytes: copied
            copied_at_short = tail.redundant_bytes
        else:
            assert not again, i
    assert 0 < copied_at_short == tail.redundant_bytes
    assert _received(pair.server, sid) == b"t" * (3 * SHORT // piece * piece)


class _PacerSpentAfterEachPacket:
    """The connection's pacer, except that it holds back whatever comes after each packet sent."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.spent = False

    def next_send_time(self, now: float) -> float | None:
        return now + 0.5 if self.spent else self.inner.next_send_time(now=now)  # type: ignore[attr-defined]

    def update_after_send(self, now: float) -> None:
        self.spent = True
        self.inner.update_after_send(now=now)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_spent_pacer_with_nothing_to_send_ends_the_burst(pki: DemoPki) -> None:
    """aioquic asks the pacer before each packet, even when nothing is left: a pacer with no
    budget left after the request must not make the request look like the start of a longer burst."""
    pair = _pair(pki)
    pacer = _PacerSpentAfterEachPacket(pair.client._loss._pacer)
    pair.client._loss._pacer = pacer  # type: ignore[assignment]
    _sid, first = _request(pair)
    assert len(first) == 1 and pacer.spent
    assert pair.client._pacing_at is not None  # the pacer held back... nothing
    tail = _tail(pair.client)
    assert tail.deadline is not None
    pacer.spent = False
    assert _fire(pair) and tail.copied_bursts == 1


def test_control_and_qpack_stream_data_alone_is_not_copied(pki: DemoPki) -> None:
    """A burst carrying only unidirectional stream data (HTTP/3 control, QPACK) has no copy."""
    pair = _pair(pki)
    sid = pair.client.get_next_available_stream_id(is_unidirectional=True)
    pair.client.send_stream_data(sid, b"u" * 50)
    assert len(pair.client.datagrams_to_send(now=pair.now)) == 1
    tail = _tail(pair.client)
    assert tail.deadline is None and not tail._pending
