"""Flow-control windows that tune themselves, on an in-memory pair with a simulated 50 ms RTT.

The client uploads to the server; the server's application consumes everything at once (a fast
consumer), so only flow control can hold the sender back. A window left unset must grow towards its
ceiling; a window set in the file must never be exceeded.
"""

from __future__ import annotations

import heapq
import itertools

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection, connection_stats, send_window
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair, flow_settings

ONE_WAY = 0.025
WINDOW = 64 * 1024
TOTAL = 4_000_000


class Link:
    """Both directions of a lossless link with a fixed one-way delay, on a simulated clock."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.now = pair.now
        self._queue: list[tuple[float, int, PatchedQuicConnection, bytes, tuple[str, int]]] = []
        self._seq = itertools.count()
        self.consumed = 0
        self._server_heard = False
        # The most the server ever let the client send on the connection, beyond what it consumed.
        self.max_credit_ahead = 0

    def _send(self, conn: PatchedQuicConnection) -> None:
        dst, src = (self.pair.server, CLIENT_ADDR) if conn is self.pair.client else (self.pair.client, SERVER_ADDR)
        for data, _ in conn.datagrams_to_send(now=self.now):
            heapq.heappush(self._queue, (self.now + ONE_WAY, next(self._seq), dst, data, src))

    def _consume(self) -> None:
        server = self.pair.server
        while (event := server.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                server.credit(event.stream_id, len(event.data))
                self.consumed += len(event.data)

    def run(self, until: float) -> None:
        client, server = self.pair.client, self.pair.server
        while self.now < until and self.consumed < TOTAL:
            self._send(client)
            if self._server_heard:  # a server has no path to send on before the first datagram
                self._send(server)
            self._consume()
            credit_ahead = server._local_max_data.sent - self.consumed
            self.max_credit_ahead = max(self.max_credit_ahead, credit_ahead)
            deadlines = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            if self._queue:
                deadlines.append(self._queue[0][0])
            if not deadlines:
                break
            # A deadline already due moves the clock on by a microsecond: aioquic paces even an ACK
            # due exactly now (ack_at >= now), which would otherwise be retried at the same instant.
            self.now = max(self.now, min(*deadlines, until)) if min(deadlines) > self.now else self.now + 1e-6
            while self._queue and self._queue[0][0] <= self.now:
                _, _, dst, data, src = heapq.heappop(self._queue)
                dst.receive_datagram(data, src, now=self.now)
                self._server_heard = True
            for conn in (client, server):
                at = conn.get_timer()
                if at is not None and at <= self.now:
                    conn.handle_timer(now=self.now)


def _upload(pki: DemoPki, **server_flow: object) -> tuple[Link, PatchedQuicConnection]:
    sender_flow = flow_settings(congestion_algorithm="None", initial_window=8_000_000)
    pair = Pair(
        pki,
        client_leaf=pki.client,
        client_flow=sender_flow,
        server_flow=flow_settings(stream_receive_window=WINDOW, receive_window=WINDOW, **server_flow),  # type: ignore[arg-type]
    )
    link = Link(pair)
    link.run(until=link.now + 1.0)  # handshake
    assert pair.client.get_next_available_stream_id() == 0
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * TOTAL, end_stream=True)
    link.run(until=link.now + 30.0)
    return link, pair.server


def test_windows_grow_under_a_fast_consumer(pki: DemoPki) -> None:
    link, server = _upload(pki, receive_window_max=2_000_000, stream_receive_window_max=1_000_000)
    assert link.consumed == TOTAL
    windows = server.flow_windows
    assert windows["receive"] > WINDOW
    assert windows["stream_receive"] > WINDOW
    # Never beyond the ceilings.
    assert windows["receive"] <= 2_000_000
    assert windows["stream_receive"] <= 1_000_000
    assert link.max_credit_ahead <= 2_000_000
    stats = connection_stats(server)
    assert stats["window_receive"] == windows["receive"]


def test_explicit_windows_are_never_exceeded(pki: DemoPki) -> None:
    link, server = _upload(pki)
    assert link.consumed == TOTAL
    assert server.flow_windows == {"receive": WINDOW, "stream_receive": WINDOW}
    assert link.max_credit_ahead <= WINDOW
    # The sender spent time waiting for credit, and the receiver saw it.
    assert connection_stats(server)["flow_blocked_receive"] > 0


def test_tuned_windows_finish_sooner_than_fixed_ones(pki: DemoPki) -> None:
    fixed, _ = _upload(pki)
    tuned, _ = _upload(pki, receive_window_max=8_000_000, stream_receive_window_max=8_000_000)
    # Simulated time: deterministic, no wall clock involved.
    assert tuned.now < fixed.now


def test_send_window_follows_the_congestion_window_up_to_its_ceiling(pki: DemoPki) -> None:
    fixed = PatchedQuicConnection(configuration=Pair(pki, client_leaf=pki.client).client._configuration,
                                  flow=flow_settings(initial_window=100_000))
    assert send_window(fixed, 50_000) == 50_000
    auto = PatchedQuicConnection(configuration=fixed._configuration,
                                 flow=flow_settings(initial_window=100_000, send_window_max=150_000))
    assert send_window(auto, 50_000) == 150_000  # 2 x cwnd = 200000, capped
    auto_low = PatchedQuicConnection(configuration=fixed._configuration,
                                     flow=flow_settings(initial_window=10_000, send_window_max=150_000))
    assert send_window(auto_low, 50_000) == 50_000  # never below the start value


RATE = 250_000  # bytes/s (2 Mbit/s): the bottleneck of the rate-limited link below
BDP = int(RATE * 2 * ONE_WAY)  # 12500 bytes


class RateLink(Link):
    """The same link with a serialization bottleneck of RATE bytes/s from client to server."""

    def __init__(self, pair: Pair) -> None:
        super().__init__(pair)
        self._busy_until = self.now

    def _send(self, conn: PatchedQuicConnection) -> None:
        if conn is not self.pair.client:
            super()._send(conn)
            return
        for data, _ in conn.datagrams_to_send(now=self.now):
            self._busy_until = max(self.now, self._busy_until) + len(data) / RATE
            heapq.heappush(self._queue, (self._busy_until + ONE_WAY, next(self._seq), self.pair.server, data, CLIENT_ADDR))


def _network_limited_upload(pki: DemoPki, window: int) -> tuple[RateLink, PatchedQuicConnection]:
    # The sender's congestion window is the link's BDP (paced over a round trip): the network,
    # not the receive window, limits it whenever the window is comfortably above the BDP.
    pair = Pair(
        pki,
        client_leaf=pki.client,
        client_flow=flow_settings(congestion_algorithm="None", initial_window=BDP),
        server_flow=flow_settings(
            # a tuned window starts at 8 initial windows at least: small here, so it starts at `window`
            initial_window=1200,
            stream_receive_window=window,
            receive_window=window,
            receive_window_max=8_000_000,
            stream_receive_window_max=8_000_000,
        ),
    )
    link = RateLink(pair)
    link.run(until=link.now + 1.0)  # handshake
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * 1_000_000, end_stream=True)
    link.run(until=link.now + 30.0)
    return link, pair.server


def test_a_network_limited_sender_does_not_grow_the_windows(pki: DemoPki) -> None:
    # Start at 4 BDPs: half a window takes 2 RTT to arrive at the link's rate, so credit updates
    # never come less than 2 RTT apart and the tuning rule never doubles.
    window = 4 * BDP + 1200
    link, server = _network_limited_upload(pki, window)
    assert link.consumed == 1_000_000
    assert server.flow_windows == {"receive": window, "stream_receive": window}
    assert link.max_credit_ahead <= window


def test_a_network_limited_sender_grows_a_small_window_at_most_to_the_bound(pki: DemoPki) -> None:
    # Below 4 BDPs the window may limit the sender and doubles; once half of it takes 2 RTT (the
    # RTT seen, queueing included) to arrive it stops: the last doubling ends below 8x rate x RTT.
    window = 8 * 1024
    link, server = _network_limited_upload(pki, window)
    assert link.consumed == 1_000_000
    rtt = server._ptp_rtt()
    bound = max(window, 8 * RATE * rtt)
    windows = server.flow_windows
    assert windows["receive"] <= bound
    assert windows["stream_receive"] <= bound
