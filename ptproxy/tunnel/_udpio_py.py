"""Batched UDP I/O, pure-Python twin: one ``recvfrom`` / ``sendto`` per datagram.

The compiled twin (``ptproxy._speedups.udpio``) drains and sends many datagrams per system call with
``recvmmsg`` / ``sendmmsg`` and UDP GSO/GRO. This twin keeps the same contract with the portable calls,
so the caller's code is the same whichever twin the facade (``ptproxy.tunnel.udpio``) picked:

* sans event loop: the caller registers the socket with ``loop.add_reader`` and calls
  :func:`recv_batch` when it is readable, :func:`send_batch` when it has datagrams;
* ``fd`` is a file descriptor or anything with ``fileno()`` (a ``socket.socket``); passing the socket
  object saves this twin wrapping the descriptor on every call;
* addresses are in Python's socket form: ``(host, port)`` on IPv4 sockets, ``(host, port, flowinfo,
  scope_id)`` on IPv6 ones (``::ffff:a.b.c.d`` for IPv4 peers of a dual-stack socket) — what asyncio's
  datagram protocol delivers;
* hosts must be IP literals: name resolution has no place on the packet path.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Protocol

__all__ = ["MAX_SEGMENTS", "capabilities", "enable_gro", "recv_batch", "send_batch"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | _HasFileno
Address = Any  # (host, port) | (host, port, flowinfo, scope_id) | None (connected socket)

#: Most datagrams one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
MAX_SEGMENTS = 64

# MSG_DONTWAIT makes each call non-blocking even on a blocking socket, as the compiled twin's are.
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
# A full socket buffer: EAGAIN, or ENOBUFS from a full qdisc/device queue. Both mean "not now".
_NOT_NOW = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
# Beyond this, one call would be a monopoly on the loop; the compiled twin has the same bound.
_MAX_BATCH = 1024


def capabilities() -> dict[str, bool]:
    """What this twin uses: nothing batched (the compiled twin reports what the kernel offers)."""
    return {"recvmmsg": False, "sendmmsg": False, "gso": False, "gro": False}


def enable_gro(fd: FileLike) -> bool:
    """Never enables UDP GRO: ``recvfrom`` cannot see the segment size, so it could not split."""
    return False


def _as_socket(fd: FileLike) -> tuple[socket.socket, bool]:
    """The socket object for ``fd``, and whether it is a temporary wrapper to detach (not close)."""
    if isinstance(fd, socket.socket):
        return fd, False
    if not isinstance(fd, int):
        fd = fd.fileno()
    return socket.socket(fileno=fd), True


def recv_batch(
    fd: FileLike, max_datagrams: int = 64, bufsize: int = 65535
) -> list[tuple[bytes, Address]]:
    """Read up to ``max_datagrams`` queued datagrams; ``[]`` when none is queued.

    An error with nothing read raises (``ConnectionRefusedError`` for an ICMP port unreachable on a
    connected socket, as ``recvfrom`` does); after some datagrams it ends the batch instead.
    """
    if max_datagrams < 1:
        raise ValueError("max_datagrams must be at least 1")
    if bufsize < 1:
        raise ValueError("bufsize must be at least 1")
    sock, temporary = _as_socket(fd)
    out: list[tuple[bytes, Address]] = []
    try:
        recvfrom = sock.recvfrom
        for _ in range(min(max_datagrams, _MAX_BATCH)):
            try:
                out.append(recvfrom(bufsize, _DONTWAIT))
            except BlockingIOError:
                break
            except OSError:
                if not out:
                    raise
                break
    finally:
        if temporary:
            sock.detach()
    return out


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


def _is_ipv6(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except (OSError, ValueError):
        return False
    return True


_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96


def _normalize(family: int, address: Address) -> Address:
    """``address`` in the form ``family``'s socket takes: IPv4 peers of an IPv6 socket as v4-mapped,
    v4-mapped peers of an IPv4 socket as plain IPv4 (the two ways a dual-stack setup names a peer)."""
    if address is None:
        return None
    if not isinstance(address, tuple):
        raise TypeError(f"address must be a tuple or None, not {type(address).__name__}")
    if not 2 <= len(address) <= 4 or not isinstance(address[0], str):
        raise TypeError("address must be (host, port[, flowinfo[, scope_id]]) with a str host")
    host, port = address[0], address[1]
    if family == socket.AF_INET6:
        if _is_ipv4(host):
            return ("::ffff:" + host, port, *address[2:])
        if _is_ipv6(host):
            return address
    elif family == socket.AF_INET:
        if _is_ipv4(host):
            return address if len(address) == 2 else (host, port)
        if _is_ipv6(host):
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
            if packed[:12] == _V4_MAPPED_PREFIX:
                return (socket.inet_ntop(socket.AF_INET, packed[12:]), port)
            raise ValueError(f"an IPv6 address on an IPv4 socket: {host!r}")
    else:
        return address
    raise ValueError(f"not an IP address literal: {host!r}")


# The session sends to one peer: remember the last normalisation rather than re-parse per call.
_last_key: tuple[int, Address] | None = None
_last_normalized: Address = None


def send_batch(fd: FileLike, datagrams: list[bytes], address: Address, *, gso: bool = True) -> int:
    """Send ``datagrams`` in order to ``address`` (``None``: the connected peer); return how many went.

    Fewer than ``len(datagrams)`` means the socket buffer filled (EAGAIN/ENOBUFS) or a later datagram
    failed: the caller keeps the rest for later or drops them as loss (QUIC recovers). An error on the
    first datagram raises, as ``sendto`` would. ``gso`` is accepted for parity and ignored here.
    """
    global _last_key, _last_normalized
    if not datagrams:
        return 0
    sock, temporary = _as_socket(fd)
    try:
        key = (sock.family, address)
        if key == _last_key:
            target = _last_normalized
        else:
            target = _normalize(sock.family, address)
            _last_key, _last_normalized = key, target
        sent = 0
        if target is None:
            send = sock.send
            for data in datagrams:
                try:
                    send(data, _DONTWAIT)
                except OSError as exc:
                    if exc.errno in _NOT_NOW or sent:  # not now, or the next call reports it
                        return sent
                    raise
                sent += 1
        else:
            sendto = sock.sendto
            for data in datagrams:
                try:
                    sendto(data, _DONTWAIT, target)
                except OSError as exc:
                    if exc.errno in _NOT_NOW or sent:  # not now, or the next call reports it
                        return sent
                    raise
                sent += 1
        return sent
    finally:
        if temporary:
            sock.detach()
