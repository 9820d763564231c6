"""Loss detection's time threshold per connection (``tunnel/aioquic/lossdetect.py``, inlined in the
compiled ACK path): 1 x max(srtt, latest RTT) at first, aioquic's 9/8 for the rest of the connection
once a packet declared lost is acknowledged. In-memory pair over the simulated 50 ms link of
test_tail_probe (every datagram delivered by hand 25 ms after it was sent, or dropped, or late), so
every deadline is read off the simulated clock; runs in whichever twin is selected."""

from __future__ import annotations

from aioquic.quic import recovery
from aioquic.quic.configuration import QuicConfiguration

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.aioquic.connection import connection_stats
from ptproxy.tunnel.aioquic.lossdetect import (
    DECLARED_LOST_KEPT,
    START_TIME_THRESHOLD,
    AdaptiveRecovery,
)
from tests.support.quic_pair import Pair, flow_settings
from tests.unit.test_tail_probe import ONE_WAY, _deliver, _drain, _exchange, _send

GAP = 0.003  # between the packet that is lost (or late) and the next one


def _pair(pki: DemoPki) -> Pair:
    """An established pair whose RTT estimate is 50 ms, no redundancy."""
    pair = Pair(
        pki, client_leaf=pki.client, client_flow=flow_settings(), server_flow=flow_settings()
    )
    pair.roundtrip()
    for _ in range(20):
        _exchange(pair)
    assert 0.04 < pair.client._loss._rtt_smoothed < 0.06
    return pair


def _request(pair: Pair, body: bytes) -> list[bytes]:
    client = pair.client
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, body, end_stream=True)
    datagrams = _send(client, pair.now)
    assert len(datagrams) == 1
    return datagrams


def _lost_then_next(pair: Pair, late: bool = False) -> tuple[float, int]:
    """Request X (dropped, or held back when ``late``), request Y GAP later (delivered): the
    client receives Y's ACK one RTT after Y. Returns X's send time and the client's lost-packet
    count before the ACK; the ACK is processed, X (if late) not yet delivered."""
    client = pair.client
    sent_at = pair.now
    x = _request(pair, b"x" * 200)
    pair.now += GAP
    y = _request(pair, b"y" * 200)
    pair.now += ONE_WAY
    _deliver(pair, client, y)
    ack = _send(pair.server, pair.now)  # a gap in the packet numbers: acknowledged at once
    assert ack
    pair.now += ONE_WAY
    lost_before = client._ptp_lost_packets
    _deliver(pair, pair.server, ack)
    if late:
        pair.x_late = x  # type: ignore[attr-defined]
    return sent_at, lost_before


def test_a_connection_starts_below_nine_eighths() -> None:
    conn = PatchedQuicConnection(
        configuration=QuicConfiguration(is_client=True), flow=flow_settings()
    )
    loss = conn._loss
    assert type(loss) is AdaptiveRecovery
    assert loss._ptp_time_threshold == START_TIME_THRESHOLD < recovery.K_TIME_THRESHOLD == 9 / 8
    assert loss._ptp_declared_lost == [] and loss._ptp_spurious_losses == 0


def test_loss_declared_at_the_lower_threshold_then_nine_eighths_after_a_spurious_one(
    pki: DemoPki,
) -> None:
    pair = _pair(pki)
    client, loss = pair.client, pair.client._loss
    # X sent GAP before Y: when Y's ACK arrives X has been out one RTT + GAP, below 9/8 RTT.
    sent_at, lost_before = _lost_then_next(pair)
    rtt = max(loss._rtt_smoothed, loss._rtt_latest)
    assert rtt <= pair.now - sent_at < 9 / 8 * rtt
    assert client._ptp_lost_packets == lost_before + 1  # declared lost by that ACK, no timer
    assert loss._ptp_declared_lost and loss._ptp_time_threshold == START_TIME_THRESHOLD
    again = _send(client, pair.now)
    assert again
    pair.now += ONE_WAY
    _deliver(pair, client, again)
    assert b"x" * 200 in _drain(pair.server)
    for _ in range(3):
        _exchange(pair)
    assert loss._ptp_spurious_losses == 0 and loss._ptp_time_threshold == START_TIME_THRESHOLD

    # A reordering path: X arrives after Y, once the client has declared it lost.
    sent_at, lost_before = _lost_then_next(pair, late=True)
    assert client._ptp_lost_packets == lost_before + 1
    pair.now += 0.001
    _deliver(pair, client, pair.x_late)  # type: ignore[attr-defined]
    _drain(pair.server)
    ack = _send(pair.server, pair.now)
    assert ack
    pair.now += ONE_WAY
    _deliver(pair, pair.server, ack)
    assert loss._ptp_spurious_losses == 1
    assert connection_stats(client)["spurious_losses"] == 1  # /metrics
    assert loss._ptp_time_threshold == recovery.K_TIME_THRESHOLD  # 9/8 from now on
    for _ in range(3):
        _exchange(pair)

    # The same lone loss is now left to the loss timer, 9/8 RTT after X was sent.
    sent_at, lost_before = _lost_then_next(pair)
    rtt = max(loss._rtt_smoothed, loss._rtt_latest)
    assert pair.now - sent_at < 9 / 8 * rtt
    assert client._ptp_lost_packets == lost_before  # not yet
    at = client.get_timer()
    assert at is not None and abs(at - (sent_at + 9 / 8 * rtt)) < 1e-6
    pair.now = at
    client.handle_timer(now=pair.now)
    assert client._ptp_lost_packets == lost_before + 1
    assert loss._ptp_time_threshold == recovery.K_TIME_THRESHOLD


def test_the_record_of_declared_losses_is_bounded(pki: DemoPki) -> None:
    pair = _pair(pki)
    client, loss = pair.client, pair.client._loss
    for _ in range(DECLARED_LOST_KEPT + 8):
        _lost_then_next(pair)
        again = _send(client, pair.now)
        pair.now += ONE_WAY
        _deliver(pair, client, again)
        _drain(pair.server)
        _exchange(pair)
    assert len(loss._ptp_declared_lost) == DECLARED_LOST_KEPT
    assert loss._ptp_spurious_losses == 0 and loss._ptp_time_threshold == START_TIME_THRESHOLD
