"""Loss counting (ptproxy.tunnel.aioquic.lost_packets): packets dropped on the wire are counted as lost."""

from __future__ import annotations

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import lost_packets
from tests.support.quic_pair import CLIENT_ADDR, SERVER_ADDR, Pair


def test_lost_packets_counts_dropped_datagrams(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    assert lost_packets(pair.client) == 0
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * 60_000)
    # Drop every third client datagram of the burst; acks of the rest reveal the gaps.
    sent = pair.client.datagrams_to_send(now=pair.now)
    assert len(sent) > 10
    for i, (data, _) in enumerate(sent):
        if i % 3 != 1:
            pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    pair.now += 0.01
    for data, _ in pair.server.datagrams_to_send(now=pair.now):
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.roundtrip(200)
    lost = lost_packets(pair.client)
    assert 1 <= lost <= len(sent)
    assert lost_packets(pair.server) == 0


def test_loss_handler_runs_only_when_something_was_lost(pki: DemoPki) -> None:
    # Loss detection runs on every ACK; the recovery's loss handler (PatchedQuicConnection's
    # wrapper around aioquic's) does nothing when no packet was lost, so it is not called then
    # (lossdetect.NOTHING_LOST_NOOP, the compiled ACK path alike), and is when one was.
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    calls: list[int] = []
    original = pair.client._ptp_lost_original

    def counting(**kwargs: object) -> None:
        calls.append(len(list(kwargs["packets"])))  # type: ignore[call-overload]
        original(**kwargs)

    pair.client._ptp_lost_original = counting
    sid = pair.client.get_next_available_stream_id()
    for _ in range(5):  # acknowledged exchanges, nothing lost
        pair.client.send_stream_data(sid, b"x" * 3000)
        pair.roundtrip()
    assert calls == []
    assert lost_packets(pair.client) == 0
    pair.client.send_stream_data(sid, b"x" * 30_000)
    sent = pair.client.datagrams_to_send(now=pair.now)
    for i, (data, _) in enumerate(sent):
        if i != 1:
            pair.server.receive_datagram(data, CLIENT_ADDR, now=pair.now)
    pair.now += 0.01
    for data, _ in pair.server.datagrams_to_send(now=pair.now):
        pair.client.receive_datagram(data, SERVER_ADDR, now=pair.now)
    pair.roundtrip(200)
    assert calls and all(count > 0 for count in calls)
    assert lost_packets(pair.client) >= 1
