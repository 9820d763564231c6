"""A UDP socket on the event loop, read and written in batches through :mod:`ptproxy.tunnel.udpio`.

asyncio's datagram transport makes one system call and one protocol callback per datagram. Here the
socket is registered with ``loop.add_reader`` and drained with ``recv_batch`` (``recvmmsg`` and UDP
GRO with the compiled twin), and each transmit of a session goes out as one ``send_batch``
(``sendmmsg`` / UDP GSO). Without the compiled twin the pure one loops over ``recvfrom`` /
``sendto``: the same contract, so this module does not care which one runs.

A full socket buffer is not an error: what did not fit waits in a small bounded queue, flushed when
the socket is writable again; beyond the bound datagrams are dropped and counted (QUIC treats them
as lost and retransmits).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from ptproxy.tunnel import udpio

__all__ = ["DatagramSocket", "udp_features", "udp_implementation"]

logger = logging.getLogger("ptproxy.tunnel")

# Datagrams per recv_batch call, and calls per readable event: a flood on one socket must not keep
# the loop from everything else for long (asyncio's transport reads one datagram per event).
RECV_BATCH = 64
RECV_ROUNDS = 4
# Room for one GRO-glued super-datagram (the kernel glues up to 64 KiB).
RECV_BUFSIZE = 65535
# Datagrams kept while the socket buffer is full: about a congestion window's burst.
SEND_QUEUE_LIMIT = 512

_logged = False


def udp_features() -> dict[str, bool]:
    """What the batched I/O uses on this machine (``recvmmsg``, ``sendmmsg``, ``gso``, ``gro``)."""
    return dict(udpio.capabilities())


def udp_implementation() -> str:
    """Which twin does the batched UDP I/O: ``compiled`` or ``pure``."""
    return str(udpio.IMPLEMENTATION)


def _log_features_once() -> None:
    global _logged
    if not _logged:
        _logged = True
        on = [name for name, used in udp_features().items() if used]
        logger.debug("UDP I/O: %s twin, using %s", udpio.IMPLEMENTATION, ", ".join(on) or "one call per datagram")


class DatagramSocket:
    """Batched reads into ``on_datagram(data, addr)``; batched writes with :meth:`send`.

    ``on_error`` gets the OSError a read or write reported for the socket (e.g. ICMP port
    unreachable as ConnectionRefusedError on a connected socket), as asyncio's
    ``error_received`` did.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Any], None],
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        _log_features_once()
        self.sock = sock
        self._fd = sock.fileno()
        self._on_datagram = on_datagram
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._writing = False
        self.closed = False
        self.dropped = 0  # datagrams dropped with the send queue full
        self.gro = udpio.enable_gro(sock)
        sock.setblocking(False)
        self._loop.add_reader(self._fd, self._readable)

    # -- reading ------------------------------------------------------------------------------

    def _readable(self) -> None:
        sock, deliver = self.sock, self._on_datagram
        for round_ in range(RECV_ROUNDS):
            try:
                batch = udpio.recv_batch(sock, RECV_BATCH, RECV_BUFSIZE)
            except BlockingIOError:
                if round_ == 0:
                    # Woken with nothing to read: a POLLERR whose error a send already took.
                    self._rearm_reader()
                return
            except OSError as exc:  # reported for the socket, not for a datagram: read on
                self._error(exc)
                self._rearm_reader()
                continue
            for data, addr in batch:
                deliver(data, addr)
                if self.closed:  # a handler closed us (session over): the fd is gone
                    return
            if len(batch) < RECV_BATCH:
                return

    def pause_reading(self) -> None:
        """Stop reading (another process reads this socket for now); sending goes on."""
        if not self.closed:
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        """Read again (what arrived meanwhile waits in the socket's buffer)."""
        self._rearm_reader()

    def _rearm_reader(self) -> None:
        # A socket error (an ICMP port unreachable on a connected socket) arrives as POLLERR,
        # and libuv stops polling the fd for reading when it sees one: without registering the
        # reader again the socket would go deaf after the first ICMP error.
        if not self.closed:
            self._loop.remove_reader(self._fd)
            self._loop.add_reader(self._fd, self._readable)

    def _error(self, exc: OSError) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        else:
            logger.debug("UDP socket error: %s", exc)

    # -- writing ------------------------------------------------------------------------------

    def send(self, datagrams: list[bytes], addr: Any) -> None:
        """Send ``datagrams`` to ``addr`` (``None``: the connected peer) in order, now or once the
        socket buffer has room."""
        if self.closed or not datagrams:
            return
        if self._queue:  # keep the order: behind what is already waiting
            self._enqueue(datagrams, 0, addr)
            return
        try:
            sent = udpio.send_batch(self.sock, datagrams, addr)
        except OSError as exc:  # the first datagram failed: lost, QUIC recovers or times out
            self._error(exc)
            return
        if sent < len(datagrams):
            self._enqueue(datagrams, sent, addr)

    def _enqueue(self, datagrams: list[bytes], start: int, addr: Any) -> None:
        queue = self._queue
        for data in datagrams[start:]:
            if len(queue) >= SEND_QUEUE_LIMIT:
                self.dropped += 1
            else:
                queue.append((data, addr))
        if queue and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        queue = self._queue
        while queue:
            addr = queue[0][1]
            run: list[bytes] = []
            for data, to in queue:  # the leading run of datagrams to one address
                if to != addr or len(run) >= udpio.MAX_SEGMENTS:
                    break
                run.append(data)
            try:
                sent = udpio.send_batch(self.sock, run, addr)
            except OSError as exc:
                sent = 1  # this one is lost; go on with the rest
                self._error(exc)
            for _ in range(sent):
                queue.popleft()
            if sent < len(run):
                return  # still full: wait for the next writable event
        self._writing = False
        self._loop.remove_writer(self._fd)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._queue.clear()
        self.sock.close()
