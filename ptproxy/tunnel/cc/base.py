"""Congestion controllers and pacers for aioquic 1.7.2, selected by ``[transport] congestion_algorithm``.

Strategy: aioquic only knows Reno and Cubic, starts them at 10 x max_datagram_size, and paces at
cwnd / srtt with a pacer the controller cannot steer. ptproxy needs the configured
``initial_window`` (ideally a BDP), a fixed-window "None" mode that is still paced, and BBR, whose
sending rate is decided by the controller rather than by the window. So every controller here:

* implements aioquic's public ``QuicCongestionControl`` interface (``bytes_in_flight`` bookkeeping
  included, as aioquic leaves it to the controller), and
* owns a ``Pacer`` (``ptproxy.tunnel.cc.ccpath``) that the tunnel installs in place of aioquic's
  ``QuicLossRecovery._pacer`` (``ptproxy/tunnel/aioquic/connection.py``); this package never
  touches ``QuicConnection`` internals.

The per-packet classes (``Pacer``, ``window_pacer``, BBR) are twins behind the facade
``ptproxy.tunnel.cc.ccpath``: pure Python in ``_ccpath_py``, compiled in ``ptproxy._speedups.ccpath``.
This module holds what both twins share: the constants and the ``Controller`` base class.

Call order inside aioquic's ``QuicPacketRecovery.on_ack_received`` (recovery.py): every newly
acked in-flight packet -> ``on_packet_acked``; then, if the largest acked packet was newly acked
and ack-eliciting, ``on_rtt_measurement`` followed by ``pacer.update_rate``; then loss detection ->
``on_packets_lost`` (+ ``on_persistent_congestion``) followed by ``pacer.update_rate``. PTO
retransmissions and discarded packet spaces only call ``on_packets_expired`` (no congestion
signal). ``pacer.next_send_time``/``update_after_send`` run per 1-RTT packet in
``_write_application``, before ``on_packet_sent`` sees the packets of that batch.
"""

from __future__ import annotations

from typing import Any, Protocol

from aioquic.quic.congestion.base import QuicCongestionControl

__all__ = [
    "ALGORITHMS",
    "DEFAULT_INITIAL_RTT",
    "PACING_CATCH_UP",
    "PACING_GRANULARITY",
    "Controller",
    "PacerInterface",
]

#: The ``congestion_algorithm`` spellings of the reference config.
ALGORITHMS = ("Bbr", "Cubic", "NewReno", "None")

#: RTT assumed before the first sample (QUIC's default, RFC 9002 section 6.2.2).
DEFAULT_INITIAL_RTT = 0.333

#: Shortest sleep the pacer asks for. asyncio timers fire >= 1 ms late (epoll has ms resolution,
#: uvloop's clock is cached per ms), so sub-ms pacing delays only cause early wake-ups or busy
#: loops; instead the pacer releases about one granularity's worth of bytes per wake-up.
PACING_GRANULARITY = 0.001

#: Sending time a pacer still owes after a late wake-up: when the timer it asked for fires (or
#: the event loop gets to it) up to this much later, the datagrams of the missed time may leave at
#: once. A loaded CPU runs timers several ms late; with only the bucket's 2 ms the pacer lost
#: that time for good, sent below its rate, and BBR, which measures what was delivered, lowered
#: its estimate to match (linkbench, 50 ms x 100 Mbit/s at 1 % loss, load average ~2 on 2 CPUs:
#: the sender was pacing-limited ~95 % of the time at 90-97 % of its pacing rate, and the
#: bandwidth estimate drifted from 90 to 48 Mbit/s within one 10 MiB download).
#: An idle sender owes nothing: after idle only the bucket's capacity leaves at once.
PACING_CATCH_UP = 0.010


class PacerInterface(Protocol):
    """What aioquic calls on ``QuicLossRecovery._pacer`` (duck-typed QuicPacketPacer)."""

    def next_send_time(self, now: float) -> float | None: ...
    def update_after_send(self, now: float) -> None: ...
    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None: ...
    def set_max_datagram_size(self, size: int) -> None: ...
    def refund(self, nbytes: float) -> None: ...


class Controller(QuicCongestionControl):
    """The contract ``PatchedQuicConnection`` installs: aioquic's CC interface plus a pacer and hooks."""

    # A Pacer of ptproxy.tunnel.cc.ccpath; typed by its interface, as that module imports this one.
    pacer: PacerInterface

    def on_app_limited(self, *, now: float) -> None:
        """The sender ran out of data while the window allowed more; only BBR cares."""

    def set_max_datagram_size(self, size: int) -> None:
        """Path MTU discovery changed the datagram size: window arithmetic and pacing follow.
        aioquic's Reno and Cubic keep it in ``_max_datagram_size``; BBR overrides this."""
        self._max_datagram_size = size
        self.pacer.set_max_datagram_size(size)

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.setdefault("ssthresh", self.ssthresh)
        return data
