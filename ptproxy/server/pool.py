"""Keep-alive HTTP/1.1 connections to one origin (of a route's pool).

Idle connections are reused most-recently-used first (the warmest TCP window, the least likely to
have been closed by the origin's own idle timer) and evicted after ``origin_idle_timeout``.

A pool may also open a connection ahead of the requests (:meth:`OriginPool.warm`: the server end
does when a peer's session is established), so the first request after start-up does not wait for
a TCP handshake with the origin; and while ``keep_warm`` says so (a session is up), the last idle
connection that the reaper closes for its age, and that the origin had kept open, is replaced by a
fresh one, so a request after a long silence finds one too. There is never more than one such
connection being opened per pool; a request that finds it still connecting takes it over (and
meets its outcome, the error a connection of its own would have met). A failure no request waited
for is only logged (at debug), never counted against the origin's health: the next request
connects as it would have, and reports what it finds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ptproxy.addr import UNIX_PREFIX, format_address
from ptproxy.errors import UpstreamError
from ptproxy.h1conn import H1Connection

__all__ = ["OriginConnectError", "OriginPool"]

logger = logging.getLogger("ptproxy.origin")


class OriginConnectError(UpstreamError):
    """A connection to the origin was refused or timed out: nothing of the request was sent, so
    another origin may take it, and this one is marked DOWN. ``reason`` is for the state log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class OriginPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tcp_nodelay: bool,
        max_idle: int,
        idle_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self._tcp_nodelay = tcp_nodelay
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._idle: list[tuple[H1Connection, float]] = []
        self._address: str | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._warming: asyncio.Task[H1Connection] | None = None
        self._closed = False
        # While it returns True, an idle connection closed for its age is replaced (see above).
        self.keep_warm: Callable[[], bool] | None = None
        self.served = False  # an HTTP exchange has completed on one of its connections

    @property
    def address(self) -> str:
        # Made once: every request passes it along (for its error messages).
        address = self._address
        if address is None:
            address = self._address = format_address((self.host, self.port))
        return address

    def _usable(self, conn: H1Connection) -> bool:
        return not conn.is_closed and not conn.at_eof and not conn.has_buffered_input()

    async def acquire(self) -> H1Connection:
        """A connection to the origin, an idle one if any is usable. Raises UpstreamError (502)."""
        conn = self.take_idle()
        if conn is not None:
            return conn
        warming = self._warming
        if warming is not None:
            # A connection ahead of the requests is on its way: this request takes it (its
            # handshake started earlier than a new one would), and meets its failure if it fails.
            self._warming = None
            return await warming
        return await self.connect()

    def take_idle(self) -> H1Connection | None:
        """The most recently used idle connection that is still usable (closing the stale ones
        passed over), else None."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < self._idle_timeout and self._usable(conn):
                return conn
            conn.close()
        return None

    async def connect(self) -> H1Connection:
        """A fresh connection (never an idle one). Raises OriginConnectError (502)."""
        loop = asyncio.get_running_loop()

        def factory() -> H1Connection:
            return H1Connection(tcp_nodelay=self._tcp_nodelay)

        # "unix:/path" (port 0): a UNIX socket origin; the request's Host header is unchanged.
        if self.host.startswith(UNIX_PREFIX):
            connecting = loop.create_unix_connection(factory, self.host[len(UNIX_PREFIX) :])
        else:
            connecting = loop.create_connection(factory, self.host, self.port)
        try:
            _, conn = await asyncio.wait_for(connecting, self._connect_timeout)
        except TimeoutError:
            reason = f"connect timed out after {self._connect_timeout:g}s"
            raise OriginConnectError(
                f"connecting to origin {self.address} timed out after {self._connect_timeout:g}s", reason
            ) from None
        except OSError as exc:
            text = exc.strerror or str(exc)
            raise OriginConnectError(
                f"connecting to origin {self.address} failed: {text}", text[:1].lower() + text[1:]
            ) from None
        return conn

    def warm(self) -> None:
        """Open one connection ahead of the requests, into the idle list, unless one is idle
        already, one is being opened, or the pool keeps none idle (``max_idle`` 0)."""
        if self._closed or self._max_idle == 0 or self._warming is not None:
            return
        if any(self._usable(conn) for conn, _ in self._idle):
            return
        task = asyncio.get_running_loop().create_task(self.connect())
        self._warming = task
        task.add_done_callback(self._warmed)

    def _warmed(self, task: asyncio.Task[H1Connection]) -> None:
        if self._warming is task:
            self._warming = None
        elif not self._closed:
            return  # a request took it (acquire) and meets its outcome
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # Not the origin's health: that is what requests (and probes) find.
            logger.debug("origin %s: no connection ahead of requests: %s", self.address, exc)
        elif self._closed:
            task.result().close()
        else:
            self._keep(task.result())

    def release(self, conn: H1Connection) -> None:
        """Return a connection whose last exchange completed cleanly."""
        self.served = True
        self._keep(conn)

    def _keep(self, conn: H1Connection) -> None:
        if not self._usable(conn):
            conn.close()
            return
        conn.parser = None
        self._idle.append((conn, time.monotonic()))
        while len(self._idle) > self._max_idle:
            old, _ = self._idle.pop(0)
            old.close()
        if self._reaper is None and self._idle:
            self._reaper = asyncio.get_running_loop().call_later(self._idle_timeout, self._evict)

    def _evict(self) -> None:
        """Close idle connections older than ``idle_timeout`` (or dead), so they do not linger
        until the next request; re-arm for the oldest one left."""
        self._reaper = None
        now = time.monotonic()
        keep = []
        aged = False  # one closed for its age, open at the origin's end until now
        for conn, since in self._idle:
            if not self._usable(conn):
                conn.close()
            elif now - since >= self._idle_timeout:
                aged = True
                conn.close()
            else:
                keep.append((conn, since))
        self._idle = keep
        if keep:
            delay = max(0.0, keep[0][1] + self._idle_timeout - now)
            self._reaper = asyncio.get_running_loop().call_later(delay, self._evict)
        elif aged and self.keep_warm is not None and self.keep_warm():
            self.warm()

    def close(self) -> None:
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
            self._warming = None
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()
