"""Packets sent, by kind (ptproxy.tunnel.aioquic.packets_sent): each packet of a scripted exchange
lands in exactly one kind, and the kinds follow what the packets carry."""

from __future__ import annotations

from aioquic.quic.events import StreamDataReceived

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PACKET_KINDS, PatchedH3Connection, packets_sent
from tests.support.quic_pair import Pair


def test_every_packet_sent_is_counted_once_by_kind(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client)
    sent = {"client": 0, "server": 0}
    client_send, server_send = pair.client.datagrams_to_send, pair.server.datagrams_to_send

    def counting(side: str, send):  # type: ignore[no-untyped-def]
        def wrapped(now: float):  # type: ignore[no-untyped-def]
            datagrams = send(now=now)
            sent[side] += len(datagrams)  # one packet per datagram once the handshake is over
            return datagrams
        return wrapped

    pair.roundtrip()
    handshake = {side: sum(packets_sent(conn).values()) for side, conn in (("client", pair.client), ("server", pair.server))}
    assert packets_sent(pair.client)["handshake"] >= 1 and packets_sent(pair.server)["handshake"] >= 1
    pair.client.datagrams_to_send = counting("client", client_send)  # type: ignore[method-assign]
    pair.server.datagrams_to_send = counting("server", server_send)  # type: ignore[method-assign]
    before = {"client": packets_sent(pair.client), "server": packets_sent(pair.server)}
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * 5000, end_stream=True)
    pair.roundtrip()
    pair.events(pair.server)
    pair.server.send_stream_data(sid, b"y" * 100, end_stream=True)
    pair.roundtrip()
    assert any(isinstance(ev, StreamDataReceived) for ev in pair.events(pair.client))
    for side, conn in (("client", pair.client), ("server", pair.server)):
        after = packets_sent(conn)
        assert set(after) == set(PACKET_KINDS)
        delta = {kind: after[kind] - before[side][kind] for kind in PACKET_KINDS}
        assert sum(delta.values()) == sent[side], (side, delta)
        assert delta["data"] >= 1, (side, delta)
        assert delta["handshake"] == 0
    assert handshake["client"] >= 1


def test_qpack_stream_packets_are_their_own_kind(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    before = packets_sent(pair.client)
    PatchedH3Connection(pair.client)  # opens control, encoder and decoder streams
    pair.roundtrip()
    after = packets_sent(pair.client)
    # The three uni streams go out together: the control stream's SETTINGS makes it "control" or,
    # when the QPACK stream preambles fill a packet of their own, "qpack".
    assert after["control"] + after["qpack"] > before["control"] + before["qpack"]
    assert after["data"] == before["data"]
