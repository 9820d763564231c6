"""``[transport] redundancy = "Tail"``: the tail of a small flight is sent a second time.

A short exchange (a request, a small response) is one or two packets. When one of them is lost
the sender learns it from the probe timeout or from time-threshold loss detection, both more than
one round trip later: on a 50 ms link a lone lost packet costs 60-80 ms. With ``Tail`` the sender,
once it has nothing more to send, sends the still unacknowledged tail of a small flight once more a
few milliseconds after it (``max(2 ms, srtt / 8)`` plus up to 2 ms of random jitter, so a burst
of loss rarely takes both copies). The receiver discards whichever copy comes second (QUIC accepts
duplicate STREAM data), so a single loss costs a few milliseconds instead of a round trip or more.

How: the tail packets are handed to aioquic's loss recovery as lost *without* a congestion event
(as its own probe timeout does with the oldest packet, :meth:`QuicPacketRecovery.reschedule_data`):
their frames are queued again and go out in new packets, and aioquic stops tracking the originals
(an acknowledgement of an original is ignored; the copy's is what frees the data). A copy is never
copied again.

Cost: bytes. Only flights of at most ``MAX_FLIGHT`` ack-eliciting packets qualify (never a bulk
transfer), at most ``TAIL`` packets are copied, and the copies are capped at ``max_share`` (default
10 %) of the bytes sent over a sliding window (exponentially weighted, ``WINDOW`` seconds): once
the budget is spent, tails go out once until enough other traffic has been sent. The total is
``redundant_bytes`` (``ptproxy_redundant_bytes_total``).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from aioquic import tls
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import QuicPacketSpace

if TYPE_CHECKING:
    from aioquic.quic.connection import QuicConnection

__all__ = ["MAX_FLIGHT", "TAIL", "WINDOW", "TailRedundancy"]

MAX_FLIGHT = 4  # ack-eliciting packets in flight, at most, for a flight to count as small
TAIL = 2  # packets copied, at most: the last ones of the flight
WINDOW = 5.0  # s, time constant of the sliding window the cap is measured over
MIN_DELAY = 0.002  # s
JITTER = 0.002  # s


def _carries_stream_data(packet: QuicSentPacket) -> bool:
    # STREAM frames register the sender's on_data_delivery as their delivery handler.
    return any(getattr(handler, "__name__", "") == "on_data_delivery" for handler, _ in packet.delivery_handlers)


class TailRedundancy:
    """The state of one connection's tail copies (see the module docstring)."""

    def __init__(self, *, max_share: float = 0.1, rng: random.Random | None = None) -> None:
        self.max_share = max_share
        self.redundant_bytes = 0  # total, for metrics
        self.skipped = 0  # tails not copied because the budget was spent
        self.deadline: float | None = None
        self._rng = rng or random.Random()
        # Sliding-window (exponentially decayed) byte counts the cap compares.
        self._window_sent = 0.0
        self._window_redundant = 0.0
        self._decayed_at: float | None = None
        # Packet numbers >= this one carry copies (set when copies were queued, read at the next send).
        self._copies_from: int | None = None
        self._copies: set[int] = set()

    def _decay(self, now: float) -> None:
        if self._decayed_at is not None and now > self._decayed_at:
            factor = math.exp(-(now - self._decayed_at) / WINDOW)
            self._window_sent *= factor
            self._window_redundant *= factor
        self._decayed_at = now

    @staticmethod
    def _space(conn: QuicConnection) -> QuicPacketSpace | None:
        # Application data before the handshake is confirmed does not even arm the probe timeout.
        if not conn._handshake_confirmed:
            return None
        return conn._spaces.get(tls.Epoch.ONE_RTT)

    def _tail(self, conn: QuicConnection, space: QuicPacketSpace) -> list[QuicSentPacket]:
        """The last packets of a small flight, when the sender has nothing more to send."""
        if not 0 < space.ack_eliciting_in_flight <= MAX_FLIGHT or conn._pacing_at is not None:
            return []
        if any(not stream.sender.buffer_is_empty for stream in conn._streams.values()):
            return []  # more is queued (held back by the window or flow control): not a tail
        tail: list[QuicSentPacket] = []
        for packet in reversed(space.sent_packets.values()):
            if not packet.is_ack_eliciting:
                continue
            if packet.packet_number in self._copies or not _carries_stream_data(packet):
                break  # the tail was copied already, or ends with no data worth a copy
            tail.append(packet)
            if len(tail) == TAIL:
                break
        return tail

    def after_send(self, conn: QuicConnection, now: float, sent_bytes: int) -> None:
        """After each transmit: count the bytes, note the copies, arm the timer for a new tail."""
        self._decay(now)
        self._window_sent += sent_bytes
        space = self._space(conn)
        if space is None:
            return
        sent = space.sent_packets
        if self._copies_from is not None:
            self._copies.update(pn for pn in sent if pn >= self._copies_from)
            self._copies_from = None
        if len(self._copies) > 4 * MAX_FLIGHT:
            self._copies = {pn for pn in self._copies if pn in sent}
        tail = self._tail(conn, space)
        if not tail:
            self.deadline = None
            return
        last = max(packet.sent_time or now for packet in tail)
        loss = conn._loss
        srtt = loss._rtt_smoothed if loss._rtt_initialized else loss._rtt_initial
        self.deadline = last + max(MIN_DELAY, srtt / 8) + self._rng.uniform(0.0, JITTER)

    def on_timer(self, conn: QuicConnection, now: float) -> bool:
        """When the deadline came: queue the tail again if still unacknowledged. True if queued."""
        if self.deadline is None or now < self.deadline:
            return False
        self.deadline = None
        space = self._space(conn)
        if space is None:
            return False
        tail = [p for p in self._tail(conn, space) if (p.sent_time or 0.0) + MIN_DELAY <= now]
        if not tail:
            return False
        size = sum(packet.sent_bytes for packet in tail)
        self._decay(now)
        if self._window_redundant + size > self.max_share * (self._window_sent + size):
            self.skipped += 1
            return False
        self._window_redundant += size
        self.redundant_bytes += size
        # Not a congestion event: the packets are only re-queued (their data goes out again).
        # Every packet numbered above the ones tracked now carries copies (numbers only grow).
        self._copies_from = max(space.sent_packets) + 1
        conn._loss._on_packets_lost(congestion_event=False, now=now, packets=tail, space=space)
        return True
