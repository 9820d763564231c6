"""Client mode: TCP stream routes. A ``[[routes]]`` entry with ``tcp_bind_address`` gets a TCP
listener; each connection accepted there becomes one HTTP/3 CONNECT stream (RFC 9114 4.4:
``:method CONNECT``, ``:authority`` the route's name, no ``:scheme`` or ``:path``) tagged with its
route and the client's address like an HTTP request, over the dialer's one session.

While the tunnel is down a connection waits for the next session, as an HTTP request does
(Dialer.session_for: arrival order, the dial hurried), and for a stream slot; both together at most
``stream_queue_timeout``. It never rides 0-RTT: a replayed CONNECT would open a second origin
connection.

Nothing is relayed until the server end answers: a 2xx means it connected an origin, and the bytes
are then spliced both ways (ptproxy/splice.py) until both sides closed. Anything else (a non-2xx
answer, a reset stream, no session or no stream slot within ``stream_queue_timeout``) closes the
client's connection with an RST and logs one line saying why: a TCP client cannot be told more.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ptproxy.addr import format_address
from ptproxy.client.dialer import Dialer
from ptproxy.client.listener import client_ip, tag_request
from ptproxy.errors import PtproxyError, TunnelUnavailable, UpstreamError
from ptproxy.ops.config import Config, Route, parse_socket_address
from ptproxy.sockets import BACKLOG, listener_socket
from ptproxy.splice import Direction, SocketEnd, Splice, SpliceResult, TcpMeter, metered_bytes
from ptproxy.tunnel import (
    H3_REQUEST_REJECTED,
    DataFrame,
    Headers,
    StreamAborted,
    StreamEnded,
    TunnelStream,
)
from ptproxy.wire.h3map import response_from_h3

__all__ = ["DRAIN_GRACE", "TcpListener"]

logger = logging.getLogger("ptproxy.tcp")

# Seconds open TCP streams may go on after shutdown began; a byte stream has no natural end to wait for.
DRAIN_GRACE = 10.0
MAX_REASON = 1024  # bytes of a refusal's body kept for the log line
# At this end the socket is the client's: what goes on the stream goes to the origin.
_DIRECTIONS: dict[Direction, str] = {"to_stream": "to_origin", "to_socket": "to_client"}


class _Refused(UpstreamError):
    """The server end did not connect the stream (its answer, or a reset)."""


class TcpListener:
    """The TCP listener of one TCP stream route."""

    def __init__(
        self, config: Config, dialer: Dialer, route: Route, meter: TcpMeter | None = None
    ) -> None:
        assert route.tcp_bind_address is not None
        self.config = config
        self.dialer = dialer
        self.route = route
        self._meter = meter
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._splices: set[Splice] = set()

    async def start(self) -> None:
        assert self.route.tcp_bind_address is not None
        # The socket passed under the route's name (systemd, a hand-off), else bound here.
        field = f"routes[{self.config.routes.index(self.route)}].tcp_bind_address"
        address = parse_socket_address(self.route.tcp_bind_address, require_ip=True)
        sock = listener_socket(self.route.name, address, field=field, unix_mode=self.config.system.unix_mode)
        try:
            self._server = await asyncio.get_running_loop().create_server(self._accept, sock=sock, backlog=BACKLOG)
        except BaseException:
            sock.close()
            raise
        logger.info("listening for TCP at %s (route %s)", format_address(sock.getsockname()), self.route.name)

    @property
    def sockets(self) -> list[object]:
        return list(self._server.sockets) if self._server is not None else []

    async def close(self, grace: float = DRAIN_GRACE) -> None:
        """Stop accepting; streams still open after ``grace`` seconds are reset."""
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for splice in list(self._splices):
            splice.abort("shutting down")
        for task in list(self._tasks):
            task.cancel()  # those still waiting for an answer: the stream and socket are reset
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    # -- one connection -----------------------------------------------------------------------

    def _accept(self) -> SocketEnd:
        end = SocketEnd(tcp_nodelay=self.config.system.tcp_nodelay)
        task = asyncio.get_running_loop().create_task(self._serve(end))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return end

    async def _serve(self, end: SocketEnd) -> None:
        await end.wait_connected()
        where = f"route {self.route.name!r} TCP connection from {format_address(end.peername)}"
        stream: TunnelStream | None = None
        try:
            stream = await self._open(client_ip(end.peername))
            await self._await_answer(stream)
        except PtproxyError as exc:
            logger.warning("%s: %s; closing it", where, exc)
            if stream is not None:
                stream.finish()
            end.abort()
            return
        except BaseException:
            if stream is not None:
                stream.reset()
            end.abort()
            raise
        self._log_end(where, await self._relay(end, stream))

    async def _open(self, client: bytes | None) -> TunnelStream:
        """The CONNECT stream with its head sent: waits in line for a session, then for a stream
        slot, both within one ``stream_queue_timeout``."""
        name = self.route.name
        headers = [(b":method", b"CONNECT"), (b":authority", name.encode("ascii"))]
        headers += tag_request([], name, client)
        timeout = self.config.limits.stream_queue_timeout / 1000.0
        deadline = time.monotonic() + timeout
        session = await self.dialer.session_for(early_ok=False, timeout=timeout)
        try:
            if session.stream_slot_ready():
                return session.open_stream(headers)
            try:
                left = max(0.0, deadline - time.monotonic())
                return await session.acquire_stream(headers, timeout=left)
            except TimeoutError:
                raise TunnelUnavailable(
                    f"all {self.config.transport.max_concurrent_http_streams} tunnel streams busy for {timeout:g}s"
                ) from None
        except StreamAborted as exc:
            raise TunnelUnavailable(str(exc)) from None

    async def _await_answer(self, stream: TunnelStream) -> None:
        """Until the server end's 2xx; raises _Refused with its reason otherwise."""
        timeout = self.config.limits.tcp_idle_timeout / 1000.0
        try:
            async with asyncio.timeout(timeout):
                event = await stream.receive()
                if not isinstance(event, Headers):
                    raise _Refused("the server end sent data before its answer")
                answer = response_from_h3(event.headers)
                if 200 <= answer.status < 300:
                    return
                reason = await _body_text(stream) if not event.stream_ended else ""
                raise _Refused(
                    f"the server end answered {answer.status}" + (f": {reason}" if reason else "")
                )
        except TimeoutError:
            raise _Refused(f"the server end did not answer within {timeout:g}s") from None
        except StreamAborted as exc:
            if exc.code == H3_REQUEST_REJECTED:
                raise _Refused(f"the server end refused the stream unprocessed: {exc}") from None
            raise _Refused(f"the server end reset the stream: {exc}") from None

    async def _relay(self, end: SocketEnd, stream: TunnelStream) -> SpliceResult:
        route = self.route.name
        splice = Splice(
            end,
            stream,
            idle_timeout=self.config.limits.tcp_idle_timeout / 1000.0,
            on_bytes=metered_bytes(self._meter, route, _DIRECTIONS),
        )
        return await splice.run_in(self._splices, self._meter, route)

    @staticmethod
    def _log_end(where: str, result: SpliceResult) -> None:
        line = (
            f"{where}: TCP stream ended ({result.reason}); {result.to_stream} bytes to the origin, "
            f"{result.to_socket} to the client in {result.seconds:.1f}s"
        )
        logger.log(logging.DEBUG if result.clean else logging.INFO, "%s", line)


async def _body_text(stream: TunnelStream) -> str:
    """The first line of a refusal's body (the server end's reason), bounded."""
    body = bytearray()
    while len(body) < MAX_REASON:
        event = await stream.receive()
        if isinstance(event, DataFrame):
            body += event.data
        elif isinstance(event, StreamEnded):
            break
    text = bytes(body[:MAX_REASON]).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""
