"""Which datagrams may cost the server end anything: the admission step, sans I/O.

The server's UDP port faces the internet; anyone can send to it before authenticating. Every
datagram passes :meth:`Admission.screen` (cheap: allowlist, header, routing by connection ID), and
one that would start a new connection then passes :meth:`Admission.admit`, in order of cost:

1. ``allowed_sources``: anything else is dropped before its bytes are even parsed;
2. per-source rate limit on new handshakes (token bucket, bounded table). A source that completed
   an authenticated handshake in the last hour gets a budget ``EXEMPT_FACTOR`` times larger, and
   past it a Retry instead of a refusal (from a global Retry budget, without decrypting): someone
   spoofing the peer's address can neither lock it out of reconnecting (the real peer answers the
   Retry and comes back with a token) nor make every junk packet cost a decryption. An Initial
   with a valid Retry token skips this step (checking the token is one HMAC);
3. proof: the Initial must decrypt with the keys its destination connection ID implies
   (RFC 9001 §5.2). Junk never creates a connection;
4. a cap on handshakes in progress (``max_handshakes``);
5. under load (more than ``retry_threshold`` proven Initials in the last second, or half the cap
   in progress) a stateless Retry (RFC 9000 §8.1.2): only a source that receives our packets can
   come back with the token, so spoofed floods stop at step 5 and cost one small reply each.

Nothing here does I/O or reads a clock: ``now`` is an argument, so tests drive a fake clock. The
socket work stays in ``server/listener.py``. Refusals are counted by reason for ``/metrics`` and
summarised for the log by :class:`RefusalLog` (one line per reason per interval, never one per
packet).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptproxy.tunnel import StatelessReset
from ptproxy.tunnel.aioquic.initial import (
    SMALLEST_INITIAL_DATAGRAM,
    FirstPacket,
    encode_retry,
    encode_version_negotiation,
    initial_decrypts,
    parse_first_packet,
)
from ptproxy.values import FrozenValue, set_field

__all__ = [
    "Accept",
    "Admission",
    "AdmissionSettings",
    "Drop",
    "New",
    "REASONS",
    "RefusalLog",
    "Reply",
    "Route",
    "RetryTokens",
    "SourceFilter",
    "source_key",
]

# Refusal reasons (the ``reason`` label of ptproxy_handshakes_refused_total).
NOT_ALLOWED = "not_allowed"
RATE_LIMITED = "rate_limited"
UNDECRYPTABLE = "undecryptable"
TOO_MANY = "too_many_handshakes"
INVALID_TOKEN = "invalid_token"
OVERLOADED = "overloaded"  # the queue of handshake datagrams waiting for their turn was full
HANDSHAKE_TIMEOUT = "handshake_timeout"
TLS_FAILED = "tls_failed"
HANDSHAKE_FAILED = "handshake_failed"  # any other end before authentication
REASONS = (
    NOT_ALLOWED,
    RATE_LIMITED,
    UNDECRYPTABLE,
    TOO_MANY,
    INVALID_TOKEN,
    OVERLOADED,
    HANDSHAKE_TIMEOUT,
    TLS_FAILED,
    HANDSHAKE_FAILED,
)

TOKEN_LIFETIME = 10.0  # s; a client echoes a Retry token within one round trip
EXEMPT_FOR = 3600.0  # s an authenticated source stays exempt from the per-source limit
SOURCE_TABLE_SIZE = 4096  # per-source buckets kept; the least recently seen is evicted
EXEMPT_TABLE_SIZE = 64
EXEMPT_FACTOR = 10.0  # an authenticated source's per-source budget, as a multiple of the normal one
RETRY_BUDGET = 100.0  # Retries per second answering exempt sources past their budget (burst 2x)


# -- decisions -----------------------------------------------------------------------------


class _Decision(FrozenValue):
    """Base of the decisions: immutable value objects compared by their fields, as frozen
    dataclasses are; written out (ptproxy/values.py) because ``@dataclass(frozen=True, slots=True)``
    costs ~0.5 ms of start-up per class, on the server end's path to serving."""

    __slots__ = ()


_set = set_field


class Route(_Decision):
    """The datagram belongs to a known connection: hand it over at once."""

    __slots__ = ("cid",)
    __match_args__ = ("cid",)
    cid: bytes

    def __init__(self, cid: bytes) -> None:
        _set(self, "cid", cid)


class New(_Decision):
    """A client Initial for no known connection: run :meth:`Admission.admit` on it (queued)."""

    __slots__ = ("packet",)
    __match_args__ = ("packet",)
    packet: FirstPacket

    def __init__(self, packet: FirstPacket) -> None:
        _set(self, "packet", packet)


class Accept(_Decision):
    """Create a connection: route ``cid`` to it; pass both ids to the QuicConnection."""

    __slots__ = ("cid", "original_destination_connection_id", "retry_source_connection_id")
    __match_args__ = ("cid", "original_destination_connection_id", "retry_source_connection_id")
    cid: bytes
    original_destination_connection_id: bytes
    retry_source_connection_id: bytes | None

    def __init__(
        self, cid: bytes, original_destination_connection_id: bytes, retry_source_connection_id: bytes | None
    ) -> None:
        _set(self, "cid", cid)
        _set(self, "original_destination_connection_id", original_destination_connection_id)
        _set(self, "retry_source_connection_id", retry_source_connection_id)


class Reply(_Decision):
    """Send ``packet`` back (a Retry or a Version Negotiation), keep no state."""

    __slots__ = ("packet", "retry")
    __match_args__ = ("packet", "retry")
    packet: bytes
    retry: bool

    def __init__(self, packet: bytes, retry: bool = False) -> None:
        _set(self, "packet", packet)
        _set(self, "retry", retry)


class Follow(_Decision):
    """A 0-RTT packet for a connection whose Initial still waits for admission: queue it behind
    that Initial (RFC 9000 §5.2.2 lets a server keep such packets a while). Dropped, the early
    request it carries waits for loss detection after the handshake: one more round trip."""

    __slots__ = ("packet",)
    __match_args__ = ("packet",)
    packet: FirstPacket

    def __init__(self, packet: FirstPacket) -> None:
        _set(self, "packet", packet)


class Drop(_Decision):
    """Ignore the datagram; ``reason`` is None for normal strays (not a refused handshake)."""

    __slots__ = ("reason",)
    __match_args__ = ("reason",)
    reason: str | None

    def __init__(self, reason: str | None = None) -> None:
        _set(self, "reason", reason)


Screened = Route | New | Follow | Reply | Drop
Admitted = Accept | Reply | Drop


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """``[limits]`` and ``[general] allowed_sources`` as the admission step uses them."""

    max_handshakes: int = 64
    handshake_timeout: float = 3.0  # s
    retry_threshold: int = 20  # proven Initials per second; 0 = always Retry
    handshakes_per_source: float = 5.0  # per second, per source address
    allowed_sources: tuple[str, ...] | None = None
    host_cid_length: int = 8
    supported_versions: tuple[int, ...] = (1,)

    @classmethod
    def from_config(cls, config: Any, *, host_cid_length: int, supported_versions: Sequence[int]) -> AdmissionSettings:
        lim = config.limits
        allowed = config.general.allowed_sources
        return cls(
            max_handshakes=lim.max_handshakes,
            handshake_timeout=lim.handshake_timeout / 1000.0,
            retry_threshold=lim.retry_threshold,
            handshakes_per_source=float(lim.handshakes_per_source),
            allowed_sources=tuple(allowed) if allowed is not None else None,
            host_cid_length=host_cid_length,
            supported_versions=tuple(supported_versions),
        )


# -- sources ---------------------------------------------------------------------------------


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip


def source_key(host: str) -> str:
    """The unit of per-source limits: the IPv4 address, or the IPv6 /64 (one subscriber's)."""
    ip = _ip(host)
    if ip.version == 6:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class SourceFilter:
    """``allowed_sources``: is this peer address inside one of the networks? (memoised)"""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(n) for n in networks]
        self._seen: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        verdict = self._seen.get(host)
        if verdict is None:
            try:
                ip = _ip(host)
            except ValueError:
                return False
            verdict = any(ip in net for net in self.networks)
            if len(self._seen) >= SOURCE_TABLE_SIZE:
                self._seen.clear()  # a spoofed flood of addresses must not grow this table
            self._seen[host] = verdict
        return verdict


class SourceBuckets:
    """A token bucket per source: ``rate`` new handshakes per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, size: int = SOURCE_TABLE_SIZE) -> None:
        self.rate = rate
        self.burst = burst
        self.size = size
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at); LRU order

    def take(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        if len(self._buckets) >= self.size:
            del self._buckets[next(iter(self._buckets))]  # least recently seen
        self._buckets[key] = (tokens, now)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)


class RetryTokens:
    """Stateless Retry tokens: HMAC-SHA256 over the client address, both CIDs and the issue time.

    Layout: issued_ms (8) | len(ODCID) (1) | ODCID | MAC (16). The Retry source CID is not in the
    token: RFC 9000 §17.2.5.2 makes the client send its next Initial to it, so it arrives as that
    Initial's DCID and is covered by the MAC. The key is random per process: a restart invalidates
    outstanding tokens, which only costs a client one more Retry.
    """

    def __init__(self, key: bytes | None = None, lifetime: float = TOKEN_LIFETIME) -> None:
        self._key = key if key is not None else os.urandom(32)
        self.lifetime = lifetime

    def _mac(self, body: bytes, addr: Any, retry_cid: bytes) -> bytes:
        where = f"{_ip(addr[0])}|{addr[1]}".encode()
        return hmac.digest(self._key, body + b"|" + where + b"|" + retry_cid, "sha256")[:16]

    def create(self, addr: Any, original_cid: bytes, retry_cid: bytes, now: float) -> bytes:
        body = int(now * 1000).to_bytes(8, "big") + bytes([len(original_cid)]) + original_cid
        return body + self._mac(body, addr, retry_cid)

    def validate(self, token: bytes, addr: Any, dcid: bytes, now: float) -> bytes | None:
        """The original DCID if ``token`` is ours, fresh, for this address and CID; else None."""
        if len(token) < 9 + 16:
            return None
        odcid_len = token[8]
        body = token[: 9 + odcid_len]
        if len(token) != len(body) + 16 or odcid_len > 20:
            return None
        if not hmac.compare_digest(token[len(body) :], self._mac(body, addr, dcid)):
            return None
        issued = int.from_bytes(token[:8], "big") / 1000.0
        if not -1.0 <= now - issued <= self.lifetime:
            return None
        return body[9:]


class _RateWindow:
    """Events in the current and the previous whole second: a cheap 'per second' figure."""

    def __init__(self) -> None:
        self._start = 0.0
        self._current = 0
        self._previous = 0

    def add(self, now: float) -> None:
        self._roll(now)
        self._current += 1

    def rate(self, now: float) -> int:
        self._roll(now)
        return max(self._current, self._previous)

    def _roll(self, now: float) -> None:
        if now - self._start >= 1.0:
            self._previous = self._current if now - self._start < 2.0 else 0
            self._current = 0
            self._start = now


# -- the decision ----------------------------------------------------------------------------


@dataclass(slots=True)
class Admission:
    """The server end's admission policy; one per listener, fed every datagram."""

    settings: AdmissionSettings
    tokens: RetryTokens = field(default_factory=RetryTokens)
    random_cid: Callable[[int], bytes] = os.urandom
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    retries_sent: int = 0
    # Answers short-header packets for unknown connections (None: dropped quietly).
    stateless_reset: StatelessReset | None = None
    _filter: SourceFilter | None = None
    _buckets: SourceBuckets | None = None
    _exempt: dict[str, float] = field(default_factory=dict)
    _exempt_buckets: SourceBuckets | None = None
    _retry_budget: SourceBuckets = field(
        default_factory=lambda: SourceBuckets(RETRY_BUDGET, 2 * RETRY_BUDGET, size=1)
    )
    _proven: _RateWindow = field(default_factory=_RateWindow)

    def __post_init__(self) -> None:
        s = self.settings
        if s.allowed_sources is not None:
            self._filter = SourceFilter(s.allowed_sources)
        # Burst: a Retry round trip takes two Initials, and a reconnect may need a second try.
        rate = s.handshakes_per_source
        self._buckets = SourceBuckets(rate, max(4.0, 2.0 * rate))
        self._exempt_buckets = SourceBuckets(
            EXEMPT_FACTOR * rate, max(40.0, 2.0 * EXEMPT_FACTOR * rate), size=EXEMPT_TABLE_SIZE
        )

    def allowed(self, host: str) -> bool:
        return self._filter is None or self._filter.allows(host)

    def short_header_cid(self, data: bytes, addr: Any) -> bytes | None:
        """The destination connection ID of a short-header packet from an allowed source, else None
        (then :meth:`screen` decides). Nearly every datagram of a live connection is one; its ID
        is the ``host_cid_length`` bytes after the first byte, read here without parsing a header."""
        cid_end = self.settings.host_cid_length + 1
        if len(data) < cid_end or data[0] & 0xC0 != 0x40:  # long header, or fixed bit not set
            return None
        if self._filter is not None and not self._filter.allows(addr[0]):
            return None
        return data[1:cid_end]

    def screen(
        self,
        data: bytes,
        addr: Any,
        known: Callable[[bytes], bool],
        pending: Callable[[bytes], bool] | None = None,
    ) -> Screened:
        """First look at any datagram: cheap, no cryptography. ``pending``: is an Initial for this
        destination connection ID waiting for :meth:`admit`?"""
        if self._filter is not None and not self._filter.allows(addr[0]):
            return self.refuse(NOT_ALLOWED)
        packet = parse_first_packet(data, self.settings.host_cid_length)
        if packet is None:
            return Drop()
        if known(packet.destination_cid):
            return Route(packet.destination_cid)
        if (
            packet.version is not None
            and not packet.is_version_negotiation
            and packet.version not in self.settings.supported_versions
        ):
            if len(data) < SMALLEST_INITIAL_DATAGRAM:
                return Drop()  # answering small packets would amplify (RFC 9000 §6.1)
            return Reply(
                encode_version_negotiation(
                    source_cid=packet.destination_cid,
                    destination_cid=packet.source_cid,
                    supported_versions=list(self.settings.supported_versions),
                )
            )
        if packet.version is None and self.stateless_reset is not None:
            # A short header for a connection we do not know (we restarted, or it is long gone):
            # tell the peer at once with a Stateless Reset (small, rate-limited, never larger).
            reset = self.stateless_reset.packet_for(packet.destination_cid, len(data))
            return Reply(reset) if reset is not None else Drop()
        if packet.is_zero_rtt and pending is not None and pending(packet.destination_cid):
            return Follow(packet)
        if not packet.is_initial or len(data) < SMALLEST_INITIAL_DATAGRAM:
            return Drop()  # late packets of a finished connection, or not a client's first
        return New(packet)

    def admit(self, data: bytes, addr: Any, packet: FirstPacket, now: float, in_progress: int) -> Admitted:
        """Decide on a new connection's Initial (after :meth:`screen` returned ``New``)."""
        original = None
        if packet.token:
            # A token proves the address already; checking it is cheaper than any decryption.
            original = self.tokens.validate(packet.token, addr, packet.destination_cid, now)
            if original is None:
                # The client will not take a second Retry (RFC 9000 §8.1.3): let it time out.
                return self.refuse(INVALID_TOKEN)
        else:
            limited = self._source_limit(source_key(addr[0]), addr, packet, now)
            if limited is not None:
                return limited
        if not initial_decrypts(data, packet):
            return self.refuse(UNDECRYPTABLE)
        self._proven.add(now)
        if in_progress >= self.settings.max_handshakes:
            return self.refuse(TOO_MANY)
        if original is not None:
            return Accept(packet.destination_cid, original, packet.destination_cid)
        if self.under_load(now, in_progress):
            return self._retry(addr, packet, now)
        return Accept(packet.destination_cid, packet.destination_cid, None)

    def under_load(self, now: float, in_progress: int) -> bool:
        s = self.settings
        return (
            s.retry_threshold == 0
            or self._proven.rate(now) > s.retry_threshold
            or in_progress > s.max_handshakes // 2
        )

    def _retry(self, addr: Any, packet: FirstPacket, now: float) -> Reply:
        assert packet.version is not None
        retry_cid = self.random_cid(8)
        token = self.tokens.create(addr, packet.destination_cid, retry_cid, now)
        self.retries_sent += 1
        return Reply(
            encode_retry(
                version=packet.version,
                source_cid=retry_cid,
                destination_cid=packet.source_cid,
                original_cid=packet.destination_cid,
                token=token,
            ),
            retry=True,
        )

    def _source_limit(self, key: str, addr: Any, packet: FirstPacket, now: float) -> Reply | Drop | None:
        """None when the source may have this handshake; else the answer (refusal or Retry)."""
        if not self._is_exempt(key, now):
            assert self._buckets is not None
            return None if self._buckets.take(key, now) else self.refuse(RATE_LIMITED)
        assert self._exempt_buckets is not None
        if self._exempt_buckets.take(key, now):
            return None
        # Past even an authenticated source's budget: spoofed, most likely. A Retry costs no
        # decryption and lets the real peer, if it is among them, through with a token.
        if self._retry_budget.take("", now):
            return self._retry(addr, packet, now)
        return self.refuse(RATE_LIMITED)

    def _is_exempt(self, key: str, now: float) -> bool:
        until = self._exempt.get(key)
        return until is not None and until > now

    def authenticated(self, host: str, now: float) -> None:
        """A handshake from ``host`` completed with a verified client certificate."""
        key = source_key(host)
        self._exempt.pop(key, None)
        if len(self._exempt) >= EXEMPT_TABLE_SIZE:
            del self._exempt[next(iter(self._exempt))]
        self._exempt[key] = now + EXEMPT_FOR

    def refuse(self, reason: str) -> Drop:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return Drop(reason)


# -- logs ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ReasonState:
    last_line: float = float("-inf")
    pending: int = 0
    sample: str = ""


class RefusalLog:
    """Refused handshakes as a few log lines, whatever the flood's size.

    The first refusal of a reason is described at once (with its detail, e.g. the TLS alert: a
    misconfigured peer should see why at once); later ones within ``interval`` are only counted,
    and :meth:`flush` turns the count into one summary line per reason with a sample peer.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._states: dict[str, _ReasonState] = {}

    def record(self, reason: str, peer: str, now: float, detail: str) -> str | None:
        """Note one refusal; returns a line to log now, or None (it will be summarised)."""
        state = self._states.setdefault(reason, _ReasonState())
        if now - state.last_line >= self.interval and state.pending == 0:
            state.last_line = now
            return (
                f"{detail} ({reason}; further refusals are summarised every {self.interval:g} s)"
            )
        state.pending += 1
        state.sample = peer
        return None

    @property
    def pending(self) -> bool:
        return any(s.pending for s in self._states.values())

    def flush(self, now: float, force: bool = False) -> list[str]:
        """Summary lines for reasons whose interval is over (all of them with ``force``)."""
        lines = []
        for reason, state in self._states.items():
            if state.pending and (force or now - state.last_line >= self.interval):
                span = max(now - state.last_line, 0.0)
                lines.append(
                    f"refused {state.pending:,} handshake{'s' if state.pending != 1 else ''} "
                    f"in the last {span:.0f} s: {reason} (sample peer {state.sample})"
                )
                state.pending = 0
                state.last_line = now
        return lines
