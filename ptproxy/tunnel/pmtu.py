"""Path MTU discovery for the tunnel's datagrams (DPLPMTUD, RFC 8899 with RFC 9000 §14.3), sans-IO.

QUIC starts every path at 1200-byte datagrams, the size every IPv4 and IPv6 path must carry. Each
datagram costs a fixed amount of CPU at both ends (aioquic's Python per packet, decryption, ACK
bookkeeping) and a fixed number of header bytes on the link, so a bulk transfer wants the largest
datagrams the path carries. The Rust original (quinn) searches for the largest size by default; so
does this, unless ``[transport] max_datagram_size`` fixes the size.

How high to search comes from the route (:func:`ceiling_for_route`): on Linux the kernel knows the
MTU of the route to the peer (``IP_MTU`` / ``IPV6_MTU`` on a connected socket, ``tunnel/udp.py``),
and the ceiling is that MTU less IPv6 and UDP headers (48 bytes, for IPv4 routes too, so that a
1500-byte route gives 1452 as on every Ethernet or Internet path), at most :data:`MAX_CEILING`
(a loopback route says 65536, a jumbo-frame link 9000, a Docker/overlay link about 1450). Where the
route's MTU is unknown the ceiling is :data:`CEILING`. The route's MTU is only an upper bound (a
hop further on may carry less), so the sizes are still probed, never assumed.

:class:`PmtuSearch` decides which probe sizes to try and what the confirmed size is; the connection
(``tunnel/aioquic/pmtud.py``) sends each probe as one ack-eliciting packet padded to the size and
reports back. A binary search between the confirmed size and the ceiling; a size is given up after
``MAX_PROBES`` unacknowledged probes (a lost probe is not a congestion signal, RFC 9000 §14.4);
the search ends when the bounds are within ``STEP`` bytes, and runs again ``RAISE_INTERVAL`` s
later (RFC 8899 §5.1.1's PMTU_RAISE_TIMER), in case the path changed. Loss of ordinary packets is
not used to shrink: the confirmed size only moves down through :meth:`PmtuSearch.on_black_hole`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BASE_SIZE",
    "CEILING",
    "HEADERS",
    "MAX_CEILING",
    "MAX_PROBES",
    "PmtuSearch",
    "RAISE_INTERVAL",
    "STEP",
    "ceiling_for_route",
]

#: RFC 9000 §14: every QUIC path carries 1200-byte UDP payloads.
BASE_SIZE = 1200
#: IPv6 (40) and UDP (8) headers: what a route's MTU leaves for the UDP payload (on an IPv4 route
#: 20 bytes stay unused, as with the 1452 every 1500-byte path has always been given).
HEADERS = 48
#: The largest size tried where the route's MTU is unknown: a 1500-byte MTU less :data:`HEADERS`.
CEILING = 1452
#: The largest size tried on any route. STREAM frames carry their length in a two-byte varint
#: (aioquic's writer and our compiled twin), at most 16383 bytes: a datagram of 16384 holds one
#: such frame with its headers. Larger would need four-byte lengths in both twins. On loopback
#: (benchmarks/results/bulk_datagram_size.txt) 10 MB GETs took 13.0 / 14.5 CPU s per GB (client
#: / server end) in 1452-byte datagrams, 4.5 / 4.9 in 9000-byte ones and 3.2 / 3.8 in 16000;
#: 65487-byte ones (with four-byte lengths, tried) were slower than 16384 and took more CPU.
MAX_CEILING = 16384
#: Unacknowledged probes of one size before it is taken as too large (RFC 8899 MAX_PROBES).
MAX_PROBES = 3
#: The search stops when the confirmed size and the smallest failed one are this close.
STEP = 16
#: Seconds between searches once one has ended (RFC 8899 PMTU_RAISE_TIMER: 600 s).
RAISE_INTERVAL = 600.0


def ceiling_for_route(route_mtu: int | None) -> int:
    """The largest datagram worth probing on a route whose MTU is ``route_mtu`` (``None``: unknown)."""
    if route_mtu is None:
        return CEILING
    return max(BASE_SIZE, min(MAX_CEILING, route_mtu - HEADERS))


@dataclass
class PmtuSearch:
    """Which probe to send next and the largest datagram size confirmed on the path.

    ``ceiling``: the largest size worth trying (:func:`ceiling_for_route`, lowered to the peer's
    ``max_udp_payload_size`` by the caller). Probes go out one at a time: :meth:`next_probe` gives
    a size only when none is in flight.
    """

    ceiling: int = CEILING
    confirmed: int = BASE_SIZE
    #: The smallest size known (or taken) to be too large; ``ceiling + 1`` until one fails.
    too_large: int = 0
    in_flight: int | None = None
    failures: int = 0
    #: When the search may run again (``None``: now); set when a search ends or after a black hole.
    resume_at: float | None = None
    #: Probes sent, acknowledged and lost, for /metrics.
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "acked": 0, "lost": 0})

    def __post_init__(self) -> None:
        self.ceiling = max(self.ceiling, BASE_SIZE)
        if not self.too_large:
            self.too_large = self.ceiling + 1

    @property
    def searching(self) -> bool:
        return self.too_large - self.confirmed > STEP

    def may_probe(self, now: float) -> bool:
        """Whether :meth:`next_probe` must be asked now, without changing anything: the sender's
        cheap check on every send (one in flight, the search resting or done: nearly always
        False). False means next_probe would give no probe; a resting search whose time has come
        says True, as next_probe then restarts it (even when that finds nothing to search)."""
        if self.in_flight is not None:
            return False
        if self.resume_at is None:
            return self.too_large - self.confirmed > STEP
        return now >= self.resume_at

    def next_probe(self, now: float) -> int | None:
        """The size of the probe to send now, or ``None`` (one in flight, or nothing to try)."""
        if self.in_flight is not None:
            return None
        if self.resume_at is not None:
            if now < self.resume_at:
                return None
            # The path may have changed since: search again up to the ceiling.
            self.too_large, self.resume_at = self.ceiling + 1, None
        if not self.searching:
            return None
        size = self._candidate()
        self.in_flight = size
        self.counts["sent"] += 1
        return size

    def cancel(self, size: int) -> None:
        """The probe :meth:`next_probe` gave could not be sent (no room yet): as if never asked."""
        if size == self.in_flight:
            self.in_flight = None
            self.counts["sent"] -= 1

    def _candidate(self) -> int:
        # The ceiling first (most paths carry it), then halve the remaining interval.
        if self.too_large == self.ceiling + 1:
            return self.ceiling
        return (self.confirmed + self.too_large) // 2

    def on_acked(self, size: int, now: float) -> None:
        """A probe of ``size`` bytes arrived: the path carries it."""
        self.counts["acked"] += 1
        if size == self.in_flight:
            self.in_flight = None
        self.failures = 0
        self.confirmed = max(self.confirmed, size)
        self._maybe_done(now)

    def on_lost(self, size: int, now: float) -> None:
        """A probe of ``size`` bytes was declared lost (or could not be sent)."""
        self.counts["lost"] += 1
        if size == self.in_flight:
            self.in_flight = None
        if size <= self.confirmed:
            return  # an old probe of a size confirmed since: no news
        self.failures += 1
        if self.failures >= MAX_PROBES:
            self.failures = 0
            self.too_large = min(self.too_large, size)
        self._maybe_done(now)

    def on_black_hole(self, now: float) -> None:
        """Packets of the confirmed size stopped arriving: start again from the base size."""
        self.confirmed, self.too_large = BASE_SIZE, self.ceiling + 1
        self.in_flight, self.failures = None, 0
        self.resume_at = now + RAISE_INTERVAL

    def _maybe_done(self, now: float) -> None:
        if not self.searching and self.resume_at is None:
            self.resume_at = now + RAISE_INTERVAL
