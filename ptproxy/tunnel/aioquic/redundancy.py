"""``[transport] redundancy = "Tail"``: the tail of each small burst is sent a second time.

A short exchange (a request, a small response) is one or two packets. When one of them is lost
the sender learns it from the probe timeout or from packet- or time-threshold loss detection, all
about one round trip later or more: on a 50 ms link a lone lost packet costs 50-80 ms. With
``Tail`` the sender, once it has nothing more to send, sends the still unacknowledged tail of the
*burst* it just sent once more a few milliseconds later (``max(2 ms, srtt / 8)`` plus up to 2 ms
of random jitter, so a burst of loss rarely takes both copies). The receiver discards whichever
copy comes second (QUIC accepts duplicate STREAM data), so a single loss costs a few milliseconds
instead of a round trip or more.

A burst is what the sender sent since it last ran out of data (since its last tail decision), not
everything in flight: with many concurrent exchanges on the connection (16 clients each sending
requests back to back) far more than a handful of packets are in flight at any time, yet each
request, and each response, is still a burst of its own and gets its own copy.

Which packets: a burst qualifies when it carried stream data in at most ``MAX_FLIGHT`` packets
(copies left out) and the sender then had nothing more to send: no stream with data waiting (held
back by the congestion window, the pacer or flow control, say). Of its
packets carrying data within the first ``SHORT`` bytes of a request stream (a request or its
response; a packet with only control or QPACK stream data is not worth a copy), at most the last
``TAIL`` are copied, once. A copy is never copied again. Bulk transfers never qualify: while a transfer is
limited by the window, the pacer or flow control its burst never ends, so it grows past
``MAX_FLIGHT`` packets; a stream that trickles out in small pieces (a slow origin) is past its first
``SHORT`` bytes after a few of them.

How: the tail packets are handed to aioquic's loss recovery as lost *without* a congestion event
(as its own probe timeout does with the oldest packet, :meth:`QuicPacketRecovery.reschedule_data`):
their frames are queued again and go out in new packets, and aioquic stops tracking the originals
(an acknowledgement of an original is ignored; the copy's is what frees the data). A new packet all
of whose stream data lies within such re-queued ranges is a copy.

Cost: bytes, on short exchanges only. With only short exchanges on the link nearly every data packet
is sent twice: copies are then up to half the bytes sent (each packet goes out at most twice, and
the copies count among the bytes sent). A further cap, ``max_share`` of the bytes sent over a
sliding window (exponentially weighted, ``WINDOW`` seconds), stops copying while the copies are
above it; the default 1.0 never binds: the per-burst bounds above are the limit. The total is
``redundant_bytes`` (``ptproxy_redundant_bytes_total``).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Protocol, cast

from aioquic import tls
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender

from ptproxy.tunnel.aioquic.marks import StreamMarks

if TYPE_CHECKING:
    from aioquic.quic.connection import QuicConnection

__all__ = ["MAX_FLIGHT", "SHORT", "TAIL", "WINDOW", "TailRedundancy"]

MAX_FLIGHT = 4  # packets carrying stream data, at most, for a burst to count as small
TAIL = 2  # packets copied per burst, at most: its last ones
SHORT = 16384  # bytes: only packets carrying data within a stream's first SHORT bytes are copied
WINDOW = 5.0  # s, time constant of the sliding window the cap is measured over
MIN_DELAY = 0.002  # s
JITTER = 0.002  # s
MAX_PENDING = 64  # bursts waiting for their copy's deadline, at most


def _stream_data(packet: QuicSentPacket) -> list[tuple[QuicStreamSender, int, int, int]] | None:
    """The (sender, start, stop, stream ID) of each STREAM frame of ``packet``; None when it carries none.

    A STREAM frame's delivery handler is its stream's ``sender.on_data_delivery``, with
    ``(start, stop, fin)`` as arguments (crypto streams have no stream ID and are left out)."""
    out = None
    for handler, args in packet.delivery_handlers:
        sender = getattr(handler, "__self__", None)
        if isinstance(sender, QuicStreamSender):
            sid = sender._stream_id
            if sid is not None:
                if out is None:
                    out = []
                out.append((sender, args[0], args[1], sid))
    return out


class _Marked(Protocol):
    """What of PatchedQuicConnection beyond aioquic's connection this module reads (importing it
    here would be an import cycle)."""

    _ptp_marks: StreamMarks


def _data_waiting(conn: QuicConnection) -> bool:
    """Whether some stream has data or a FIN not yet sent (or lost and queued again).

    Neither the pacer's time (aioquic asks the pacer before trying each packet, so a spent pacer
    sets it when nothing was left) nor ``buffer_is_empty`` (only set once ``get_frame`` finds
    nothing, which a pacer holding the next packet back prevents) says so; the pending ranges do.
    Every stream with something to send is marked ready (marks.py)."""
    streams = conn._streams
    for sid in cast(_Marked, conn)._ptp_marks.ready:
        stream = streams.get(sid)
        if stream is not None:
            sender = stream.sender
            if not sender.buffer_is_empty and (len(sender._pending) or sender._pending_eof):
                return True
    return False


class TailRedundancy:
    """The state of one connection's tail copies (see the module docstring)."""

    def __init__(self, *, max_share: float = 1.0, rng: random.Random | None = None) -> None:
        self.max_share = max_share
        self.redundant_bytes = 0  # total, for metrics
        self.copied_bursts = 0  # bursts whose tail was queued again
        self.skipped = 0  # tails not copied because the budget was spent
        self.deadline: float | None = None  # the earliest pending tail's
        self._rng = rng or random.Random()
        # Sliding-window (exponentially decayed) byte counts the cap compares.
        self._window_sent = 0.0
        self._window_redundant = 0.0
        self._decayed_at: float | None = None
        # Packets numbered from here on have not been looked at yet.
        self._next_pn = 0
        # The current burst: its packets carrying stream data (None once it has too many).
        self._burst: list[tuple[QuicSentPacket, bool]] | None = []
        # Bursts waiting to be copied: (deadline, packets).
        self._pending: list[tuple[float, list[QuicSentPacket]]] = []
        # Stream data queued again as copies and not yet seen going out again: sender -> ranges.
        self._requeued: dict[QuicStreamSender, list[tuple[int, int]]] = {}

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

    def _is_copy(self, data: list[tuple[QuicStreamSender, int, int, int]]) -> bool:
        requeued = self._requeued
        for sender, start, stop, _ in data:
            ranges = requeued.get(sender)
            if ranges is None or not any(lo <= start and stop <= hi for lo, hi in ranges):
                return False
        return True

    def _look_at_new(self, space: QuicPacketSpace, burst: list[tuple[QuicSentPacket, bool]]) -> bool:
        """Add the packets sent since the last call to the burst; False once it is too big."""
        new = []
        next_pn = self._next_pn
        for packet in reversed(space.sent_packets.values()):
            if packet.packet_number < next_pn:
                break
            new.append(packet)
        for packet in reversed(new):
            if not packet.is_ack_eliciting:
                continue
            data = _stream_data(packet)
            if data is None or (self._requeued and self._is_copy(data)):
                continue  # no stream data (ACK, flow control, PING), or a copy
            # A copy candidate: the start of a request stream (bidirectional: a request or its
            # response), not only control or QPACK stream data.
            burst.append((packet, any(start < SHORT and not sid & 2 for _, start, _, sid in data)))
            if len(burst) > MAX_FLIGHT:
                return False
        return True

    def after_send(self, conn: QuicConnection, now: float, sent_bytes: int) -> None:
        """After each transmit: count the bytes, follow the burst, and when the sender has run out
        of data, arm the timer for the copy of a small burst's tail."""
        self._decay(now)
        self._window_sent += sent_bytes
        space = self._space(conn)
        if space is None:
            return
        burst = self._burst
        if burst is not None and not self._look_at_new(space, burst):
            burst = self._burst = None  # a big burst: never copied
        self._next_pn = conn._packet_number
        if _data_waiting(conn):
            return  # more to send (held back by the window, the pacer or flow control): the burst goes on
        # Out of data: the burst ends here (and every copy queued so far has gone out).
        self._burst = []
        self._requeued.clear()
        if not burst:
            return
        tail = [packet for packet, short in burst if short][-TAIL:]
        if not tail:
            return
        if len(self._pending) >= MAX_PENDING:
            self.skipped += 1
            return
        last = max(packet.sent_time or now for packet in tail)
        loss = conn._loss
        srtt = loss._rtt_smoothed if loss._rtt_initialized else loss._rtt_initial
        deadline = last + max(MIN_DELAY, srtt / 8) + self._rng.uniform(0.0, JITTER)
        self._pending.append((deadline, tail))
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def on_timer(self, conn: QuicConnection, now: float) -> bool:
        """When a deadline came: queue the due tails again where still unacknowledged. True if any."""
        if self.deadline is None or now < self.deadline:
            return False
        due = [entry for entry in self._pending if entry[0] <= now]
        self._pending = [entry for entry in self._pending if entry[0] > now]
        self.deadline = min((entry[0] for entry in self._pending), default=None)
        space = self._space(conn)
        if space is None:
            return False
        sent = space.sent_packets
        self._decay(now)
        lost: list[QuicSentPacket] = []
        numbers: set[int] = set()
        for _, tail in due:
            # Still tracked: neither acknowledged nor declared lost (nor copied by an earlier entry).
            packets = [p for p in tail if sent.get(p.packet_number) is p and p.packet_number not in numbers]
            if not packets:
                continue
            size = sum(packet.sent_bytes for packet in packets)
            if self._window_redundant + size > self.max_share * (self._window_sent + size):
                self.skipped += 1
                continue
            self._window_redundant += size
            self.redundant_bytes += size
            self.copied_bursts += 1
            lost += packets
            numbers.update(p.packet_number for p in packets)
        if not lost:
            return False
        requeued = self._requeued
        for packet in lost:
            for sender, start, stop, _ in _stream_data(packet) or ():
                requeued.setdefault(sender, []).append((start, stop))
        # Not a congestion event: the packets are only re-queued (their data goes out again).
        conn._loss._on_packets_lost(congestion_event=False, now=now, packets=lost, space=space)
        return True
