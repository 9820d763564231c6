"""QPACK decoder instructions ride with the next packet instead of making one of their own.

In-memory connections with the HTTP/3 layer on both sides (no sockets, simulated clock). A header
block that uses the dynamic table needs a Section Acknowledgment on the decoder stream; aioquic
writes it at once, so the server end sent a packet of its own for it before each response.
"""

from __future__ import annotations

from aioquic.h3.events import HeadersReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedH3Connection
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair

REQUEST = [
    (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.example.internal"),
    (b":path", b"/items"), (b"user-agent", b"curl-like/8.5"), (b"x-request-class", b"interactive"),
]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/json"), (b"x-served-by", b"origin-1")]


class H3Pair:
    def __init__(self, pki: DemoPki) -> None:
        self.quic = Pair(pki, client_leaf=pki.client)
        self.quic.roundtrip()
        self.client = PatchedH3Connection(self.quic.client)
        self.server = PatchedH3Connection(self.quic.server)
        self.settle()

    def _deliver(self, datagrams: list[tuple[bytes, object]], to_server: bool) -> list[object]:
        conn, h3 = (self.quic.server, self.server) if to_server else (self.quic.client, self.client)
        events: list[object] = []
        for data, _ in datagrams:
            conn.receive_datagram(data, CLIENT_ADDR if to_server else SERVER_ADDR, now=self.quic.now)
            while (ev := conn.next_event()) is not None:
                events.extend(h3.handle_event(ev))
        return events

    def to_server(self) -> list[object]:
        return self._deliver(self.quic.client.datagrams_to_send(now=self.quic.now), True)

    def to_client(self) -> list[object]:
        return self._deliver(self.quic.server.datagrams_to_send(now=self.quic.now), False)

    def settle(self) -> None:
        """Move everything both ways, timers included, until nothing is left."""
        for _ in range(20):
            self.quic.now += 0.03
            for conn in (self.quic.client, self.quic.server):
                at = conn.get_timer()
                if at is not None and at <= self.quic.now:
                    conn.handle_timer(self.quic.now)
            if not self.to_server() and not self.to_client():
                break

    def exchange(self) -> int:
        """One request and its response; the request's stream id."""
        sid = self.quic.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQUEST, end_stream=True)
        assert any(isinstance(e, HeadersReceived) for e in self.to_server())
        return sid


def _warm(pki: DemoPki) -> H3Pair:
    """A pair whose QPACK dynamic tables hold the request's and the response's fields."""
    pair = H3Pair(pki)
    for _ in range(2):  # the first header block inserts the fields, the next ones refer to them
        sid = pair.exchange()
        pair.server.send_headers(sid, RESPONSE, end_stream=True)
        pair.settle()
    assert pair.server._decoder_bytes_sent > 0, "the dynamic table was not used"
    return pair


def test_the_section_acknowledgment_rides_with_the_response(pki: DemoPki) -> None:
    pair = _warm(pki)
    sent_before = pair.server._decoder_bytes_sent
    sid = pair.exchange()
    assert pair.server._decoder_bytes_sent > sent_before  # this header block needs an acknowledgment
    # Before the response: nothing is due (the ACK waits its delay), so no packet goes out.
    assert pair.quic.server.datagrams_to_send(now=pair.quic.now) == []
    pair.server.send_headers(sid, RESPONSE, end_stream=True)
    datagrams = pair.quic.server.datagrams_to_send(now=pair.quic.now)
    assert len(datagrams) == 1  # the response, the ACK and the decoder instruction together
    events = pair._deliver(datagrams, to_server=False)
    assert any(isinstance(e, HeadersReceived) and e.headers == RESPONSE for e in events)
    assert not pair.server._ptp_held_decoder


def test_with_nothing_else_to_send_it_goes_out_with_the_delayed_ack(pki: DemoPki) -> None:
    pair = _warm(pki)
    pair.exchange()
    assert pair.quic.server.datagrams_to_send(now=pair.quic.now) == []
    assert pair.server._ptp_held_decoder
    at = pair.quic.server.get_timer()
    assert at is not None and at <= pair.quic.now + 0.025  # the ACK timer: within max_ack_delay
    pair.quic.now = at
    pair.quic.server.handle_timer(pair.quic.now)
    assert len(pair.quic.server.datagrams_to_send(now=pair.quic.now)) == 1
    assert not pair.server._ptp_held_decoder


def test_many_exchanges_keep_both_tables_in_step(pki: DemoPki) -> None:
    pair = _warm(pki)
    for i in range(30):
        sid = pair.exchange()
        response = [*RESPONSE, (b"x-count", str(i).encode())]
        pair.server.send_headers(sid, response, end_stream=True)
        events = pair.to_client()
        assert any(isinstance(e, HeadersReceived) and e.headers == response for e in events)
        if i % 7 == 0:
            pair.settle()  # sometimes the held instructions leave alone, after the ACK delay
    pair.settle()
    assert not pair.server._ptp_held_decoder and not pair.client._ptp_held_decoder
