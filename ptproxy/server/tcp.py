"""Server mode: TCP stream routes. A plain CONNECT stream (RFC 9114 4.4) becomes one TCP connection
to an origin of its route, and the stream's bytes are spliced to it both ways (ptproxy/splice.py).

The backend (server/origin.py) routes a CONNECT like any request (its route's tag; 502 for an
unknown route, 403 when ``allowed_peers`` refuses the peer) and hands it here. The origin is
chosen as for HTTP (balance, health, the pending queue) and connected afresh, never taken from the
HTTP/1.1 pool; a refused connect marks the origin DOWN and tries the next one, since nothing was
sent yet. Once connected the answer is ``200`` and the splice runs until both sides closed; when
no origin takes it the answer is ``502`` naming the origin, and the client end closes its
connection at once.
"""

from __future__ import annotations

import asyncio
import logging

from ptproxy.errors import UpstreamError
from ptproxy.ops.config import Config
from ptproxy.server.pool import OriginConnectError
from ptproxy.server.upstream import Origin, RouteRuntime
from ptproxy.splice import Direction, SocketEnd, Splice, SpliceResult, TcpMeter, metered_bytes
from ptproxy.tunnel import StreamAborted, TunnelStream
from ptproxy.wire import serialize

__all__ = ["DRAIN_GRACE", "TcpBackend"]

logger = logging.getLogger("ptproxy.tcp")

# Seconds a TCP stream may go on after shutdown began; a byte stream has no natural end to wait for.
DRAIN_GRACE = 10.0
# At this end the socket is the origin's: what goes to it goes to the origin.
_DIRECTIONS: dict[Direction, str] = {"to_socket": "to_origin", "to_stream": "to_client"}


class TcpBackend:
    """The TCP streams of one server end: connects origins, runs the splices, ends them at
    shutdown."""

    def __init__(self, config: Config, meter: TcpMeter | None = None) -> None:
        self.config = config
        self._meter = meter
        self._splices: set[Splice] = set()
        self._closer: asyncio.TimerHandle | None = None

    @property
    def open_streams(self) -> int:
        return len(self._splices)

    async def serve(
        self, stream: TunnelStream, runtime: RouteRuntime, peer_key: str, where: str
    ) -> int:
        """Answer a routed CONNECT and relay it until it ends; the status answered."""
        tried: set[Origin] = set()
        failure: UpstreamError | None = None
        while True:
            try:
                origin = await runtime.group.choose(peer_key, tried, failure)
            except UpstreamError as exc:
                if exc is not failure:
                    logger.warning("%s route %r: %s", where, runtime.spec.name, exc)
                return _refuse(stream, exc.status, f"route {runtime.spec.name!r}: {exc}")
            tried.add(origin)
            with origin.lease():  # a stream counts as a request in flight for its whole life
                try:
                    end = await self._dial(origin)
                except OriginConnectError as exc:
                    logger.warning("%s route %r: %s", where, runtime.spec.name, exc)
                    failure = exc
                    continue
                await self._relay(
                    stream,
                    end,
                    runtime.spec.name,
                    f"{where} route {runtime.spec.name!r} to {origin.address}",
                )
                return 200

    async def _dial(self, origin: Origin) -> SocketEnd:
        """A new TCP connection to ``origin``; its health follows the outcome."""
        loop = asyncio.get_running_loop()
        timeout = self.config.limits.origin_connect_timeout / 1000.0
        nodelay = self.config.system.tcp_nodelay
        try:
            _, end = await asyncio.wait_for(
                loop.create_connection(
                    lambda: SocketEnd(tcp_nodelay=nodelay), origin.pool.host, origin.pool.port
                ),
                timeout,
            )
        except TimeoutError:
            reason = f"connect timed out after {timeout:g}s"
            error = OriginConnectError(
                f"connecting to origin {origin.address} timed out after {timeout:g}s", reason
            )
        except OSError as exc:
            text = exc.strerror or str(exc)
            error = OriginConnectError(
                f"connecting to origin {origin.address} failed: {text}", text[:1].lower() + text[1:]
            )
        else:
            origin.connect_ended(None)
            return end
        origin.connect_ended(error.reason)
        raise error

    async def _relay(self, stream: TunnelStream, end: SocketEnd, route: str, where: str) -> None:
        try:
            stream.send_headers([(b":status", b"200")])
        except StreamAborted as exc:
            end.abort()
            logger.info("%s: the client end went away before the answer: %s", where, exc)
            return
        splice = Splice(
            end,
            stream,
            idle_timeout=self.config.limits.tcp_idle_timeout / 1000.0,
            on_bytes=metered_bytes(self._meter, route, _DIRECTIONS),
        )
        _log_end(where, await splice.run_in(self._splices, self._meter, route))

    def close(self, grace: float = DRAIN_GRACE) -> None:
        """Shutdown: the streams still open after ``grace`` seconds are reset."""
        if self._closer is None:
            self._closer = asyncio.get_running_loop().call_later(grace, self._abort_all)

    def _abort_all(self) -> None:
        for splice in list(self._splices):
            splice.abort("shutting down")


def _log_end(where: str, result: SpliceResult) -> None:
    line = (
        f"{where}: TCP stream ended ({result.reason}); {result.to_socket} bytes to the origin, "
        f"{result.to_stream} to the client end in {result.seconds:.1f}s"
    )
    logger.log(logging.DEBUG if result.clean else logging.INFO, "%s", line)


def _refuse(stream: TunnelStream, status: int, message: str) -> int:
    """Answer a CONNECT that was not connected: the status and a one-line reason, then FIN."""
    body = (message + "\n").encode()
    headers = [
        (b":status", str(status).encode()),
        (b"server", b"ptproxy server"),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"date", serialize.http_date()),
    ]
    try:
        stream.send_headers(headers)
        stream.send_final(body)
        stream.stop_receiving()
    except StreamAborted:
        pass
    return status
