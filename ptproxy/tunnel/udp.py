"""UDP sockets for the tunnel: address family, buffer sizes (with a warning when clamped)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["open_udp_socket", "BufferSizes", "RouteMtus", "route_mtu", "route_mtu_to"]

logger = logging.getLogger("ptproxy.tunnel")


# SO_RCVBUF asked for when ``socket_receive_buffer_size`` is unset. The OS default (212992 bytes on
# Linux, ~17 ms at 100 Mbit/s) overflows whenever the event loop is late by that much (a busy CPU):
# on the linkbench link (50 ms, 100 Mbit/s) the client end dropped 150-1600 datagrams per 10 MiB
# download at load average ~2 on 2 cores, each one a loss to the sender (BBR's recovery, a hole
# holding the flow-control credit). Asked for quietly: the OS caps it at net.core.rmem_max.
DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024


class BufferSizes:
    """Requested SO_RCVBUF / SO_SNDBUF sizes (None: the OS default for sending, and
    DEFAULT_RECEIVE_BUFFER, capped by the OS without a warning, for receiving)."""

    __slots__ = ("receive", "send")

    def __init__(self, receive: int | None, send: int | None) -> None:
        self.receive = receive
        self.send = send


def _family_for(bind_address: str, remote_family: int | None) -> tuple[int, str]:
    ip = ipaddress.ip_address(bind_address)
    if remote_family == socket.AF_INET and ip.version == 6 and ip.is_unspecified:
        # "::" towards an IPv4 peer: a plain IPv4 socket is simpler than v4-mapped addresses.
        return socket.AF_INET, "0.0.0.0"
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), bind_address


def _apply_buffer(sock: socket.socket, option: int, name: str, requested: int | None) -> None:
    if requested is None:
        if option == socket.SO_RCVBUF:
            _raise_receive_buffer(sock)
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, requested)
    except OSError as exc:
        logger.warning("setting %s to %d failed: %s", name, requested, exc)
        return
    # Linux reports twice the usable size (bookkeeping overhead): compare against half.
    granted = sock.getsockopt(socket.SOL_SOCKET, option) // 2
    if granted < requested:
        logger.warning(
            "%s: requested %d bytes, the OS granted %d (raise net.core.%s_max)",
            name,
            requested,
            granted,
            "rmem" if option == socket.SO_RCVBUF else "wmem",
        )


def _raise_receive_buffer(sock: socket.socket) -> None:
    """Unset size: ask for DEFAULT_RECEIVE_BUFFER unless the socket already has as much."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 >= DEFAULT_RECEIVE_BUFFER:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DEFAULT_RECEIVE_BUFFER)
    except OSError as exc:
        logger.debug("raising SO_RCVBUF to %d failed: %s", DEFAULT_RECEIVE_BUFFER, exc)
        return
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < DEFAULT_RECEIVE_BUFFER:
        logger.debug("SO_RCVBUF: %d bytes (net.core.rmem_max caps the %d asked for)", granted, DEFAULT_RECEIVE_BUFFER)


# Linux's values (<linux/in.h>, <linux/in6.h>); the socket module names only some of them.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_PROBE = 3  # IP_PMTUDISC_PROBE / IPV6_PMTUDISC_PROBE


# Linux's IP_MTU / IPV6_MTU (<linux/in.h>, <linux/in6.h>): the MTU of a connected socket's route.
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def route_mtu(sock: socket.socket) -> int | None:
    """The MTU of the route a connected UDP socket sends on, as the kernel knows it (Linux), else
    ``None`` (another system, not connected). An upper bound for path MTU discovery (pmtu.py):
    a hop beyond the first link may carry less."""
    if sock.family == socket.AF_INET6:
        option = (socket.IPPROTO_IPV6, IPV6_MTU)  # IPv4-mapped peers too
    elif sock.family == socket.AF_INET:
        option = (socket.IPPROTO_IP, IP_MTU)
    else:
        return None
    try:
        mtu = sock.getsockopt(*option)
    except OSError:
        return None
    return mtu if mtu > 0 else None


def route_mtu_to(addr: tuple[object, ...]) -> int | None:
    """:func:`route_mtu` towards ``addr`` (a socket address: 2-tuple IPv4, 4-tuple IPv6) for an
    unconnected socket (a server end's): a throwaway socket connected to it (no packet is sent).
    ``None`` where unknown."""
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(addr)
            return route_mtu(probe)
    except (OSError, ValueError, TypeError, OverflowError):
        return None


class RouteMtus:
    """:func:`route_mtu_to` remembered per peer host (a server end's new connections).

    The lookup opens, connects and closes a socket: four system calls and ~0.6 ms of a cold
    process on the path of a reconnecting client's first flight (linkbench blackout, perf trace
    of the server end), for an answer that is the same for every connection from that host. At
    most ``limit`` hosts are kept (then forgotten together): a flood of strangers costs what it
    did. A stale value after a route change only bounds the path MTU search, which confirms
    every size with a probe anyway."""

    __slots__ = ("_known", "_limit", "_lookup")

    def __init__(self, limit: int = 1024, lookup: Callable[[tuple[Any, ...]], int | None] | None = None) -> None:
        self._known: dict[tuple[Any, ...], int | None] = {}
        self._limit = limit
        self._lookup = lookup or route_mtu_to

    def __call__(self, addr: tuple[Any, ...]) -> int | None:
        # The host (and an IPv6 scope): the port does not choose the route.
        key = (addr[0], addr[3]) if len(addr) == 4 else addr[:1]
        try:
            return self._known[key]
        except KeyError:
            pass
        except TypeError:  # unhashable: not an address we can remember
            return self._lookup(addr)
        mtu = self._lookup(addr)
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[key] = mtu
        return mtu


def _never_fragment(sock: socket.socket) -> None:
    """Set Don't Fragment on every datagram, ignoring the kernel's path MTU cache.

    QUIC sizes its own datagrams (RFC 9000 §14): a datagram too large for the path must be lost,
    not split into IP fragments, or path MTU discovery (pmtu.py) would confirm sizes the path only
    carries in pieces, and each lost fragment would lose the whole datagram. The "probe" mode also
    lets a probe larger than a cached path MTU leave at all (RFC 8899 §4.4). Not Linux: left as
    the system has it."""
    options = [(socket.IPPROTO_IP, IP_MTU_DISCOVER)]
    if sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER))  # IPv4-mapped peers keep the first
    for level, option in options:
        try:
            sock.setsockopt(level, option, PMTUDISC_PROBE)
        except OSError:
            pass


def open_udp_socket(
    bind_address: str,
    port: int,
    buffers: BufferSizes,
    remote_family: int | None = None,
    *,
    inherited: socket.socket | None = None,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind_address:port`` (dual-stack when ``::``).

    ``inherited``: a socket already bound (socket activation, a hand-off) to use instead; only
    the buffer sizes are applied to it."""
    if inherited is not None:
        _apply_buffer(inherited, socket.SO_RCVBUF, "socket_receive_buffer_size", buffers.receive)
        _apply_buffer(inherited, socket.SO_SNDBUF, "socket_send_buffer_size", buffers.send)
        _never_fragment(inherited)
        inherited.setblocking(False)
        return inherited
    family, host = _family_for(bind_address, remote_family)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # Accept IPv4 too when bound to "::" (the default), like the original.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        _apply_buffer(sock, socket.SO_RCVBUF, "socket_receive_buffer_size", buffers.receive)
        _apply_buffer(sock, socket.SO_SNDBUF, "socket_send_buffer_size", buffers.send)
        _never_fragment(sock)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
