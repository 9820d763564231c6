"""Congestion controllers and pacers for aioquic 1.7.2, selected by ``[transport] congestion_algorithm``.

Strategy: aioquic only knows Reno and Cubic, starts them at 10 x max_datagram_size, and paces at
cwnd / srtt with a pacer the controller cannot steer. ptproxy needs the configured
``initial_window`` (ideally a BDP), a fixed-window "None" mode that is still paced, and BBR, whose
sending rate is decided by the controller rather than by the window. So every controller here:

* implements aioquic's public ``QuicCongestionControl`` interface (``bytes_in_flight`` bookkeeping
  included, as aioquic leaves it to the controller), and
* owns a :class:`Pacer` that the tunnel installs in place of aioquic's ``QuicLossRecovery._pacer``
  (``ptproxy/tunnel/aioquic/connection.py``); this module never touches ``QuicConnection`` internals.

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
    "PACING_GRANULARITY",
    "Controller",
    "Pacer",
    "PacerInterface",
    "window_pacer",
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

#: Cap on a window-paced burst, as aioquic's QuicPacketPacer does: a BDP-sized window must not
#: leave at line rate in one go.
_WINDOW_BURST_PACKETS = 16


class PacerInterface(Protocol):
    """What aioquic calls on ``QuicLossRecovery._pacer`` (duck-typed QuicPacketPacer)."""

    def next_send_time(self, now: float) -> float | None: ...
    def update_after_send(self, now: float) -> None: ...
    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None: ...


class Pacer:
    """Token bucket in bytes, refilled at ``rate`` bytes/s.

    A packet may leave when a full datagram's worth of tokens is available. The bucket holds at
    least two granularity periods' worth of tokens, and at least ``burst`` bytes (the window
    pacers' 16-packet allowance). When the pacer asked to be woken at a time and is woken later,
    the time past it (up to PACING_CATCH_UP) is still owed: the bucket may hold that much more, so
    a late timer does not throw away sending credit (which would pace below the target rate).

    By default ``update_rate`` paces a window per smoothed RTT (aioquic's behaviour); BBR's pacer
    overrides it because BBR sets its rate itself through :meth:`set_rate`.
    """

    def __init__(self, *, max_datagram_size: int, rate: float, burst: int = 0) -> None:
        self._mds = max_datagram_size
        self.rate = 0.0
        self.capacity = 0.0
        self.set_rate(rate, burst=burst)
        self.tokens = self.capacity  # an idle connection may start with one burst
        self._last = 0.0
        self._wake_at: float | None = None  # the wake-up asked for, while the sender waits on us

    def set_rate(self, rate: float, *, burst: int = 0) -> None:
        """Pace at ``rate`` bytes/s from now on, allowing bursts of ``burst`` bytes."""
        # A floor of one datagram per second keeps a zero estimate from stalling the sender.
        self.rate = max(float(rate), float(self._mds))
        self.capacity = max(2.0 * self._mds, float(burst), 2.0 * self.rate * PACING_GRANULARITY)
        if getattr(self, "tokens", 0.0) > self.capacity:
            self.tokens = self.capacity

    def next_send_time(self, now: float) -> float | None:
        """``None`` if a packet may be sent at ``now``, else when to try again."""
        self._refill(now)
        # The epsilon absorbs float rounding of the refill at exactly the time we asked for;
        # without it that wake-up would find 1199.9999 bytes and cost another timer tick.
        if self.tokens >= self._mds - 1e-6:
            self._wake_at = None
            return None
        self._wake_at = now + max(PACING_GRANULARITY, (self._mds - self.tokens) / self.rate)
        return self._wake_at

    def update_after_send(self, now: float) -> None:
        """Charge one datagram; aioquic calls this after building each 1-RTT packet."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - self._mds)

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        """aioquic's hook after RTT samples and congestion events: pace cwnd per srtt."""
        if smoothed_rtt > 0:
            self.set_rate(
                congestion_window / smoothed_rtt, burst=_window_burst(congestion_window, self._mds)
            )

    def _refill(self, now: float) -> None:
        if now > self._last:
            capacity = self.capacity
            wake_at = self._wake_at
            if wake_at is not None and now > wake_at:
                # Woken late while waiting to send: the time past the wake-up is still owed.
                capacity += min(now - wake_at, PACING_CATCH_UP) * self.rate
            self.tokens = min(capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now


def _window_burst(window: int, max_datagram_size: int) -> int:
    """aioquic's burst allowance for a window pacer: a quarter window, 2..16 packets."""
    return max(2 * max_datagram_size, min(window // 4, _WINDOW_BURST_PACKETS * max_datagram_size))


def window_pacer(window: int, max_datagram_size: int) -> Pacer:
    # Until aioquic hands us a smoothed RTT (after the handshake's first sample) assume QUIC's
    # default, so even the first flight of a BDP-sized window is spread over about one RTT.
    return Pacer(
        max_datagram_size=max_datagram_size,
        rate=window / DEFAULT_INITIAL_RTT,
        burst=_window_burst(window, max_datagram_size),
    )


class Controller(QuicCongestionControl):
    """The contract ``PatchedQuicConnection`` installs: aioquic's CC interface plus a pacer and hooks."""

    pacer: Pacer

    def on_app_limited(self, *, now: float) -> None:
        """The sender ran out of data while the window allowed more; only BBR cares."""

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.setdefault("ssthresh", self.ssthresh)
        return data
