"""PatchedQuicConnection.next_event joins consecutive StreamDataReceived of one stream: the packets
of one read reach HTTP/3 as one piece, with the same bytes in the same order, up to the FIN."""

from __future__ import annotations

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from tests.support.quic_pair import CLIENT_ADDR, Pair

BODY = bytes(range(256)) * 40  # 10 KiB: several packets


def _ready(pki: DemoPki) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    pair.events(pair.client)
    pair.events(pair.server)
    return pair


def _deliver(pair: Pair) -> int:
    """Every datagram the client has queued, to the server in one go (one read); their count."""
    datagrams = pair.client.datagrams_to_send(now=pair.now)
    for data, _ in datagrams:
        pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    return len(datagrams)


def test_one_streams_packets_of_one_read_arrive_as_one_event(pki: DemoPki) -> None:
    pair = _ready(pki)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, BODY, end_stream=True)
    assert _deliver(pair) > 2
    events = [e for e in pair.events(pair.server) if isinstance(e, StreamDataReceived)]
    assert len(events) == 1
    assert events[0].stream_id == sid and events[0].data == BODY and events[0].end_stream


def test_streams_interleaved_in_a_read_stay_apart_and_in_order(pki: DemoPki) -> None:
    pair = _ready(pki)
    first = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(first, BODY[:5000])
    second = first + 4
    pair.client.send_stream_data(second, BODY[:3000], end_stream=True)
    pair.client.send_stream_data(first, BODY[5000:], end_stream=True)
    _deliver(pair)
    got: dict[int, bytes] = {first: b"", second: b""}
    ended = set()
    for event in pair.events(pair.server):
        if isinstance(event, StreamDataReceived):
            assert event.stream_id not in ended  # nothing after a FIN
            got[event.stream_id] += event.data
            if event.end_stream:
                ended.add(event.stream_id)
    assert got == {first: BODY, second: BODY[:3000]}
    assert ended == {first, second}
