"""Client mode: an HTTP/1.1 listener. Each request becomes one HTTP/3 request stream.

One Frontend per listener: the general one (``[general] http_bind_address``), whose requests take
the route their Host selects, and one per ``[[routes]]`` entry with a listener of its own, whose
requests all take that route. All share the one dialer (and so the one session). Each request
carries the route's name (unless it is the default route, so a standard HTTP/3 peer sees a plain
request) and the HTTP/1.1 client's IP address, in fields the server end removes before the
origin; the same fields arriving from the HTTP/1.1 client are dropped, so no client can forge them.

Flow: socket → RequestParser events → TunnelRequest headers → stream; the response comes back as
stream events → HTTP/1.1 head + body (one chunk per DATA frame when chunked). Requests on one
connection are answered in order (pipelining is parsed, then served one at a time).

While the tunnel is down a request waits for the next session (Dialer.session_for), at most
``[limits] stream_queue_timeout`` from its arrival, then 503. A request without a body that the
server end did not process is sent again on the next session (see :func:`resend_allowed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from ptproxy import relay
from ptproxy.addr import format_address
from ptproxy.client.dialer import Dialer
from ptproxy.client.routes import DEFAULT_ROUTE, RouteTable
from ptproxy.client.upgrade import DRAIN_GRACE as WEBSOCKET_GRACE
from ptproxy.client.upgrade import abort_all, peer_allows, serve_websocket
from ptproxy.errors import (
    ClientProtocolError,
    PtproxyError,
    RequestTimeout,
    TunnelUnavailable,
    UpstreamError,
)
from ptproxy.h1conn import ConnectionClosed, H1Connection, HeadTimeout
from ptproxy.ops.config import Config, Route, parse_socket_address
from ptproxy.sockets import BACKLOG, listener_socket
from ptproxy.splice import Splice
from ptproxy.tunnel import (
    H3_REQUEST_REJECTED,
    Headers,
    Session,
    StreamAborted,
    TunnelStream,
)
from ptproxy.wire import headmap, serialize, websocket
from ptproxy.wire.events import BodyKind, EndOfMessage, RequestHead
from ptproxy.wire.h3map import (
    CLIENT_ADDRESS_FIELD,
    INTERNAL_FIELDS,
    NO_BODY_STATUSES,
    ROUTE_FIELD,
    request_to_h3_tagged,
)
from ptproxy.wire.parser import RequestParser

__all__ = ["Frontend"]

logger = logging.getLogger("ptproxy.frontend")

SIDE: Final = "client"
# RFC 9110 9.2.1 safe methods: the only ones allowed in replayable 0-RTT data (RFC 8470 §4).
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
# RFC 9110 9.2.2: sending one of these twice means the same as sending it once.
IDEMPOTENT_METHODS = SAFE_METHODS | {b"PUT", b"DELETE", b"TRACE"}
# s a connection accepted just before shutdown has to send its first request (see close()).
FIRST_REQUEST_GRACE = 2.0
_V4_MAPPED = "::ffff:"
# BodyKind's members as plain globals (``BodyKind.X`` goes through the enum metaclass's attribute
# hook), for the response's framing choice in Frontend._download.
_NONE, _LENGTH, _CHUNKED, _CLOSE = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED, BodyKind.CLOSE
_BODY_NONE, _BODY_LENGTH, _BODY_CHUNKED, _BODY_CLOSE = (
    headmap.BODY_NONE, headmap.BODY_LENGTH, headmap.BODY_CHUNKED, headmap.BODY_CLOSE
)
_h3_response_parts = headmap.h3_response_parts  # h3map.response_from_h3's mapping (see _download)
_response_head = headmap.response_head_bytes  # serialize.response_head's writer (see _download)


def client_ip(peername: Any) -> bytes | None:
    """The HTTP/1.1 client's IP address as text (no port; IPv4-mapped IPv6 shown as IPv4)."""
    if not peername:
        return None
    host = str(peername[0])
    if host.startswith(_V4_MAPPED) and "." in host:
        host = host[len(_V4_MAPPED) :]
    return host.encode("ascii", "replace")


def resend_allowed(method: bytes, code: int | None, *, reset: bool, before_handshake: bool) -> bool:
    """Whether a request without a body, failed before any response byte, may be sent again on
    the next session. ``code``: the stream's error code; ``reset``: its session ended by a
    Stateless Reset; ``before_handshake``: its session (a 0-RTT one) ended in its handshake.

    REQUEST_REJECTED says the server end did not process it (RFC 9114 §4.1.1): any method. After a
    Stateless Reset the new server process never saw it, but the old one may have: idempotent
    methods only. A 0-RTT request is replay-safe by construction (SAFE_METHODS).
    """
    if code == H3_REQUEST_REJECTED:
        return True
    if reset:
        return method in IDEMPOTENT_METHODS
    return before_handshake and method in SAFE_METHODS


def _lost_in_handshake(session: Session) -> bool:
    return session.closed.done() and not session.handshake_done


def tag_request(
    headers: list[tuple[bytes, bytes]], route: str, client: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The HTTP/3 request fields with the ends' own fields set: any copy from the HTTP/1.1
    client dropped (it cannot choose a route or an address), then ours added."""
    tagged = [(n, v) for n, v in headers if n not in INTERNAL_FIELDS]
    if route != DEFAULT_ROUTE:
        tagged.append((ROUTE_FIELD, route.encode("ascii")))
    if client is not None:
        tagged.append((CLIENT_ADDRESS_FIELD, client))
    return tagged


# What a request without a body needs to decide whether it may be sent again (Frontend._unprocessed):
# its session, its deadline, and the resends it has left.
_Resend = tuple[Session, float, int]


class _ConnectionOrigin:
    """Where an HTTP/1.1 connection's requests come from, as the tunnel request carries it."""

    __slots__ = ("client", "forwarded")

    def __init__(self, client: bytes | None, forwarded: bytes | None) -> None:
        self.client = client  # CLIENT_ADDRESS_FIELD's value
        self.forwarded = forwarded  # the Forwarded element (add_forwarded), else None


class Frontend:
    """Accepts HTTP/1.1 connections on one listener and forwards their requests through the
    dialer's session. ``route``: the ``[[routes]]`` entry this listener serves; None for the
    general listener, where each request's Host selects its route."""

    def __init__(
        self,
        config: Config,
        dialer: Dialer,
        on_request_done: Callable[[str, int, float], None] | None = None,
        *,
        route: Route | None = None,
    ) -> None:
        self.config = config
        self.dialer = dialer
        self.route = route
        self._table = RouteTable(config.routes) if route is None else None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections with a request in flight, and the task serving each: shutdown closes the
        # others at once and waits for these.
        self._busy: dict[H1Connection, asyncio.Task[None]] = {}
        self._connections: set[H1Connection] = set()
        # Accepted connections that have not sent a request yet, and the task serving each.
        self._fresh: dict[H1Connection, asyncio.Task[None]] = {}
        self._closing = False
        self._on_request_done = on_request_done
        self._websockets: set[Splice] = set()  # open ones, cut after a grace at shutdown
        # Read once, not per request.
        self._queue_timeout = config.limits.stream_queue_timeout / 1000.0
        self._add_forwarded = config.system.add_forwarded

    @property
    def route_name(self) -> str:
        """The listener's route as logs name it (the general listener: ``default``)."""
        return self.route.name if self.route is not None else DEFAULT_ROUTE

    def _bind(self) -> tuple[str, int]:
        if self.route is not None and self.route.http_bind_address is not None:
            return parse_socket_address(self.route.http_bind_address, require_ip=True)
        return self.config.general.http_bind

    def _field(self) -> str:
        """The config field of this listener's address, as errors name it."""
        if self.route is None:
            return "[general] http_bind_address"
        return f"routes[{self.config.routes.index(self.route)}].http_bind_address"

    async def start(self) -> None:
        # The socket passed as "http" (or the route's name) by systemd or a hand-off, else bound.
        name = self.route.name if self.route is not None else "http"
        sock = listener_socket(name, self._bind(), field=self._field(), unix_mode=self.config.system.unix_mode)
        try:
            self._server = await asyncio.get_running_loop().create_server(self._new_connection, sock=sock, backlog=BACKLOG)
        except BaseException:
            sock.close()
            raise
        where = format_address(sock.getsockname())
        if self.route is None and self.config.routes:
            logger.info("listening for HTTP/1.1 at %s (route by Host, else default)", where)
        else:
            logger.info("listening for HTTP/1.1 at %s (route %s)", where, self.route_name)

    @property
    def sockets(self) -> list[Any]:
        return list(self._server.sockets) if self._server is not None else []

    def _new_connection(self) -> H1Connection:
        limits = self.config.limits
        conn = H1Connection(
            RequestParser(
                max_request_line=limits.max_request_line,
                max_header_bytes=limits.max_header_bytes,
                max_header_count=limits.max_header_count,
            ),
            tcp_nodelay=self.config.system.tcp_nodelay,
        )
        self._connections.add(conn)
        task = asyncio.get_event_loop().create_task(self._serve(conn))
        self._fresh[conn] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting; let requests in flight finish; close idle connections."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn not in self._busy and conn not in self._fresh:
                conn.close()  # idle between requests: a client retries on a closed keep-alive
        loop = asyncio.get_running_loop()
        # A WebSocket has no natural end to wait for: those still open after their grace are cut.
        cut = loop.call_later(WEBSOCKET_GRACE, abort_all, self._websockets, "shutting down")
        # A connection accepted a moment ago (in a hand-off, from the backlog both processes share)
        # has its first request on the way: closing it now would reset that request. It gets a
        # short grace to send it, is answered, then closed.
        late = loop.call_later(FIRST_REQUEST_GRACE, self._close_fresh)
        waits = {*self._busy.values(), *self._fresh.values()}
        if waits:
            await asyncio.wait(waits, timeout=grace)
        cut.cancel()
        late.cancel()
        for conn in list(self._connections):
            conn.close()

    def _close_fresh(self) -> None:
        for conn in list(self._fresh):
            if not conn.has_buffered_input():  # not even part of a request head arrived
                conn.close()

    # -- one connection -----------------------------------------------------------------------

    async def _serve(self, conn: H1Connection) -> None:
        idle = self.config.limits.keepalive_idle_timeout / 1000.0
        head_timeout = self.config.limits.request_head_timeout / 1000.0
        task = asyncio.current_task()
        assert task is not None
        # What every request of this connection carries: the client's address (ours to tell the
        # server end) and, when configured, its Forwarded element; worked out at the first request.
        origin: _ConnectionOrigin | None = None
        try:
            # A connection accepted in the loop turn the shutdown began (a hand-off: from the
            # backlog both processes share) is still fresh: its first request is served, as
            # close() promises; only between requests does closing end the connection.
            while not self._closing or conn in self._fresh:
                if conn.take_end_of_message():
                    continue  # the end of a bodiless request we already forwarded: no wait needed
                try:
                    # No byte of a new request: keepalive_idle_timeout, then close quietly. Part of
                    # a head: request_head_timeout from its first byte, then 408 (slowloris).
                    event = await conn.next_event(timeout=idle, head_timeout=head_timeout)
                except HeadTimeout:
                    self._refuse(conn, RequestTimeout(f"request head not received within {head_timeout:g}s"))
                    break
                except (TimeoutError, ConnectionClosed):
                    break
                except ClientProtocolError as exc:
                    self._refuse(conn, exc)
                    break
                self._fresh.pop(conn, None)
                if type(event) is EndOfMessage:
                    continue  # the end of a bodiless request we already forwarded
                if not isinstance(event, RequestHead):  # a body without a head: parser bug
                    break
                bad = conn.message_error()
                if isinstance(bad, PtproxyError):
                    # Its body is already known to be malformed: refuse it whole, forward nothing.
                    self._refuse(conn, bad)
                    break
                if self._closing:
                    event = event.replace(keep_alive=False)  # its answer says Connection: close
                if origin is None:
                    origin = self._connection_origin(conn)
                self._busy[conn] = task
                try:
                    keep = await self._exchange(conn, event, origin)
                finally:
                    del self._busy[conn]
                if not keep:
                    break
        finally:
            conn.close()
            self._connections.discard(conn)
            self._fresh.pop(conn, None)

    def _refuse(self, conn: H1Connection, exc: PtproxyError) -> None:
        logger.warning("rejected request from %s: %s", format_address(conn.peername), exc)
        conn.write(serialize.error_response(exc.status, str(exc), side=SIDE, close=True))
        self._count(exc.status, 0.0)

    def _count(self, status: int, started: float) -> None:
        if self._on_request_done is not None:
            self._on_request_done(SIDE, status, time.monotonic() - started if started else 0.0)

    def _connection_origin(self, conn: H1Connection) -> _ConnectionOrigin:
        forwarded = None
        if self._add_forwarded:
            forwarded = serialize.forwarded(conn.peername[:2], conn.sockname[:2], "http")
        return _ConnectionOrigin(client_ip(conn.peername), forwarded)

    async def _exchange(self, conn: H1Connection, head: RequestHead, origin: _ConnectionOrigin) -> bool:
        """Forward one request; return whether the connection may serve another."""
        started = time.monotonic()
        has_body = head.body is BodyKind.CHUNKED or (
            head.body is BodyKind.LENGTH and (head.content_length or 0) > 0
        )
        handshake = websocket.is_handshake(head.method, head.http_version, head.headers, head.body)
        if handshake:
            # The parser stopped at a WebSocket handshake (frames may follow its head): whatever
            # the answer, this connection serves no other request.
            head = head.replace(keep_alive=False)
        deadline = started + self._queue_timeout
        resends = 0 if has_body or handshake else 1  # after REQUEST_REJECTED or a Stateless Reset
        avoid: Session | None = None
        while True:
            try:
                session, stream, extended = await self._send_head(head, origin, has_body, handshake, deadline, avoid)
            except PtproxyError as exc:
                return self._unsent(conn, head, exc, started, has_body)
            if extended:
                await serve_websocket(
                    conn, stream, head, self.config, lambda status: self._count(status, started), self._websockets
                )
                return False
            if has_body:
                return await self._relay_with_body(conn, stream, head, started)

            resend = (session, deadline, resends)
            try:
                if session.handshake_done:
                    outcome = await self._download(conn, stream, head, resend)
                else:
                    outcome = await self._download_bounded(conn, stream, head, resend, session, deadline)
            except TunnelUnavailable as exc:  # nothing was written: the tunnel did not come up
                stream.reset()
                return self._unsent(conn, head, exc, started, has_body)
            except BaseException:
                stream.reset()
                raise
            finally:
                stream.finish()
            if outcome is None:  # the server end did not process it: again, on the next session
                logger.info(
                    "%s %s: not processed on connection %d; sending it again on the next session",
                    head.method.decode(), head.target[:200].decode("latin-1"), session.number,
                )
                if not _lost_in_handshake(session):
                    resends -= 1
                avoid = session
                continue
            status, keep = outcome
            self._count(status, started)
            return keep and head.keep_alive

    def _unsent(self, conn: H1Connection, head: RequestHead, exc: PtproxyError, started: float, has_body: bool) -> bool:
        """Answer a request that did not reach the server end with ``exc``; keep the connection?"""
        if isinstance(exc, TunnelUnavailable):
            logger.warning("%s %s: 503: %s", head.method.decode(), head.target[:200].decode("latin-1"), exc)
        conn.write(serialize.error_response(exc.status, str(exc), side=SIDE, close=has_body or not head.keep_alive))
        self._count(exc.status, started)
        return not has_body and head.keep_alive

    async def _download_bounded(
        self,
        conn: H1Connection,
        stream: TunnelStream,
        head: RequestHead,
        resend: _Resend,
        session: Session,
        deadline: float,
    ) -> tuple[int, bool] | None:
        """:meth:`_download`; but a 0-RTT request whose session is still in its handshake at
        ``deadline`` (the server end does not answer) is withdrawn: TunnelUnavailable (503), as
        if it had waited for a session, not a 502 once the handshake times out. Before the
        handshake ends no response byte can have arrived (it needs the 1-RTT keys)."""
        if session.handshake_done:
            return await self._download(conn, stream, head, resend)
        task = asyncio.get_running_loop().create_task(self._download(conn, stream, head, resend))
        withdrawn = False

        def withdraw() -> None:
            nonlocal withdrawn
            if not session.handshake_done and not task.done():
                withdrawn = True
                task.cancel()

        timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), withdraw)
        try:
            return await task
        except asyncio.CancelledError:
            if withdrawn:
                raise self.dialer.unavailable() from None
            raise
        finally:
            timer.cancel()

    @staticmethod
    def _unprocessed(method: bytes, resend: _Resend, exc: PtproxyError) -> bool:
        """Whether a request failed with ``exc`` before any response byte may go again."""
        session, deadline, resends = resend
        code = exc.code if isinstance(exc, StreamAborted) else None
        reset = session.closed.done() and session.quic.stateless_reset_received
        if _lost_in_handshake(session):
            # A 0-RTT request lost with its session (e.g. the server end was not up yet): sent
            # again as long as its wait lasts, not counted against the one resend.
            return time.monotonic() < deadline and resend_allowed(method, code, reset=reset, before_handshake=True)
        return resends > 0 and resend_allowed(method, code, reset=reset, before_handshake=False)

    async def _send_head(
        self,
        head: RequestHead,
        origin: _ConnectionOrigin,
        has_body: bool,
        handshake: bool,
        deadline: float,
        avoid: Session | None,
    ) -> tuple[Session, TunnelStream, bool]:
        """The request head sent on a new stream of the live session, or of the next one
        (waited for until ``deadline``); with whether it is an Extended CONNECT."""
        while True:
            session = self.dialer.session
            if session is None or session is avoid or not session.confirmed.done() or session.closed.done():
                # Not the live, confirmed session: the dialer decides (and waits for the next).
                # Replay-safe requests may ride 0-RTT early data while a resumed session handshakes.
                session = await self.dialer.session_for(
                    early_ok=not has_body and head.method in SAFE_METHODS and not handshake,
                    timeout=max(0.0, deadline - time.monotonic()),
                    avoid=avoid,
                )
            # A WebSocket crosses as Extended CONNECT when the server end allows it (RFC 9220);
            # else as an ordinary GET, Upgrade dropped, as any other Upgrade request.
            extended = handshake and await peer_allows(session)
            if extended:
                h3_headers = websocket.request_to_h3(head, origin.forwarded)
                h3_headers = tag_request(h3_headers, self._route_for(h3_headers), origin.client)
            else:
                h3_headers, authority = request_to_h3_tagged(head, origin.forwarded)
                route = self.route_name if self._table is None else self._table.select(authority)
                if route != DEFAULT_ROUTE:
                    h3_headers.append((ROUTE_FIELD, route.encode("ascii")))
                if origin.client is not None:
                    h3_headers.append((CLIENT_ADDRESS_FIELD, origin.client))
            end_stream = not has_body and not extended
            try:
                # Without _open_stream's coroutine when a stream slot is free (nearly always).
                if session.stream_slot_ready():
                    stream = session.open_stream(h3_headers, end_stream)
                else:
                    stream = await self._open_stream(session, h3_headers, end_stream)
            except StreamAborted:
                avoid = session  # it closed before anything was sent: the next session will do
                continue
            return session, stream, extended

    async def _relay_with_body(self, conn: H1Connection, stream: TunnelStream, head: RequestHead, started: float) -> bool:
        """Upload and download at once (never sent again: the body is not kept)."""
        upload = asyncio.get_running_loop().create_task(self._upload(conn, stream, head))
        try:
            outcome = await self._download(conn, stream, head)
        except BaseException:
            upload.cancel()
            stream.reset()
            raise
        finally:
            if upload.done():
                stream.finish()
        assert outcome is not None  # no resend predicate given
        status, keep = outcome
        self._count(status, started)
        if not upload.done():
            # Early response: the rest of the request body is not needed by anyone.
            upload.cancel()
            stream.finish()
            return False
        if not upload.result():
            return False
        return keep and head.keep_alive

    def _route_for(self, h3_headers: list[tuple[bytes, bytes]]) -> str:
        if self._table is None:
            return self.route_name
        authority = next((v for n, v in h3_headers if n == b":authority"), None)
        return self._table.select(authority)

    async def _open_stream(
        self, session: Session, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> TunnelStream:
        """A stream with the request head sent on it (open and first send must not be apart).

        StreamAborted: the session closed before anything was sent (the caller takes the next)."""
        if session.stream_slot_ready():
            return session.open_stream(headers, end_stream)
        # Queued behind earlier requests (first come, first served) until the peer's
        # MAX_STREAMS lets this one go.
        timeout = self._queue_timeout
        try:
            return await session.acquire_stream(headers, end_stream, timeout=timeout)
        except TimeoutError:
            raise TunnelUnavailable(
                f"all {self.config.transport.max_concurrent_http_streams} tunnel streams busy "
                f"for {timeout:g}s"
            ) from None

    async def _upload(self, conn: H1Connection, stream: TunnelStream, head: RequestHead) -> bool:
        """Request body → DATA frames (one per HTTP/1.1 chunk). Returns False if it failed."""
        try:
            # A request body is never close-delimited (RFC 9112 6.3): it ends by its framing.
            return await relay.h1_body_to_stream(conn, stream, head.body)
        except StreamAborted:
            # First: a StreamAborted is a PtproxyError too, but the stream is already gone.
            return False
        except PtproxyError as exc:
            # Never finish a body that ended short: the peer must see a reset.
            logger.warning(
                "request body from %s failed: %s; resetting the stream", format_address(conn.peername), exc
            )
            # The request is at fault: if no response head went out yet, the client gets a 4xx
            # saying why (not a 502 blaming the upstream).
            if isinstance(exc, ConnectionClosed):
                exc = ClientProtocolError(f"request body incomplete: {exc}")
            stream.reset(reason=exc)
            return False

    async def _download(
        self,
        conn: H1Connection,
        stream: TunnelStream,
        head: RequestHead,
        resend: _Resend | None = None,
    ) -> tuple[int, bool] | None:
        """Response from the stream → HTTP/1.1 bytes. Returns (status, connection reusable), or
        None when it failed before any response byte and ``resend`` says to send it again."""
        interim = False
        try:
            event = await stream.receive()
            while True:
                if not isinstance(event, Headers):
                    raise UpstreamError("peer sent data before the response head")
                # response_from_h3 without its TunnelResponse: (status, fields, content length)
                status, fields, content_length = _h3_response_parts(event.headers)
                if status >= 200:
                    break
                interim = True
                if status != 101 and head.http_version >= (1, 1):
                    conn.write(serialize.response_head(status, fields, body=BodyKind.NONE, content_length=None))
                event = await stream.receive()
        except PtproxyError as exc:
            if resend is not None and not interim and self._unprocessed(head.method, resend, exc):
                return None
            if isinstance(exc, StreamAborted) and exc.code == H3_REQUEST_REJECTED:
                # The peer refused the request unprocessed (its end is shutting down): the
                # service is unavailable, the origin is not at fault.
                exc = TunnelUnavailable(f"the server end refused the request unprocessed: {exc}")
            status = exc.status
            message = str(exc) if isinstance(exc, ClientProtocolError) else f"proxying failed: {exc}"
            logger.warning("%s %s: %d: %s", head.method.decode(), head.target[:200].decode("latin-1"), status, message)
            conn.write(serialize.error_response(status, message, side=SIDE, close=True))
            return status, False
        # The body kind, and its code for the head's writer (serialize.response_head without its
        # keyword wrapper, as the server end's origin.py calls it).
        if head.method == b"HEAD" or status in NO_BODY_STATUSES:
            kind, code, length = _NONE, _BODY_NONE, None
        elif content_length is not None:
            kind, code, length = _LENGTH, _BODY_LENGTH, content_length
        elif event.stream_ended:
            kind, code, length = _LENGTH, _BODY_LENGTH, 0
        elif head.http_version < (1, 1):
            kind, code, length = _CLOSE, _BODY_CLOSE, None
        else:
            kind, code, length = _CHUNKED, _BODY_CHUNKED, None
        close = not head.keep_alive or kind is _CLOSE
        response = _response_head(status, fields, code, length, True, None, close, None)
        if not close and head.http_version < (1, 1):
            # HTTP/1.0 keeps a connection only when the server says so (RFC 9112 9.3 / 2068 19.7.1).
            response = response[:-2] + b"Connection: keep-alive\r\n\r\n"
        if event.stream_ended:
            conn.write_now(response)  # the whole response: out now, not an iteration later
            return status, not close
        if kind is _LENGTH and not conn.drain_needed:
            # A small response is usually here whole (its DATA and FIN came with its head): when
            # the body's size is the Content-Length (else the relay's check answers), head and
            # body leave in one write, before the stream's bookkeeping (consume_queued: credit, FIN).
            body = stream.whole_body()
            if body is not None and len(body) == length:
                conn.write_now(response + body)
                stream.consume_queued()  # the bytes credited, the FIN read: as the relay would
                return status, not close
        conn.write(response)
        try:
            await relay.stream_body_to_h1(stream, conn, kind, length)
        except PtproxyError as exc:
            # The head is out: all we can do is cut the connection so the client sees truncation.
            logger.warning(
                "%s %s: response body failed after the head was sent: %s; closing the connection",
                head.method.decode(),
                head.target[:200].decode("latin-1"),
                exc,
            )
            stream.reset()
            conn.abort()
            return status, False
        conn.flush()  # the whole response: out now, not an iteration later
        return status, not close
