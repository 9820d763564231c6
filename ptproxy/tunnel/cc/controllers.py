"""The window-based controllers (NewReno, Cubic, fixed window) and the factory for all of them."""

from __future__ import annotations

from collections.abc import Iterable

from aioquic.quic.congestion.cubic import CubicCongestionControl
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.packet_builder import QuicSentPacket

from ptproxy.tunnel.aioquic.congestion import restart_cubic
from ptproxy.tunnel.cc.base import ALGORITHMS, Controller
from ptproxy.tunnel.cc.ccpath import Bbr, window_pacer

__all__ = ["Cubic", "FixedWindow", "NewReno", "create_controller"]


class NewReno(Controller, RenoCongestionControl):
    """aioquic's NewReno, starting at ``initial_window`` instead of 10 datagrams."""

    def __init__(self, *, max_datagram_size: int, initial_window: int) -> None:
        RenoCongestionControl.__init__(self, max_datagram_size=max_datagram_size)
        self.congestion_window = initial_window
        self.pacer = window_pacer(initial_window, max_datagram_size)


class Cubic(Controller, CubicCongestionControl):
    """aioquic's Cubic; the start and the reset after 2 s without ACKs use ``initial_window``."""

    def __init__(self, *, max_datagram_size: int, initial_window: int) -> None:
        # aioquic's __init__ calls reset(), which reads this.
        self._initial_window = initial_window
        CubicCongestionControl.__init__(self, max_datagram_size=max_datagram_size)
        self.pacer = window_pacer(initial_window, max_datagram_size)

    def reset(self) -> None:
        super().reset()
        restart_cubic(self, self._initial_window)


class FixedWindow(Controller):
    """``"None"``: no congestion control. The window stays at ``initial_window`` whatever happens;
    packets are still paced at that window per smoothed RTT (bursts of at most 16 packets)."""

    def __init__(self, *, max_datagram_size: int, initial_window: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self.congestion_window = initial_window
        self.pacer = window_pacer(initial_window, max_datagram_size)

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        self.bytes_in_flight += packet.sent_bytes

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        self.bytes_in_flight -= packet.sent_bytes

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        self.bytes_in_flight -= sum(p.sent_bytes for p in packets)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        self.bytes_in_flight -= sum(p.sent_bytes for p in packets)

    def on_persistent_congestion(self) -> None:
        pass

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        pass


def create_controller(algorithm: str, *, max_datagram_size: int, initial_window: int) -> Controller:
    """Build a fresh controller (with its pacer) for one connection.

    ``algorithm`` is spelled as in the config: ``"Bbr"``, ``"Cubic"``, ``"NewReno"`` or
    ``"None"``; anything else raises ``ValueError``.
    """
    # RFC 9002 section 7.2: no window below two datagrams (smaller would only stall the start).
    initial_window = max(initial_window, 2 * max_datagram_size)
    factory: type[Controller]
    if algorithm == "Bbr":
        factory = Bbr
    elif algorithm == "Cubic":
        factory = Cubic
    elif algorithm == "NewReno":
        factory = NewReno
    elif algorithm == "None":
        factory = FixedWindow
    else:
        raise ValueError(
            f"unknown congestion algorithm {algorithm!r}; expected one of {ALGORITHMS}"
        )
    return factory(max_datagram_size=max_datagram_size, initial_window=initial_window)
