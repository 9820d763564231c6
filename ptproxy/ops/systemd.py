"""systemd readiness, status and watchdog notifications (sd_notify(3) protocol).

Why not the ``sdnotify`` package (0.3.2): its source reads ``NOTIFY_SOCKET``
from ``os.environ`` only (no injectable mapping for tests), wraps every call in a bare ``except:``
that also swallows ``KeyboardInterrupt``/``SystemExit`` and hides failures unless ``debug=True``,
encodes Latin-1 (a ``STATUS=`` carrying a non-Latin-1 error text is dropped silently), keeps a
blocking socket (a stalled PID 1 would stall our event loop), and if the first ``connect`` fails it
never retries. The protocol is one datagram of ``KEY=VALUE`` lines on an ``AF_UNIX``/``SOCK_DGRAM``
socket, so the ~40 lines below are cheaper than working around all of that.

Without ``NOTIFY_SOCKET`` (not started by systemd, or by a plain ``Type=simple`` unit) every method
is a no-op, so the app calls them unconditionally.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "WatchdogSchedule", "run_watchdog"]

logger = logging.getLogger("ptproxy.systemd")

# Errors that mean "nobody is listening (any more)": the unit is not Type=notify after all, the
# manager went away, or its queue is full. None of them is a reason to stop proxying.
_QUIET_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTCONN, errno.EAGAIN})


def _socket_address(value: str) -> str | bytes:
    # "@name" is Linux's abstract namespace: the kernel name starts with a NUL byte (sd_notify(3)).
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a silent no-op when that is unset.

    Sending never raises: a lost notification must not take the proxy down. Failures are logged
    once (debug for "nobody listening", warning otherwise) so a misconfigured unit is diagnosable.
    """

    enabled: bool

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        self.enabled = bool(address)
        self._address: str | bytes | None = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._reported_failure = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Build from the variables systemd sets for the main process."""
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            watchdog_usec=environ.get("WATCHDOG_USEC"),
            watchdog_pid=environ.get("WATCHDOG_PID"),
        )

    # -- messages -------------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """``READY=1``: startup finished (and again after a reload). ``status`` rides along."""
        self._send_with_status({"READY": "1"}, status)

    def status(self, text: str) -> None:
        """``STATUS=``: one free-form line shown by ``systemctl status``."""
        self.send(STATUS=_one_line(text))

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: shutdown (drain) has begun."""
        self._send_with_status({"STOPPING": "1"}, status)

    def reloading(self) -> None:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` timestamp, as one datagram.

        systemd (``Type=notify-reload``, v253+) matches the reload to this timestamp, so both
        fields must arrive together. Send ``ready()`` when the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def main_pid(self, pid: int, status: str | None = None) -> None:
        """``MAINPID=``: the unit's main process is now ``pid`` (a SIGUSR2 hand-off), so systemd
        follows it instead of taking our exit for the service's end. Send no ``STOPPING=1``
        afterwards: with ``NotifyAccess=all`` it would stop the unit the new process serves."""
        self._send_with_status({"MAINPID": str(pid)}, status)

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
        self.send(WATCHDOG="1")

    def send(self, **fields: str) -> None:
        """Send ``fields`` as one datagram of ``KEY=VALUE`` lines, in argument order."""
        for key, value in fields.items():
            # The protocol is line-based; a newline would forge another assignment.
            if "\n" in value or "=" in key or "\n" in key:
                raise ValueError(f"invalid sd_notify field {key!r}={value!r}")
        if not self.enabled or not fields:
            return
        payload = "".join(f"{key}={value}\n" for key, value in fields.items()).encode()
        try:
            sock = self._connected()
            sock.send(payload)
        except OSError as exc:
            self._report(exc)
            # Reconnect next time: the manager may have re-created the socket (daemon-reexec).
            self.close()

    def close(self) -> None:
        """Drop the socket; a later message reconnects. Call at exit to be tidy."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- watchdog -------------------------------------------------------------------------------

    def watchdog_interval(self, factor: float = 2.0) -> float | None:
        """Seconds between pings: ``WATCHDOG_USEC / 1e6 / factor``, or None if not to ping.

        None when the watchdog is off (``WATCHDOG_USEC`` unset or not a positive integer), when
        ``WATCHDOG_PID`` names another process (the variable leaked to a child), or when there is
        no notify socket to ping. sd_watchdog_enabled(3) recommends ``factor=2``.
        """
        if factor <= 0:
            raise ValueError("factor must be positive")
        if not self.enabled or not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid.strip() != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 1e6 / factor

    # -- internals ------------------------------------------------------------------------------

    def _send_with_status(self, fields: dict[str, str], status: str | None) -> None:
        if status is not None:
            fields["STATUS"] = _one_line(status)
        self.send(**fields)

    def _connected(self) -> socket.socket:
        if self._sock is None:
            assert self._address is not None
            # SOCK_CLOEXEC: a child we might exec must not inherit the manager's socket.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Non-blocking: we send from the event loop; a full manager queue drops one message
            # (EAGAIN) instead of freezing the proxy.
            sock.setblocking(False)
            try:
                sock.connect(self._address)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _report(self, exc: OSError) -> None:
        if self._reported_failure:
            return
        self._reported_failure = True
        level = logging.DEBUG if exc.errno in _QUIET_ERRNOS else logging.WARNING
        logger.log(level, "systemd notification to %s failed: %s", self._address, exc)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


class WatchdogSchedule:
    """When the next ``WATCHDOG=1`` is due. Sans-IO: the caller passes ``now``.

    The first ping is due at once (systemd starts the watchdog timer when the service starts).
    """

    def __init__(self, interval: float) -> None:
        if not interval > 0:
            raise ValueError("watchdog interval must be positive")
        self.interval = interval
        self._last = -math.inf

    def due(self, now: float) -> bool:
        return now >= self.next_deadline()

    def next_deadline(self) -> float:
        return self._last + self.interval

    def pinged(self, now: float) -> None:
        self._last = now


async def run_watchdog(notifier: Notifier, interval: float) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds until cancelled.

    The pings come from the event loop itself on purpose: if a callback blocks the loop (a
    deadlock, a runaway parser), the pings stop and systemd kills and restarts the hung process.
    A thread would keep pinging for a dead proxy.
    """
    loop = asyncio.get_running_loop()
    schedule = WatchdogSchedule(interval)
    while True:
        now = loop.time()
        if schedule.due(now):
            notifier.watchdog()
            schedule.pinged(now)
        await asyncio.sleep(max(0.0, schedule.next_deadline() - loop.time()))
