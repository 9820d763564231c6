"""The configuration file: a typed mirror of the Rust ptproxy's ``config.rs``.

One frozen ``msgspec.Struct`` per TOML table, keys spelled as serde writes them, unknown fields
rejected (serde ``deny_unknown_fields``), so a file written for the Rust ptproxy loads unchanged
and a typo fails loudly instead of silently falling back to a default. ``[limits]``,
``[metrics]``, ``transport.max_datagram_size`` and ``system.qlog_dir`` are our extensions.

Each field's ``Meta(description=...)`` is its documentation; ``render_reference()`` turns the
Structs into ``docs/config.md`` and a unit test keeps that file in step, so defaults cannot drift.
Call ``load()`` once at startup; every error is one line naming the file and the field.
"""

# No ``from __future__ import annotations`` here: the Structs' annotations are evaluated as their
# classes are made, so msgspec's first decode (load, at every start) does not compile and evaluate
# ~100 annotation strings (typing.get_type_hints: 24M instructions; callgrind, -11M per end net).
import ipaddress
import json
import os
import re
import sys
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ptproxy.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "General",
    "Limits",
    "Health",
    "Metrics",
    "PathRule",
    "Queue",
    "Route",
    "System",
    "Tls",
    "Transport",
    "load",
    "parse",
    "check_routes",
    "parse_socket_address",
    "render_reference",
]

# Annotated aliases keep the field lines short; the description is the per-field doc.
Ms = Annotated[int, Meta(ge=1)]  # durations: integer milliseconds, as config.rs
Count = Annotated[int, Meta(ge=1)]  # sizes and counts; 0 would wedge or disable silently
Port = Annotated[int, Meta(ge=1, le=65535)]
NonEmpty = Annotated[str, Meta(min_length=1)]
# Headers the server end can set from what it knows of the client (routes' request_headers).
IdentityHeader = Literal[
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-SSL-Subject",
    "X-SSL-Issuer",
    "X-SSL-Serial",
    "X-SSL-Notbefore",
    "X-SSL-Notafter",
    "X-SSL-Cipher",
]


def Doc(text: str) -> Meta:
    """A field's documentation, as ``Annotated[type, Doc("...")]`` (rendered into the docs)."""
    return Meta(description=text)


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every table: serde's deny_unknown_fields, immutable once loaded.

    msgspec inherits ``forbid_unknown_fields``/``frozen`` but not ``kw_only``, so each section
    repeats ``kw_only=True`` (it lets required fields follow defaulted ones, in config.rs order).
    """


# A UNIX socket address: "unix:/run/app.sock" (ptproxy.addr.UNIX_PREFIX; config is a leaf).
UNIX_PREFIX = "unix:"
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
_MAX_UNIX_PATH = 107


def parse_socket_address(text: str, *, require_ip: bool = False) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into ``(host, port)``; brackets are removed.

    With ``require_ip`` the host must be an IP literal (what Rust's ``SocketAddr`` accepts, used
    for addresses we bind). ``unix:PATH`` is returned whole as ``("unix:PATH", 0)`` (``load``
    has made PATH absolute). Raises ``ValueError`` with a message fit for a config error.
    """
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
        if not path or "\0" in path:
            raise ValueError(f"expected a path after {UNIX_PREFIX!r}, got {text!r}")
        return text, 0
    m = re.fullmatch(r"\[([^\[\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if m is None:
        raise ValueError(f"expected a socket address like host:port or [v6]:port, got {text!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range 1..65535 in {text!r}")
    bracketed = m.group(1) is not None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if bracketed and (ip is None or ip.version != 6):
        raise ValueError(f"only IPv6 addresses go in brackets, got {text!r}")
    if require_ip and ip is None:
        raise ValueError(f"expected an IP address, not a host name, in {text!r}")
    return host, port


def _check_socket_address(field: str, value: str | None, *, require_ip: bool, unix: bool = True) -> None:
    if value is not None:
        if not unix and value.startswith(UNIX_PREFIX):
            raise ValueError(f"{field}: a UNIX socket is not supported here, got {value!r}")
        try:
            parse_socket_address(value, require_ip=require_ip)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_nonempty_list(field: str, value: str | Sequence[str] | None) -> None:
    if isinstance(value, list) and not value:
        raise ValueError(f"{field}: an empty list; give at least one value or omit the field")
    if isinstance(value, list) and len(set(value)) != len(value):
        raise ValueError(f"{field}: listed twice: {sorted({v for v in value if value.count(v) > 1})}")


def _check_networks(mode: str, networks: list[str] | None) -> None:
    """``allowed_sources``: server mode only, a non-empty list of CIDR networks."""
    if networks is None:
        return
    if mode != "Server":
        raise ValueError("allowed_sources: only allowed in Server mode")
    if not networks:
        raise ValueError("allowed_sources: an empty list would refuse every client; omit the field to allow any")
    for text in networks:
        try:
            ipaddress.ip_network(text)
        except ValueError as exc:
            # e.g. "203.0.113.7/24 has host bits set": say which entry and what was meant.
            raise ValueError(f"allowed_sources: {text!r} is not a network like 203.0.113.0/24 ({exc})") from None


class General(_Section, kw_only=True, frozen=True):
    """Required table: role, peer identity and addresses."""

    mode: Annotated[Literal["Client", "Server"], Doc("Which end this instance is.")]
    peer_hostname: Annotated[
        NonEmpty | list[NonEmpty],
        Doc(
            "Name the peer's certificate must carry. Server only: a list of names, any of which "
            "a client certificate may carry (a hub for several client ends; routes restrict "
            "them with `allowed_peers`)."
        ),
    ]
    quic_port: Annotated[
        Port, Doc("UDP port: the server binds it, the client connects to it.")
    ] = 20010
    bind_address: Annotated[
        str, Doc("IP address to bind the QUIC socket to, in either mode.")
    ] = "::"
    connect_address: Annotated[
        NonEmpty | list[NonEmpty] | None,
        Doc(
            "Client only: host to connect to instead of `peer_hostname`, resolved at each "
            "attempt (one resolved address picked at random). A list: server ends tried in "
            "order; the session fails over to the next when the one in use is unreachable and "
            "returns to an earlier one when it answers a handshake again. Each must present "
            "`peer_hostname`. Unset: `peer_hostname`."
        ),
    ] = None
    http_bind_address: Annotated[
        str | None,
        Doc(
            "Client only: socket address of the HTTP/1.1 listener, or `unix:PATH` for a UNIX "
            'socket. Unset: `"[::]:20080"`.'
        ),
    ] = None
    http_connect_address: Annotated[
        str | list[str] | None,
        Doc(
            "Server only, required there: `host:port` (or `unix:PATH`) of the default route's origin; a list is "
            "a pool balanced as `[[routes]] name = \"default\"` says (round robin unless set)."
        ),
    ] = None
    allowed_sources: Annotated[
        list[str] | None,
        Doc(
            'Server only: networks that may send to the QUIC port, e.g. `["203.0.113.0/24", '
            '"2001:db8::/32"]`; datagrams from anywhere else are dropped before parsing '
            "(IPv4-mapped IPv6 peers match IPv4 networks). Unset: any source. (Extension.)"
        ),
    ] = None

    # Cross-field rules of config.rs; messages start with the field so errors get a full path.
    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ValueError(
                f"bind_address: expected an IP address, got {self.bind_address!r}"
            ) from None
        if self.mode == "Server":
            if self.http_connect_address is None:
                raise ValueError("http_connect_address: required in Server mode")
            if self.http_bind_address is not None:
                raise ValueError("http_bind_address: not allowed in Server mode")
        elif self.http_connect_address is not None:
            raise ValueError("http_connect_address: not allowed in Client mode")
        # (The original ignores connect_address in Server mode, so it is not an error here.)
        if self.mode == "Client" and isinstance(self.peer_hostname, list):
            raise ValueError("peer_hostname: a list is only allowed in Server mode")
        _check_nonempty_list("peer_hostname", self.peer_hostname)
        _check_nonempty_list("connect_address", self.connect_address)
        _check_nonempty_list("http_connect_address", self.http_connect_address)
        _check_socket_address("http_bind_address", self.http_bind_address, require_ip=True)
        for address in _as_list(self.http_connect_address):
            _check_socket_address("http_connect_address", address, require_ip=False)
        _check_networks(self.mode, self.allowed_sources)

    @property
    def peer_hostnames(self) -> list[str]:
        """Every name a peer certificate may carry (one at the client end)."""
        return _as_list(self.peer_hostname)

    @property
    def connect_hosts(self) -> list[str]:
        """Client: the server ends to dial, in order of preference."""
        return _as_list(self.connect_address) or [self.peer_hostnames[0]]

    @property
    def connect_host(self) -> str:
        """The first host the client dials: ``connect_address`` or else ``peer_hostname``."""
        return self.connect_hosts[0]

    @property
    def effective_http_bind_address(self) -> str:
        """Client listener address as written, with the default applied."""
        return self.http_bind_address if self.http_bind_address is not None else "[::]:20080"

    @property
    def http_bind(self) -> tuple[str, int]:
        """Client listener ``(ip, port)`` (brackets removed)."""
        return parse_socket_address(self.effective_http_bind_address, require_ip=True)

    @property
    def http_connect(self) -> tuple[str, int] | None:
        """The first server origin ``(host, port)``; ``None`` in client mode."""
        origins = self.http_connects
        return origins[0] if origins else None

    @property
    def http_connects(self) -> list[tuple[str, int]]:
        """Server: the default route's origins ``(host, port)``; empty in client mode."""
        return [parse_socket_address(a) for a in _as_list(self.http_connect_address)]


class Tls(_Section, kw_only=True, frozen=True):
    """Required table: TLS 1.3, ALPN `h3`; both ends verify each other."""

    ca: Annotated[
        Path | None,
        Doc("PEM file of CA certificates to verify the peer against. Unset: system roots."),
    ] = None
    skip_verify: Annotated[
        bool, Doc("Skip verification of the peer certificate (dangerous).")
    ] = False
    cert: Annotated[Path, Doc("PEM certificate chain to present.")]
    key: Annotated[Path, Doc("PEM private key (PKCS#8).")]
    ticket_key_file: Annotated[
        Path | None,
        Doc(
            "Server only: file of session-ticket keys (current and previous, rotated daily) and "
            "of the Stateless Reset secret, created with mode 0600 if missing. With it a restarted "
            "server still resumes its client's session (0-RTT) and resets the client's old "
            "connection at its next packet. Unset: per-process keys; after a restart the client "
            "does a full handshake and notices the restart only at `max_idle_timeout`. (Extension.)"
        ),
    ] = None


class Transport(_Section, kw_only=True, frozen=True):
    """Optional table: QUIC tuning. Keep both ends the same."""

    max_idle_timeout: Annotated[
        Ms,
        Doc("ms without traffic before the connection is dead; also bounds a connection attempt."),
    ] = 5000
    keep_alive_interval: Annotated[
        Ms, Doc("ms of inactivity before a keep-alive packet is sent.")
    ] = 2000
    initial_rtt: Annotated[
        Ms | None, Doc("ms, RTT estimate before the first sample. Unset: QUIC default (333).")
    ] = None
    max_concurrent_http_streams: Annotated[
        Count, Doc("Concurrent requests the server end accepts.")
    ] = 100
    stream_receive_window: Annotated[
        Count | None,
        Doc(
            "Bytes per stream before the sender blocks; a hard limit when set. Unset: starts at "
            "1000000 or 8 x `initial_window`, whichever is larger, and tunes itself (doubles while the window, not the network, limits the "
            "sender) up to `[limits] max_auto_stream_window`."
        ),
    ] = None
    initial_window: Annotated[
        Count,
        Doc(
            "Initial congestion window, bytes; ideally the link's bandwidth-delay product "
            "(150 ms x 30 Mbit/s = 487500)."
        ),
    ] = 14720
    receive_window: Annotated[
        Count | None,
        Doc(
            "Connection-wide receive flow-control window, bytes; a hard limit when set. Unset: "
            "starts at 8 x `initial_window` and tunes itself (doubles when a window is consumed "
            "within about two round trips) up to `[limits] max_auto_window`."
        ),
    ] = None
    send_window: Annotated[
        Count | None,
        Doc(
            "Connection-wide unacknowledged send limit, bytes; a hard limit when set. Unset: "
            "twice the congestion window, at least `initial_window`, at most "
            "`[limits] max_auto_window`."
        ),
    ] = None
    socket_receive_buffer_size: Annotated[
        Count | None,
        Doc(
            "SO_RCVBUF of the UDP socket; warns when the OS grants less. Unset: 4194304 asked for, "
            "quietly capped by the OS (net.core.rmem_max)."
        ),
    ] = None
    socket_send_buffer_size: Annotated[
        Count | None,
        Doc("SO_SNDBUF of the UDP socket; warns when the OS grants less. Unset: OS default."),
    ] = None
    congestion_algorithm: Annotated[
        Literal["Bbr", "Cubic", "NewReno", "None"],
        Doc(
            'Congestion controller. `"None"`: the window stays at `initial_window` and packets '
            "are still paced by it."
        ),
    ] = "Bbr"
    redundancy: Annotated[
        Literal["None", "Probe", "Tail"],
        Doc(
            '`"Probe"`: on a link of 8 ms RTT or more, a lone flight (a request, a small '
            "response) still unacknowledged RTT/8 after it left is followed by one PING, whose "
            "acknowledgement lets the sender declare a lost packet at 9/8 RTT (RFC 9002's time "
            "threshold) instead of at the next packet's acknowledgement or the probe timeout: "
            "about 10-25 ms off a loss on a 50 ms link. Costs one small datagram each way and "
            "its acknowledgement per short exchange, lost or not (counted in "
            "`ptproxy_redundant_bytes_total`), nothing on bulk transfers. "
            '`"Tail"`: when the sender runs out of data after a small burst (stream data in at '
            "most 4 packets: a request, a small response), the burst's last one or two packets "
            "are sent once more a few ms later (max(2 ms, RTT/8) plus jitter), so one lost "
            "packet of a short exchange costs a few ms instead of a round trip or more. Each "
            "burst counts on its own, however many other exchanges are in flight. Bulk "
            "transfers are never copied (their bursts are larger; a stream past its first "
            "16 KiB of a request or response is not copied). Costs bytes and datagrams: on a "
            "link carrying only short exchanges nearly every data packet is sent twice (about "
            "one more datagram each way per exchange), so copies are about half the bytes "
            "sent there, while a bulk transfer has none; they are counted in "
            "`ptproxy_redundant_bytes_total` and capped by `redundancy_max_share`. (Extension.)"
        ),
    ] = "None"
    redundancy_max_share: Annotated[
        Annotated[float, Meta(gt=0, le=1)],
        Doc(
            'With `redundancy = "Tail"`: a copy is sent only while copies stay within this '
            "share of the bytes sent (copies included) over a sliding window of about 5 s. The "
            "default 1.0 never binds, leaving the per-burst bounds above as the limit: every "
            "short exchange is protected. Since a packet is copied at most once, copies reach "
            "about half the bytes sent at most; a lower cap protects only some exchanges on a "
            "link carrying mostly short ones (0.1: roughly one in ten). (Extension.)"
        ),
    ] = 1.0
    max_datagram_size: Annotated[
        Annotated[int, Meta(ge=1200, le=16384)] | None,
        Doc(
            "Largest UDP payload sent, bytes. Unset: start at 1200 (what every path carries) and "
            "find the path's own limit with probes (path MTU discovery, RFC 8899 and RFC 9000 "
            "14.3; the Rust original discovers too), up to the MTU of the route to the peer less "
            "48 bytes of IPv6 and UDP headers (Linux; 1452 on a 1500-byte Ethernet or Internet "
            "route, 8952 on a 9000-byte jumbo-frame link) and at most 16384 (loopback): each "
            "datagram costs CPU at both ends, so on loopback 10 MB transfers take about a third "
            "of the CPU they take in 1452-byte datagrams. Where the route's MTU is unknown, up "
            "to 1452. Set: that size exactly, no probes; too large a value fails the handshake "
            "rather than black-holing later. At most 16384: a STREAM frame's length is written "
            "in two bytes. (Extension.)"
        ),
    ] = None

    @property
    def effective_stream_receive_window(self) -> int:
        """``stream_receive_window``, or the start of a self-tuning one (1000000, as config.rs)."""
        return self.stream_receive_window if self.stream_receive_window is not None else 1000000

    @property
    def effective_receive_window(self) -> int:
        """``receive_window``, or where a self-tuning one starts: ``initial_window`` (config.rs)."""
        return self.receive_window if self.receive_window is not None else self.initial_window

    @property
    def effective_send_window(self) -> int:
        """``send_window``, or the floor of a self-tuning one: ``initial_window`` (config.rs)."""
        return self.send_window if self.send_window is not None else self.initial_window


class System(_Section, kw_only=True, frozen=True):
    """Optional table: process behaviour."""

    connect_interval: Annotated[
        Ms, Doc("Client: ms to wait after a failed or lost connection before the next attempt.")
    ] = 1000
    tcp_nodelay: Annotated[bool, Doc("TCP_NODELAY on the HTTP/1.1 sockets.")] = True
    wait_for_first_attempt: Annotated[
        bool,
        Doc(
            "Client under systemd: send READY only after the first connection attempt ends, "
            "either way."
        ),
    ] = True
    # gt=0 rather than ge=1: the Rust original accepts any positive factor, and a config that
    # loads there must load here. Below 1.0 systemd would kill us, which the doc warns about.
    watchdog_factor: Annotated[
        Annotated[float, Meta(gt=0)],
        Doc("Watchdog pings every `WATCHDOG_USEC / factor`; below 1.0 systemd kills the process."),
    ] = 1.5
    add_forwarded: Annotated[
        bool, Doc("Append an RFC 7239 `Forwarded` header to requests.")
    ] = False
    qlog_dir: Annotated[
        Path | None,
        Doc("Directory for qlog traces of QUIC connections. Unset: off. (Extension.)"),
    ] = None
    request_headers: Annotated[
        list[IdentityHeader] | None,
        Doc(
            "Server only: headers the server end sets on every request of the default route "
            "(as `[[routes]] request_headers`). Unset: none. (Extension.)"
        ),
    ] = None
    unix_socket_mode: Annotated[
        Annotated[str, Meta(pattern="^0?[0-7]{3}$")],
        Doc(
            "Octal permissions of the UNIX socket files this end listens on (`unix:` listeners), "
            'set after bind; connecting needs write permission. The default lets any local user '
            'connect, as to a TCP port on localhost; `"0660"` limits it to the owner and group. '
            "(Extension.)"
        ),
    ] = "0666"

    @property
    def unix_mode(self) -> int:
        """``unix_socket_mode`` as a number for ``os.chmod``."""
        return int(self.unix_socket_mode, 8)


class Limits(_Section, kw_only=True, frozen=True):
    """Optional table (extension): bounds on the HTTP/1.1 sides, the origin pool and QUIC handshakes."""

    max_request_line: Annotated[Count, Doc("Longest request line, bytes; longer gets 414.")] = 8192
    max_header_bytes: Annotated[Count, Doc("Largest header block, bytes; larger gets 431.")] = 65536
    max_header_count: Annotated[Count, Doc("Most header fields; more gets 431.")] = 100
    request_head_timeout: Annotated[
        Ms, Doc("ms to receive a whole request head; slower gets 408.")
    ] = 10000
    keepalive_idle_timeout: Annotated[
        Ms,
        Doc(
            "ms an idle HTTP/1.1 listener connection is kept before it is closed (5 minutes, "
            "as Caddy: a client that comes back after minutes of silence reuses its connection)."
        ),
    ] = 300000
    origin_connect_timeout: Annotated[
        Ms, Doc("ms to connect to the origin; slower gets 502.")
    ] = 5000
    origin_response_timeout: Annotated[
        Ms,
        Doc(
            "ms from the end of the request body until the origin's response head arrives; "
            "slower gets 504."
        ),
    ] = 60000
    stream_queue_timeout: Annotated[
        Ms,
        Doc(
            "Client: ms a request may wait for a stream (beyond the session's stream limit) or, "
            "while the tunnel is down, for the next session; then 503."
        ),
    ] = 5000
    max_origin_idle_connections: Annotated[
        Annotated[int, Meta(ge=0)],
        Doc(
            "Idle origin connections kept for reuse, per origin; 0: no reuse. Below "
            "`max_concurrent_http_streams`, a busy tunnel closes and reopens origin connections."
        ),
    ] = 100
    origin_idle_timeout: Annotated[
        Ms, Doc("ms an idle origin connection is kept for reuse.")
    ] = 30000
    origin_preconnect: Annotated[
        bool,
        Doc(
            "Server: when a client end's session is established, open one connection to each "
            "origin of the default route (and of any route that has served a request) that has "
            "none idle; while a session is up, replace the last idle one closed for its age "
            "(`origin_idle_timeout`; not one the origin closed). So the first request after "
            "start-up or a silence does not wait for a TCP handshake with the origin. At most "
            "one per origin, none with `max_origin_idle_connections` = 0; a failure is logged at "
            "debug only. false: origin connections only on demand."
        ),
    ] = True
    max_handshakes: Annotated[
        Count,
        Doc("Server: QUIC handshakes in progress at once; Initials beyond it are dropped."),
    ] = 64
    handshake_timeout: Annotated[
        Ms,
        Doc(
            "Server: ms a QUIC handshake may take before its state is dropped (not "
            "`max_idle_timeout`, which only applies once authenticated)."
        ),
    ] = 3000
    retry_threshold: Annotated[
        Annotated[int, Meta(ge=0)],
        Doc(
            "Server: above this many new handshakes per second, or with more than half of "
            "`max_handshakes` in progress, new clients must prove their address with a stateless "
            "Retry (one extra round trip). 0: always Retry."
        ),
    ] = 20
    max_auto_window: Annotated[
        Count,
        Doc(
            "Ceiling, bytes, of the connection-wide receive and send windows when they tune "
            "themselves (`[transport] receive_window` / `send_window` unset): the most one "
            "session buffers for a slow consumer or keeps unacknowledged."
        ),
    ] = 16777216
    max_auto_stream_window: Annotated[
        Count,
        Doc(
            "Ceiling, bytes, of a stream's receive window when it tunes itself "
            "(`[transport] stream_receive_window` unset)."
        ),
    ] = 8388608
    tcp_idle_timeout: Annotated[
        Ms,
        Doc(
            "ms a TCP stream route's connection, or a WebSocket, may carry no byte either way "
            "before both ends close it."
        ),
    ] = 300000
    handshakes_per_source: Annotated[
        Count,
        Doc(
            "Server: new handshakes per second from one IPv4 address or IPv6 /64 (bursts of "
            "twice as many, at least 4); sources that authenticated in the last hour are exempt."
        ),
    ] = 5


RouteName = Annotated[str, Meta(pattern="^[a-z0-9-]{1,32}$")]
Balance = Literal["RoundRobin", "LeastRequests", "Random", "PeerHash"]


class PathRule(_Section, kw_only=True, frozen=True):
    """`[[routes.paths]]`, server end: the first rule whose prefix matches the request's path
    wins; a request matching none goes to the route's origins."""

    prefix: Annotated[str, Doc("Path prefix to match, starting with `/` (query string ignored).")]
    rewrite: Annotated[
        str | None, Doc("What replaces the prefix before the origin sees the path. Unset: kept.")
    ] = None
    origins: Annotated[
        list[str] | None,
        Doc(
            "`host:port` (or `unix:PATH`) origins for matching requests, balanced as the route. "
            "Unset: the route's."
        ),
    ] = None


class Health(_Section, kw_only=True, frozen=True):
    """`[routes.health]`, server end: an active probe of each origin of the route (passive
    marking, an origin DOWN as soon as a connection to it fails, is always on)."""

    path: Annotated[str, Doc("Path of the probe: `GET path`, a status below 500 is healthy.")]
    interval: Annotated[Ms, Doc("ms between probes of one origin.")] = 2000
    timeout: Annotated[Ms, Doc("ms a probe may take before it counts as failed.")] = 1000
    down_after: Annotated[Count, Doc("Consecutive failed probes that mark an UP origin DOWN.")] = 3
    up_after: Annotated[Count, Doc("Consecutive good probes that bring a DOWN origin back UP.")] = 2


class Queue(_Section, kw_only=True, frozen=True):
    """`[routes.queue]`, server end: requests wait here while no origin of the route can take
    them (every one DOWN)."""

    max_pending: Annotated[
        Annotated[int, Meta(ge=0)], Doc("Requests that may wait; one more is answered 503 at once.")
    ] = 256
    pending_timeout: Annotated[Ms, Doc("ms a request may wait before it is answered 503.")] = 5000


class Route(_Section, kw_only=True, frozen=True):
    """`[[routes]]`, optional: named routes over the one session. The client end picks a
    request's route (by listener or Host) and tags the request with its name; the server end
    sends it to that route's origins. A request with no tag (a standard HTTP/3 client, or the
    general listener with no matching host) takes the route named `default`: the general listener
    at the client end, `http_connect_address` at the server end. (Extension.)"""

    name: Annotated[
        RouteName,
        Doc('`[a-z0-9-]{1,32}`, unique; both ends use the same name. `"default"` is the general route.'),
    ]
    http_bind_address: Annotated[
        str | None,
        Doc("Client: socket address (or `unix:PATH`) of a listener whose requests all take this route."),
    ] = None
    tcp_bind_address: Annotated[
        str | None,
        Doc(
            "Client: socket address (or `unix:PATH`) of a TCP listener; each accepted connection becomes one "
            "HTTP/3 `CONNECT` stream to an origin of this route (a TCP stream route: no HTTP "
            "listener or `hosts` then)."
        ),
    ] = None
    hosts: Annotated[
        list[str] | None,
        Doc(
            'Client: Host names (`"api.example.com"`, `"*.example.com"` for any subdomain) that '
            "select this route on the general listener; port ignored, exact names before wildcards."
        ),
    ] = None
    origins: Annotated[
        list[str] | None,
        Doc(
            "Server, required there except for `default`: `host:port` (or `unix:PATH`) of each "
            "origin of the pool."
        ),
    ] = None
    balance: Annotated[
        Balance | None,
        Doc(
            "Server: how a request picks among UP origins; `PeerHash` keeps each client "
            'identity on one origin. Unset: `"RoundRobin"`.'
        ),
    ] = None
    allowed_peers: Annotated[
        list[str] | None,
        Doc(
            "Server: certificate names (from `peer_hostname`) that may use this route; others "
            "get 403. Unset: every peer the server accepts."
        ),
    ] = None
    request_headers: Annotated[
        list[IdentityHeader] | None,
        Doc(
            "Server: headers set on each request to the origin: `X-Forwarded-For` (the address "
            "the client end saw), `X-Forwarded-Proto`, and the verified client certificate's "
            "`X-SSL-Subject`/`X-SSL-Issuer` (RFC 4514), `X-SSL-Serial` (hex), "
            "`X-SSL-Notbefore`/`X-SSL-Notafter` (RFC 3339) and `X-SSL-Cipher`. Any such header "
            "from the HTTP/1.1 client is removed first."
        ),
    ] = None
    paths: Annotated[list[PathRule] | None, Doc("Server: path rules, see `[[routes.paths]]`.")] = None
    health: Annotated[Health | None, Doc("Server: active probe, see `[routes.health]`.")] = None
    queue: Annotated[Queue | None, Doc("Server: pending queue, see `[routes.queue]`.")] = None

    @property
    def effective_balance(self) -> str:
        return self.balance if self.balance is not None else "RoundRobin"

    @property
    def effective_queue(self) -> Queue:
        return self.queue if self.queue is not None else Queue()


_CLIENT_ROUTE_FIELDS = ("http_bind_address", "tcp_bind_address", "hosts")
_SERVER_ROUTE_FIELDS = (
    "origins", "balance", "allowed_peers", "request_headers", "paths", "health", "queue",
)


def _check_host_pattern(text: str) -> None:
    name = text[2:] if text.startswith("*.") else text
    labels = name.split(".")
    if not name or any(not re.fullmatch(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", x) for x in labels):
        raise ValueError(f"{text!r} is not a host name or a wildcard like \"*.example.com\"")


def _check_origins(field: str, origins: list[str] | None) -> None:
    if origins is None:
        return
    if not origins:
        raise ValueError(f"{field}: an empty pool; list at least one `host:port`")
    for address in origins:
        _check_socket_address(field, address, require_ip=False)


def _check_route(mode: str, route: Route, peers: list[str]) -> None:
    """One route's fields for this end; messages start with the field (prefixed by the caller)."""
    mine, other = (
        (_CLIENT_ROUTE_FIELDS, _SERVER_ROUTE_FIELDS)
        if mode == "Client"
        else (_SERVER_ROUTE_FIELDS, _CLIENT_ROUTE_FIELDS)
    )
    for field in other:
        if getattr(route, field) is not None:
            raise ValueError(f"{field}: not allowed in {mode} mode")
    if mode == "Client":
        if route.name == "default":
            raise ValueError('name: "default" is the general listener\'s route; choose another name')
        if route.tcp_bind_address is not None:
            if route.http_bind_address is not None or route.hosts is not None:
                raise ValueError(
                    "tcp_bind_address: a TCP stream route has no `http_bind_address` or `hosts`"
                )
            _check_socket_address("tcp_bind_address", route.tcp_bind_address, require_ip=True)
            return
        if route.http_bind_address is None and route.hosts is None:
            raise ValueError(
                "http_bind_address: a client route needs a listener (`http_bind_address` or "
                "`tcp_bind_address`), `hosts`, or both"
            )
        _check_socket_address("http_bind_address", route.http_bind_address, require_ip=True)
        if route.hosts is not None:
            if not route.hosts:
                raise ValueError("hosts: an empty list; omit it or name at least one host")
            for host in route.hosts:
                try:
                    _check_host_pattern(host)
                except ValueError as exc:
                    raise ValueError(f"hosts: {exc}") from None
        return
    if route.name == "default":
        if route.origins is not None:
            raise ValueError("origins: the default route's origins are [general] http_connect_address")
    elif route.origins is None:
        raise ValueError("origins: required for a server route (a pool of `host:port`)")
    _check_origins("origins", route.origins)
    for i, rule in enumerate(route.paths or []):
        if not rule.prefix.startswith("/"):
            raise ValueError(f"paths[{i}].prefix: must start with '/', got {rule.prefix!r}")
        if rule.rewrite is not None and not rule.rewrite.startswith("/"):
            raise ValueError(f"paths[{i}].rewrite: must start with '/', got {rule.rewrite!r}")
        _check_origins(f"paths[{i}].origins", rule.origins)
    if route.health is not None and not route.health.path.startswith("/"):
        raise ValueError(f"health.path: must start with '/', got {route.health.path!r}")
    if route.allowed_peers is not None:
        if not route.allowed_peers:
            raise ValueError("allowed_peers: an empty list would refuse every peer; omit it to allow all")
        for peer in route.allowed_peers:
            if peer not in peers:
                raise ValueError(f"allowed_peers: {peer!r} is not one of peer_hostname {peers}")
    _check_nonempty_list("request_headers", route.request_headers)


def check_routes(config: "Config") -> None:
    """Cross-field rules of ``[[routes]]``; raises ``ValueError`` naming ``routes[i].field``."""
    mode = config.general.mode
    seen: dict[str, int] = {}
    binds: dict[str, str] = {}
    if mode == "Client":
        binds[str(parse_socket_address(config.general.effective_http_bind_address, require_ip=True))] = (
            "[general] http_bind_address"
        )
    hosts: dict[str, str] = {}
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if route.name in seen:
            raise ValueError(f"{where}.name: {route.name!r} is also routes[{seen[route.name]}]")
        seen[route.name] = i
        try:
            _check_route(mode, route, config.general.peer_hostnames)
        except ValueError as exc:
            raise ValueError(f"{where}.{exc}") from None
        for field in ("http_bind_address", "tcp_bind_address"):
            address = getattr(route, field)
            if address is None:
                continue
            key = str(parse_socket_address(address, require_ip=True))
            if key in binds:
                raise ValueError(f"{where}.{field}: {address} is also {binds[key]}")
            binds[key] = f"routes[{i}].{field}"
        for host in route.hosts or []:
            if host.lower() in hosts:
                raise ValueError(f"{where}.hosts: {host!r} is also in {hosts[host.lower()]}")
            hosts[host.lower()] = f"routes[{i}].hosts"
    if config.system.request_headers is not None:
        if mode != "Server":
            raise ValueError("system.request_headers: only allowed in Server mode")
        _check_nonempty_list("system.request_headers", config.system.request_headers)


class Metrics(_Section, kw_only=True, frozen=True):
    """Optional table (extension): metrics HTTP endpoint; off when the table is absent."""

    bind_address: Annotated[str, Doc("Socket address (`ip:port`) of the metrics listener.")]

    def __post_init__(self) -> None:
        _check_socket_address("bind_address", self.bind_address, require_ip=True, unix=False)

    @property
    def bind(self) -> tuple[str, int]:
        """``(ip, port)`` to listen on (brackets removed)."""
        return parse_socket_address(self.bind_address, require_ip=True)


class Config(_Section, kw_only=True, frozen=True):
    """The whole file. ``source`` is not a TOML key: ``load``/``parse`` set it to the file."""

    general: General
    tls: Tls
    transport: Transport = msgspec.field(default_factory=Transport)
    system: System = msgspec.field(default_factory=System)
    limits: Limits = msgspec.field(default_factory=Limits)
    metrics: Metrics | None = None
    routes: list[Route] = msgspec.field(default_factory=list)
    source: Path = Path()

    def route(self, name: str) -> Route | None:
        """The ``[[routes]]`` entry named ``name``, if any."""
        return next((r for r in self.routes if r.name == name), None)


_SECTIONS: dict[str, type[_Section]] = {
    "general": General,
    "tls": Tls,
    "transport": Transport,
    "system": System,
    "limits": Limits,
    "metrics": Metrics,
    "routes": Route,
    "routes.paths": PathRule,
    "routes.health": Health,
    "routes.queue": Queue,
}


def _dec_hook(tp: type, value: Any) -> Any:
    # Path is not a msgspec-native type; TOML gives it as a string.
    if tp is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"Expected `str`, got `{type(value).__name__}`")


def _literals(tp: Any) -> tuple[Any, ...]:
    """The choices of a Literal field, also inside ``Optional`` and ``list``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Literal:
            return typing.get_args(tp)
        if origin is Annotated or origin is list:
            tp = typing.get_args(tp)[0]
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return ()
        tp = args[0]


# msgspec speaks JSON type names; users wrote TOML.
_TYPE_WORDS = {"object": "table", "str": "string", "int": "integer", "bool": "boolean"}


def _translate(msg: str, raw: dict[str, Any]) -> str:
    """Turn msgspec's ``Problem - at `$.a.b``` into ``a.b: problem`` in TOML terms."""
    m = re.fullmatch(r"(.*?)(?: - at `\$((?:\.\w+|\[\d+\])*)`)?", msg, re.S)
    assert m is not None
    problem = m.group(1)
    # Keys and list indexes, e.g. `$.routes[0].balance` -> ["routes", 0, "balance"].
    path: list[str | int] = [
        int(p[1:-1]) if p.startswith("[") else p[1:]
        for p in re.findall(r"\.\w+|\[\d+\]", m.group(2) or "")
    ]

    def where(*more: str | int) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in [*path, *more]).lstrip(".")

    if (u := re.fullmatch(r"Object contains unknown field `(.+)`", problem)) is not None:
        return where(u.group(1)) + ": unknown field"
    if (u := re.fullmatch(r"Object missing required field `(.+)`", problem)) is not None:
        return where(u.group(1)) + ": required"
    # __post_init__ messages begin with the offending field of that section.
    if (u := re.fullmatch(r"(\w+): (.*)", problem, re.S)) is not None and path:
        return where(u.group(1)) + ": " + u.group(2)
    got: Any = raw  # the offending value, to echo it back
    for part in path:
        if isinstance(part, int):
            got = got[part] if isinstance(got, list) and part < len(got) else None
        else:
            got = got.get(part) if isinstance(got, dict) else None
    # Every enum is a section field, so the Literal is found in that section's hints.
    keys = [p for p in path if isinstance(p, str)]
    section = ".".join(keys[:-1])
    if problem.startswith("Invalid enum value") and section in _SECTIONS:
        hints = typing.get_type_hints(_SECTIONS[section], include_extras=True)
        if choices := _literals(hints.get(keys[-1])):
            listed = ", ".join(json.dumps(c) for c in choices)
            return f"{where()}: expected one of {listed}, got {json.dumps(got)}"
    problem = re.sub(r"`(\w+)`", lambda w: _TYPE_WORDS.get(w.group(1), w.group(1)), problem)
    problem = problem[:1].lower() + problem[1:]
    if "got" not in problem and isinstance(got, (int, float, str)):
        problem += f", got {json.dumps(got)}"
    return f"{where() or '(top level)'}: {problem}"


def _resolve_unix(field: str, text: str, base: Path) -> str:
    """``unix:PATH`` made absolute against ``base``; any other address unchanged."""
    if not text.startswith(UNIX_PREFIX) or len(text) == len(UNIX_PREFIX):
        return text  # not a UNIX socket, or an empty path the field's own check reports
    resolved = UNIX_PREFIX + str(base / text[len(UNIX_PREFIX) :])
    size = len(os.fsencode(resolved[len(UNIX_PREFIX) :]))
    if size > _MAX_UNIX_PATH:
        raise ValueError(
            f"{field}: {resolved} is {size} bytes long; a UNIX socket path may have at most "
            f"{_MAX_UNIX_PATH}"
        )
    return resolved


def _resolve_list(field: str, value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_resolve_unix(field, v, base) for v in value]
    return None if value is None else _resolve_unix(field, value, base)


def _resolve_unix_addresses(config: Config, base: Path) -> Config:
    """Every ``unix:`` listener and origin address made absolute (ValueError naming the field)."""
    general = msgspec.structs.replace(
        config.general,
        http_bind_address=_resolve_list("general.http_bind_address", config.general.http_bind_address, base),
        http_connect_address=_resolve_list(
            "general.http_connect_address", config.general.http_connect_address, base
        ),
    )
    routes = []
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        paths = [
            msgspec.structs.replace(rule, origins=_resolve_list(f"{where}.paths[{j}].origins", rule.origins, base))
            for j, rule in enumerate(route.paths or [])
        ]
        routes.append(
            msgspec.structs.replace(
                route,
                http_bind_address=_resolve_list(f"{where}.http_bind_address", route.http_bind_address, base),
                tcp_bind_address=_resolve_list(f"{where}.tcp_bind_address", route.tcp_bind_address, base),
                origins=_resolve_list(f"{where}.origins", route.origins, base),
                paths=paths if route.paths is not None else None,
            )
        )
    return msgspec.structs.replace(config, general=general, routes=routes)


def parse(text: str | bytes, *, path: Path) -> Config:
    """Decode and validate a config document; ``path`` names it in errors and anchors relative
    paths. Raises ``ConfigError`` with a one-line message."""
    path = Path(path)
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        raw = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        where = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", msg)
        if where:
            msg = f"line {where.group(2)}: invalid TOML: {where.group(1)} (column {where.group(3)})"
        else:
            msg = f"invalid TOML: {msg}"
        raise ConfigError(f"{path}: {msg}") from None
    if "source" in raw:  # a Struct field, but not a key the file may set
        raise ConfigError(f"{path}: source: unknown field")
    try:
        config = msgspec.convert(raw, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_translate(str(exc), raw)}") from None
    # Relative paths mean "next to the config file" (as in the Rust original); resolve them once
    # here, against an absolute directory so a later chdir cannot change their meaning.
    base = path.absolute().parent
    try:
        # UNIX socket paths first, so check_routes sees two spellings of one path as one.
        config = _resolve_unix_addresses(config, base)
        check_routes(config)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    def rel(p: Path | None) -> Any:
        return None if p is None else base / p

    tls = msgspec.structs.replace(
        config.tls,
        ca=rel(config.tls.ca),
        cert=rel(config.tls.cert),
        key=rel(config.tls.key),
        ticket_key_file=rel(config.tls.ticket_key_file),
    )
    system = msgspec.structs.replace(config.system, qlog_dir=rel(config.system.qlog_dir))
    return msgspec.structs.replace(config, tls=tls, system=system, source=path)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file at ``path``. Raises ``ConfigError`` (one line)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse(data, path=p)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated and typing.get_args(tp)[0] is str:
        pattern = next((m.pattern for m in typing.get_args(tp)[1:] if isinstance(m, Meta) and m.pattern), None)
        if pattern is not None:
            return f"string (`{pattern}`)"
    while typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tp, metas = args[0], [a for a in args[1:] if isinstance(a, Meta)]
        bounds = [(m.ge, m.gt, m.le) for m in metas if (m.ge, m.gt, m.le) != (None, None, None)]
        if bounds:
            ge, gt, le = bounds[0]
            lo = f">= {ge}" if ge is not None else f"> {gt}" if gt is not None else ""
            rng = f"{ge}..{le}" if ge is not None and le is not None else lo or f"<= {le}"
            return f"{_type_name(tp)} ({rng})"
    if typing.get_origin(tp) is Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(tp))
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(args[0])}"
    if isinstance(tp, type) and issubclass(tp, _Section):
        return "table"
    if type(None) in args and len(args) > 2:  # str | list[str] | None
        rest = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(rest) + ", optional"
    if len(args) == 2 and type(None) not in args and typing.get_origin(tp) is not Literal:
        return " or ".join(_type_name(a) for a in args)
    if type(None) in args:
        return _type_name(next(a for a in args if a is not type(None))) + ", optional"
    return {Path: "path", str: "string", int: "integer", float: "float", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _default_text(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    value = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
    if value is None:
        return "unset"
    return f"`{json.dumps(value)}`"


def render_reference() -> str:
    """Markdown reference of every section and field, generated from the Structs."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from ptproxy/ops/config.py; do not edit. Regenerate with:",
        "     python -m ptproxy.ops.config > docs/config.md -->",
        "",
        "TOML. Relative paths resolve against the directory of the file. Unknown fields are "
        "errors. Durations are integer milliseconds.",
    ]
    for name, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls, include_extras=True)
        heading = f"[[{name}]]" if name in ("routes", "routes.paths") else f"[{name}]"
        doc = " ".join((cls.__doc__ or "").split())
        out += ["", f"## `{heading}`", "", doc, ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for f in msgspec.structs.fields(cls):
            tp = hints[f.name]
            metas = [a for a in typing.get_args(tp)[1:] if isinstance(a, Meta)]
            doc = next((m.description for m in metas if m.description), "")
            out.append(f"| `{f.name}` | {_type_name(tp)} | {_default_text(f)} | {doc} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m ptproxy.ops.config > docs/config.md
    sys.stdout.write(render_reference())
