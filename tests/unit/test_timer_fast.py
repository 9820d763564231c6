"""PatchedQuicConnection.get_timer on an established connection (_ptp_established_timer).

The session asks for the timer after every transmit; on an established connection over one
validated path it is computed in one call instead of aioquic's chain. It must give the same
deadline, and leave the same loss detection time for handle_timer: the random runs of
test_stream_marks (writes, FINs, resets, lost datagrams, timers) are replayed with a connection that
computes both on every call and compares them.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic import connection as qc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from tests.support.quic_pair import Pair
from tests.unit.test_stream_marks import OPS, _play


class TimerChecked(PatchedQuicConnection):
    compared = 0

    def get_timer(self) -> float | None:
        self._ptp_timer_fast = False
        theirs = super().get_timer()
        their_loss_at = self._loss_at
        del self._ptp_timer_fast
        ours = super().get_timer()
        assert ours == theirs
        assert self._loss_at == their_loss_at
        TimerChecked.compared += 1
        return ours


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, drops=st.lists(st.booleans(), min_size=1, max_size=12))
def test_the_established_timer_is_aioquics(pki: DemoPki, ops: list[tuple[str, int, int]], drops: list[bool]) -> None:
    TimerChecked.compared = 0
    _play(pki, TimerChecked, ops, drops)
    assert TimerChecked.compared > 0


def test_an_established_connection_skips_aioquics_get_timer(pki: DemoPki) -> None:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"request", end_stream=True)
    pair.client.datagrams_to_send(now=pair.now)  # in flight: the probe timeout is armed
    calls = []
    original = qc.QuicConnection.get_timer

    def counting(self: Any) -> float | None:
        calls.append(self)
        return original(self)

    qc.QuicConnection.get_timer = counting  # type: ignore[method-assign]
    try:
        ours = pair.client.get_timer()
        assert calls == []
        pair.client._ptp_timer_fast = False
        assert pair.client.get_timer() == ours
        assert len(calls) == 1
    finally:
        qc.QuicConnection.get_timer = original  # type: ignore[method-assign]
