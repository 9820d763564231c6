"""Keep-alive HTTP/1.1 connections to one origin (of a route's pool).

Idle connections are reused most-recently-used first (the warmest TCP window, the least likely to
have been closed by the origin's own idle timer) and evicted after ``origin_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time

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

    def release(self, conn: H1Connection) -> None:
        """Return a connection whose last exchange completed cleanly."""
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
        for conn, since in self._idle:
            if now - since >= self._idle_timeout or not self._usable(conn):
                conn.close()
            else:
                keep.append((conn, since))
        self._idle = keep
        if keep:
            delay = max(0.0, keep[0][1] + self._idle_timeout - now)
            self._reaper = asyncio.get_running_loop().call_later(delay, self._evict)

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()
