"""Health of one origin: UP or DOWN, from failed connections (passive) and probes (active).

:class:`OriginHealth` is the state machine, sans-IO: every input carries ``now`` (monotonic
seconds), so tests drive it with a fake clock. Passive marking is always on: a refused or timed-out
connection marks the origin DOWN at once. Without an active probe a DOWN origin is retried with
exponential backoff (1 s doubling to 30 s): once the backoff has passed, one request may try it,
and success brings it back UP. With ``[routes.health]`` only the probe brings it back (``up_after``
consecutive good probes) and ``down_after`` consecutive failed probes take an UP origin DOWN.

:func:`probe` is the one piece of I/O here: ``GET path`` on a fresh connection, a status below
500 within the timeout is healthy.
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

from ptproxy.addr import UNIX_PREFIX
from ptproxy.ops.config import Health

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "OriginHealth", "State", "probe"]

State = Literal["UP", "DOWN"]
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0


class OriginHealth:
    """UP/DOWN of one origin; each input returns the new state when it changed, else None."""

    def __init__(
        self, active: Health | None = None, *, backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX
    ) -> None:
        self.state: State = "UP"  # optimistic: a fresh origin is tried, and marked on failure
        self.active = active
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._backoff = 0.0
        self._retry_at = 0.0
        self._trial = False
        self._good_probes = 0
        self._bad_probes = 0

    @property
    def up(self) -> bool:
        return self.state == "UP"

    def available(self, now: float) -> bool:
        """May a request use this origin now? UP, or DOWN (passive only) with its backoff over."""
        return self.up or (self.active is None and now >= self._retry_at)

    def retry_in(self, now: float) -> float | None:
        """Seconds until :meth:`available` may turn true by itself (None: only a probe can)."""
        if self.up or self.active is not None:
            return None
        return max(0.0, self._retry_at - now)

    def chosen(self, now: float) -> None:
        """A request is about to try this origin. A DOWN one gets one trial per backoff period,
        so a crowd of waiting requests does not stampede an origin that may still be dead."""
        if not self.up and self.active is None:
            self._trial = True
            self._retry_at = now + self._backoff

    def connect_failed(self, now: float) -> State | None:
        """A connection to the origin was refused or timed out."""
        self._good_probes = 0
        if self.up:
            self.state = "DOWN"
            self._backoff = self._backoff_min
            self._retry_at = now + self._backoff
            self._trial = False
            return "DOWN"
        # Only a failed trial doubles the backoff: requests that were already connecting when
        # the origin went down fail too, and must not stretch it.
        if self._trial:
            self._trial = False
            self._backoff = min(self._backoff_max, self._backoff * 2)
            self._retry_at = now + self._backoff
        return None

    def connected(self, now: float) -> State | None:
        """A connection to the origin succeeded. Brings it UP only without an active probe (with
        one, ``up_after`` good probes decide)."""
        if self.up or self.active is not None:
            return None
        return self._mark_up()

    def probe_result(self, ok: bool, now: float) -> State | None:
        """One active probe ended: ``ok`` when it answered below 500 in time."""
        assert self.active is not None
        if ok:
            self._good_probes += 1
            self._bad_probes = 0
            if not self.up and self._good_probes >= self.active.up_after:
                return self._mark_up()
            return None
        self._bad_probes += 1
        self._good_probes = 0
        if self.up and self._bad_probes >= self.active.down_after:
            self.state = "DOWN"
            return "DOWN"
        return None

    def _mark_up(self) -> State:
        self.state = "UP"
        self._trial = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._bad_probes = 0
        return "UP"


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


async def probe(host: str, port: int, path: str, timeout: float) -> str | None:
    """``GET path`` on a new connection; None when healthy, else why not (for the log)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            if host.startswith(UNIX_PREFIX):
                # A UNIX socket origin has no authority of its own to name.
                reader, writer = await asyncio.open_unix_connection(host[len(UNIX_PREFIX) :])
                authority = "localhost"
            else:
                reader, writer = await asyncio.open_connection(host, port)
                authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ptproxy-probe\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except TimeoutError:
        return f"probe timed out after {timeout:g}s"
    except OSError as exc:
        return f"probe failed: {describe_os_error(exc)}"
    finally:
        if writer is not None:
            writer.close()
    m = _STATUS_LINE.match(line)
    if m is None:
        return "probe got no HTTP response" if not line else f"probe got {line[:40]!r}"
    status = int(m.group(1))
    return None if status < 500 else f"probe answered {status}"


def describe_os_error(exc: OSError) -> str:
    """``connection refused`` rather than ``[Errno 111] Connect call failed ('127.0.0.1', 9)``."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
