"""Loss detection with a time threshold per connection (RFC 9002 §6.1.2 allows adaptive ones).

aioquic declares a packet lost once a later one is acknowledged and it was sent more than
``K_TIME_THRESHOLD`` (9/8) x max(srtt, latest RTT) ago. The 1/8 RTT of margin is there for a path
that reorders; between two ptproxy ends the path is usually first-in first-out, where a packet
below the largest acknowledged one that the same ACK does not cover was lost, and the margin only
delays its retransmission (~6 ms a loss on a 50 ms link). So a connection starts at
``START_TIME_THRESHOLD`` (1 x the RTT) and goes back to aioquic's 9/8 for the rest of its life at
the first sign of reordering: a packet of the application-data space declared lost (by either
threshold) and then acknowledged. The last ``DECLARED_LOST_KEPT`` packet numbers declared lost
are kept for that check.

:class:`AdaptiveRecovery` is aioquic's QuicPacketRecovery with ``on_ack_received`` (the check,
then aioquic's method) and ``_detect_loss`` (aioquic's, with the threshold of the connection and
the record) replaced; :func:`adopt` turns the recovery aioquic built into one. This is the pure
twin: ``ptproxy/_speedups/ackpath.pyx`` inlines the same for an exact AdaptiveRecovery.
"""

from __future__ import annotations

from aioquic.quic import recovery
from aioquic.quic.rangeset import RangeSet
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace

__all__ = ["DECLARED_LOST_KEPT", "NOTHING_LOST_NOOP", "START_TIME_THRESHOLD", "AdaptiveRecovery", "adopt"]

# The time threshold a connection starts with (x max(srtt, latest RTT)); aioquic's 9/8 once a
# spurious loss was seen.
START_TIME_THRESHOLD = 1.0
# Packet numbers declared lost remembered to recognise a spurious loss (the newest ones).
DECLARED_LOST_KEPT = 32
# The ``_on_packets_lost`` functions that do nothing when no packet is lost (aioquic's, and
# PatchedQuicConnection's wrapper, which adds itself): _detect_loss skips the call then, as the
# compiled twin does. Any other handler is called on every ACK, as in aioquic.
NOTHING_LOST_NOOP: list[object] = [QuicPacketRecovery._on_packets_lost]


class AdaptiveRecovery(QuicPacketRecovery):
    """aioquic's loss recovery with a time threshold of its own (see the module)."""

    # Set by adopt(): aioquic builds the recovery, the connection turns it into this class.
    _ptp_time_threshold: float
    _ptp_declared_lost: list[int]
    _ptp_spurious_losses: int

    def on_ack_received(
        self, *, ack_rangeset: RangeSet, ack_delay: float, now: float, space: QuicPacketSpace
    ) -> None:
        declared = self._ptp_declared_lost
        if declared and space.is_application_data:
            kept = [number for number in declared if not any(number in r for r in ack_rangeset)]
            if len(kept) < len(declared):
                # Acknowledged after it was declared lost: the path reorders (or delays an ACK).
                self._ptp_spurious_losses += len(declared) - len(kept)
                declared[:] = kept
                self._ptp_time_threshold = recovery.K_TIME_THRESHOLD
        super().on_ack_received(
            ack_rangeset=ack_rangeset, ack_delay=ack_delay, now=now, space=space
        )

    def _detect_loss(self, *, now: float, space: QuicPacketSpace) -> None:
        # aioquic's _detect_loss with the connection's time threshold, recording what it declares.
        loss_delay = self._ptp_time_threshold * (
            max(self._rtt_latest, self._rtt_smoothed)
            if self._rtt_initialized
            else self._rtt_initial
        )
        packet_threshold = space.largest_acked_packet - recovery.K_PACKET_THRESHOLD
        time_threshold = now - loss_delay

        lost_packets = []
        space.loss_time = None
        for packet_number, packet in space.sent_packets.items():
            if packet_number > space.largest_acked_packet:
                break
            # sent_time: float | None in aioquic's annotation, always set on a packet sent
            if packet_number <= packet_threshold or packet.sent_time <= time_threshold:  # type: ignore[operator]
                lost_packets.append(packet)
            else:
                packet_loss_time = packet.sent_time + loss_delay  # type: ignore[operator]
                if space.loss_time is None or space.loss_time > packet_loss_time:
                    space.loss_time = packet_loss_time

        if lost_packets and space.is_application_data:
            declared = self._ptp_declared_lost
            declared.extend(packet.packet_number for packet in lost_packets)
            if len(declared) > DECLARED_LOST_KEPT:
                del declared[:-DECLARED_LOST_KEPT]

        handler = self._on_packets_lost
        if not lost_packets and getattr(handler, "__func__", None) in NOTHING_LOST_NOOP:
            return  # nothing lost, and the handler would do nothing
        handler(
            now=now,
            packets=lost_packets,
            persistent_congestion=self._in_persistent_congestion(packets=lost_packets),
            space=space,
        )


def adopt(loss: QuicPacketRecovery) -> AdaptiveRecovery:
    """Turn aioquic's recovery (as its QuicConnection built it) into an AdaptiveRecovery."""
    loss.__class__ = AdaptiveRecovery
    assert isinstance(loss, AdaptiveRecovery)
    loss._ptp_time_threshold = START_TIME_THRESHOLD
    loss._ptp_declared_lost = []
    loss._ptp_spurious_losses = 0
    return loss
