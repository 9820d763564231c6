"""The ``[metrics]`` HTTP listener (``/metrics``, ``/healthz``, ``/readyz``) and ``ptproxy healthcheck``.

The listener is a few lines of asyncio on the proxy's own loop: one GET per connection, answered
and closed. It never blocks (the registry is read in memory), and a stuck loop makes it stop
answering, which is what a health probe should see.

* ``/healthz``: 200 while the process runs (liveness).
* ``/readyz``: 200 when this end can carry requests (client: the tunnel is up; server: the endpoint
  is listening), 503 otherwise and while draining (readiness).
* ``/metrics``: Prometheus text format.

``ptproxy healthcheck`` (Docker ``HEALTHCHECK``, no curl in the image) asks ``/readyz`` when
``[metrics]`` is configured; otherwise it can only check that the client end's HTTP listener
accepts connections, and for a server end that the config loads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from ptproxy.addr import UNIX_PREFIX, format_address
from ptproxy.ops.metrics import CONTENT_TYPE, Metrics

__all__ = ["MetricsServer", "bind_literal", "healthcheck"]

logger = logging.getLogger("ptproxy.metrics")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEAD = 8192
_TIMEOUT = 5.0


def bind_literal(host: str, port: int) -> socket.socket | None:
    """A listening TCP socket bound to ``host:port`` when ``host`` is an IP literal (None for a name),
    as ``asyncio.start_server(host, port, reuse_address=True)`` binds it (SO_REUSEADDR, IPv6 only
    for an IPv6 address, its error text), without the loop's getaddrinfo: on uvloop that starts
    libuv's four resolver threads and IDNA-encodes the host (encodings.idna, stringprep and
    unicodedata imported), ~5M instructions of an end's start-up (benchmarks/results/launch.txt)."""
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    if ":" in host:  # a scoped link-local address ("%eth0") is not one: left to getaddrinfo
        family, sockaddr = socket.AF_INET6, (host, port, 0, 0)
    else:
        family, sockaddr = socket.AF_INET, (host, port)
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise OSError(
                exc.errno, f"error while attempting to bind on address {sockaddr!r}: {str(exc.strerror).lower()}"
            ) from None
        sock.listen(100)  # asyncio's and uvloop's default backlog
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class MetricsServer:
    """Serves ``metrics`` and the probes; ``ready()`` answers ``/readyz``."""

    def __init__(self, bind: tuple[str, int], metrics: Metrics, ready: Callable[[], tuple[bool, str]]) -> None:
        self.bind = bind
        self.metrics = metrics
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        host, port = self.bind
        sock = bind_literal(host, port)
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:  # a name: resolved by the loop, as before
            self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        logger.info("metrics at http://%s/metrics (probes /healthz, /readyz)", format_address(self.address))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT)
            status, ctype, body = self._respond(head[:_MAX_HEAD])
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await asyncio.wait_for(writer.drain(), _TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return 405, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"GET only\n"
        if target == b"/metrics":
            return 200, CONTENT_TYPE, self.metrics.render()
        if target == b"/healthz":
            return 200, "text/plain", b"ok\n"
        if target == b"/readyz":
            ok, why = self._ready()
            return (200 if ok else 503), "text/plain", why.encode() + b"\n"
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"


def healthcheck(config_path: str) -> int:
    """``ptproxy healthcheck``: print one line, return 0 (healthy) or 1."""
    import http.client  # here: the metrics listener does without (it pulls in email, ~4 ms)

    from ptproxy.errors import PtproxyError
    from ptproxy.ops.config import load

    try:
        config = load(config_path)
    except PtproxyError as exc:
        print(f"unhealthy: {exc}")
        return 1
    if config.metrics is not None:
        host, port = config.metrics.bind
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2.0)
            try:
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace").strip()
            finally:
                conn.close()
        except OSError as exc:
            print(f"unhealthy: GET /readyz on {format_address((host, port))}: {exc}")
            return 1
        print(f"{'healthy' if resp.status == 200 else 'unhealthy'}: /readyz {resp.status} {body}")
        return 0 if resp.status == 200 else 1
    if config.general.mode == "Client":
        host, port = config.general.http_bind
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        try:
            if host.startswith(UNIX_PREFIX):  # unix:/path listener
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(2.0)
                    probe.connect(host[len(UNIX_PREFIX) :])
            else:
                with socket.create_connection((host, port), timeout=2.0):
                    pass
        except OSError as exc:
            print(f"unhealthy: connecting to the HTTP listener {format_address((host, port))}: {exc}")
            return 1
        print(
            f"healthy: HTTP listener {format_address((host, port))} accepts connections"
            " (no [metrics]: tunnel state unknown)"
        )
        return 0
    print("healthy: server config loads (no [metrics] section, so the running process was not probed)")
    return 0
