"""The aioquic overrides, exercised on in-memory connection pairs (no sockets).

If aioquic moves an internal we rely on, these fail by name instead of a guarantee (mTLS, flow
control, stream limits, DATA frame boundaries) silently disappearing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aioquic import tls
from aioquic.h3.connection import FrameUnexpected
from aioquic.h3.events import HeadersReceived
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived

from ptproxy.ops.devcerts import DemoPki, make_ca
from ptproxy.tunnel.aioquic import (
    DataFrame,
    PatchedH3Connection,
    handshake_confirmed,
    peer_max_streams_bidi,
    pending_close,
)
from tests.support.quic_pair import Pair, flow_settings


def test_mutual_tls_accepts_the_right_client(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    assert handshake_confirmed(pair.client)
    assert any(isinstance(e, HandshakeCompleted) for e in Pair.events(pair.server))
    assert pair.server.tls._peer_certificate is not None


def _refusal(pair: Pair) -> ConnectionTerminated:
    pair.roundtrip()
    assert not handshake_confirmed(pair.client)
    closing = pending_close(pair.server)
    assert closing is not None, "server accepted a client it must refuse"
    return closing


def test_server_refuses_a_client_without_certificate(pki: DemoPki) -> None:
    closing = _refusal(Pair(pki, client_leaf=None))
    assert closing.error_code == 0x100 + tls.AlertDescription.certificate_required


def test_server_refuses_a_client_from_another_ca(pki: DemoPki, tmp_path: Path) -> None:
    other = make_ca(tmp_path, "other CA").issue(pki.client_name, tmp_path, stem="intruder")
    closing = _refusal(Pair(pki, client_leaf=other))
    assert closing.error_code == 0x100 + tls.AlertDescription.bad_certificate


def test_server_refuses_a_client_certificate_for_another_name(pki: DemoPki, tmp_path: Path) -> None:
    # A CA both ends trust, issuing the client a certificate for a name the server does not expect.
    ca = make_ca(tmp_path, "name test CA")
    leaf = ca.issue("someone-else.ptproxy.test", tmp_path, stem="wrongname")
    server_pki = DemoPki(ca=ca.cert_path, client=leaf, server=ca.issue(pki.server_name, tmp_path, stem="srv"),
                         client_name=pki.client_name, server_name=pki.server_name)
    closing = _refusal(Pair(server_pki, client_leaf=leaf))
    assert closing.error_code == 0x100 + tls.AlertDescription.bad_certificate
    assert "someone-else" in closing.reason_phrase or "doesn't match" in closing.reason_phrase


def test_server_refuses_an_expired_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "expiry CA")
    pki = DemoPki(
        ca=ca.cert_path,
        client=ca.issue("client.ptproxy.test", tmp_path, stem="old", expired=True),
        server=ca.issue("server.ptproxy.test", tmp_path, stem="srv"),
        client_name="client.ptproxy.test",
        server_name="server.ptproxy.test",
    )
    closing = _refusal(Pair(pki, client_leaf=pki.client))
    assert closing.error_code == 0x100 + tls.AlertDescription.certificate_expired


def test_resumption_and_0rtt_work_with_client_auth_on(pki: DemoPki) -> None:
    tickets: dict[bytes, tls.SessionTicket] = {}
    first = Pair(pki, client_leaf=pki.client, tickets=tickets)
    first.roundtrip()
    assert first.client_tickets, "server issued no ticket"
    second = Pair(pki, client_leaf=pki.client, tickets=tickets, ticket=first.client_tickets[-1])
    second.roundtrip()
    assert handshake_confirmed(second.client)
    done = [e for e in Pair.events(second.client) if isinstance(e, HandshakeCompleted)]
    assert done and done[0].session_resumed
    # Single use: the ticket was consumed by the resumption.
    assert first.client_tickets[-1].ticket not in tickets


def test_max_concurrent_streams_reaches_the_peer(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client, server_flow=flow_settings(max_concurrent_streams=7))
    pair.roundtrip()
    assert peer_max_streams_bidi(pair.client) == 7


def test_receive_credit_follows_consumption_not_arrival(pki: DemoPki) -> None:
    window = 100_000
    pair = Pair(pki, client_leaf=pki.client, server_flow=flow_settings(stream_receive_window=window, receive_window=10 * window))
    pair.roundtrip()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * (5 * window))
    pair.roundtrip(200)
    received = sum(len(e.data) for e in Pair.events(pair.server) if isinstance(e, StreamDataReceived))
    # Nothing consumed: the sender is stuck at one window (aioquic alone would have doubled it).
    assert received == window
    pair.server.credit(sid, window)
    pair.roundtrip(200)
    received += sum(len(e.data) for e in Pair.events(pair.server) if isinstance(e, StreamDataReceived))
    assert received == 2 * window


def _h3_pair(pki: DemoPki) -> tuple[Pair, PatchedH3Connection, PatchedH3Connection, int]:
    """A connected pair with an HTTP/3 layer on each end (client, server) and the client's next
    request stream id."""
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    return pair, PatchedH3Connection(pair.client), PatchedH3Connection(pair.server), pair.client.get_next_available_stream_id()


def test_data_frame_sizes_are_reported_at_frame_start(pki: DemoPki) -> None:
    pair, h3c, h3s, sid = _h3_pair(pki)
    h3c.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")])
    sizes = [3, 20_000, 1, 70_000]
    for size in sizes:
        h3c.send_data(sid, b"y" * size, end_stream=False)
    h3c.send_data(sid, b"", end_stream=True)
    seen: list[int] = []
    current = 0
    for _ in range(100):
        pair.roundtrip(1)
        for ev in Pair.events(pair.server):
            for h3ev in h3s.handle_event(ev):  # type: ignore[arg-type]
                if isinstance(h3ev, DataFrame) and h3ev.data or isinstance(h3ev, DataFrame) and h3ev.frame_size:
                    if h3ev.frame_size is not None:
                        current = h3ev.frame_size
                    if h3ev.frame_end and current:
                        seen.append(current)
                        current = 0
                        pair.server.credit(sid, 0)
            # consume everything so flow control never stalls the test
            pair.server.credit(sid, 1 << 20)
    assert seen[: len(sizes)] == sizes


def test_content_length_mismatch_does_not_close_the_connection(pki: DemoPki) -> None:
    pair, h3c, h3s, sid = _h3_pair(pki)
    h3c.send_headers(
        sid,
        [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"), (b"content-length", b"10")],
    )
    h3c.send_data(sid, b"short", end_stream=True)
    pair.roundtrip()
    for ev in Pair.events(pair.server):
        h3s.handle_event(ev)  # type: ignore[arg-type]
    assert pending_close(pair.server) is None


def test_finish_stream_ends_the_stream_without_a_data_frame(pki: DemoPki) -> None:
    pair, h3c, h3s, sid = _h3_pair(pki)
    h3c.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")])
    h3c.finish_stream(sid)
    pair.roundtrip()
    seen = [h3ev for ev in Pair.events(pair.server) for h3ev in h3s.handle_event(ev)]  # type: ignore[arg-type]
    assert isinstance(seen[0], HeadersReceived)
    # The FIN arrives alone or with the HEADERS frame; either way no DATA frame precedes it.
    assert seen[-1].stream_ended  # type: ignore[attr-defined]
    assert not [e for e in seen if isinstance(e, DataFrame) and (e.data or e.frame_size is not None)]
    # Our half is over as far as aioquic's H3 layer is concerned: it refuses to end it twice.
    with pytest.raises(FrameUnexpected):
        h3c.send_data(sid, b"", end_stream=True)
