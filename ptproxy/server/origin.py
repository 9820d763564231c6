"""Server mode: replay each HTTP/3 request stream to an origin of its route over a pooled
HTTP/1.1 connection.

Flow: stream Headers → TunnelRequest → route (the internal ``ptproxy-route`` field; 502 when the
server end has no such route, 403 when the peer may not use it) → identity headers and path rule →
an origin of the pool (balanced, waiting in the pending queue while none is UP) → request head
bytes → origin socket; request DATA frames → one HTTP/1.1 chunk each (or raw bytes under
Content-Length); origin response events → HTTP/3 HEADERS and DATA frames (one per chunk).

A refused connection is retried on another origin (nothing was sent). A connection that closes
before any byte of the response head is retried on another origin only for an idempotent method
without a body (nothing is lost by sending it again). Errors before the response head become a
synthetic response with ``Server: ptproxy server``; after it, the stream is reset so the client end
cuts its HTTP/1.1 connection instead of delivering a silently short body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ptproxy import relay
from ptproxy.errors import (
    PtproxyError,
    UpstreamError,
    UpstreamTimeout,
)
from ptproxy.h1conn import ConnectionClosed, ConnectionReset, H1Connection
from ptproxy.ops.config import Config
from ptproxy.server.identity import identity_fields, strip_identity_fields
from ptproxy.server.routes import DEFAULT_ROUTE, RouteSpec, build_routes, internal_fields
from ptproxy.server.tcp import TcpBackend
from ptproxy.server.upgrade import DRAIN_GRACE as WEBSOCKET_GRACE
from ptproxy.server.upgrade import abort_all, forward_websocket
from ptproxy.server.upstream import Group, Origin, RouteRuntime, WaitObserver
from ptproxy.splice import Splice, TcpMeter
from ptproxy.tunnel import Headers, Session, StreamAborted, TunnelStream
from ptproxy.wire import headmap, serialize, websocket
from ptproxy.wire.events import BodyKind, EndOfMessage, ResponseHead
from ptproxy.wire.h3map import (
    TunnelRequest,
    request_from_h3,
    response_to_h3,
    routed_request_from_h3,
)
from ptproxy.wire.parser import ResponseParser

__all__ = ["Backend", "RouteObserver"]

logger = logging.getLogger("ptproxy.backend")

SIDE = "server"
SERVER_HEADER = b"ptproxy server"
# RFC 9110 section 9.2.2; a request of these methods without a body may be sent twice.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# BodyKind's members as plain globals: ``BodyKind.X`` goes through the enum metaclass's attribute
# hook (~1k instructions each on CPython 3.11), on the way to the origin and back.
_NONE, _LENGTH, _CHUNKED = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED
_request_head = headmap.request_head_bytes  # serialize.request_head's writer (see _origin_head)
_response_to_h3 = headmap.h1_response_to_h3  # h3map.response_to_h3's mapping (see _download)

# (route, status, seconds) of each answered request whose route was known
RouteObserver = Callable[[str, int, float], None]


class _Retry(UpstreamError):
    """The origin closed the connection before any byte of the response head; safe to resend."""


class Backend:
    def __init__(
        self,
        config: Config,
        local_address: Callable[[], Any],
        on_request_done: Callable[[str, int, float], None] | None = None,
        *,
        on_route_done: RouteObserver | None = None,
        on_wait: WaitObserver | None = None,
        tcp_meter: TcpMeter | None = None,
    ) -> None:
        self.config = config
        self.tcp = TcpBackend(config, tcp_meter)  # CONNECT streams of TCP stream routes
        self.routes: dict[str, RouteRuntime] = {
            name: RouteRuntime(spec, config, on_wait) for name, spec in build_routes(config).items()
        }
        self._local_address = local_address
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_request_done = on_request_done
        self._on_route_done = on_route_done
        self._started = False
        self._websockets: set[Splice] = set()  # open ones, cut after a grace at shutdown
        self._sessions_up = 0  # established sessions (see track)
        self._preconnect = config.limits.origin_preconnect  # false: origin connections on demand only
        if self._preconnect:
            for route in self.routes.values():
                for origin in route.origins.values():
                    origin.pool.keep_warm = self._tunnel_up

    def _tunnel_up(self) -> bool:
        return self._sessions_up > 0

    def track(self, session: Session) -> None:
        """A new session (the listener's ``on_session``): once it is established its peer's
        requests may come, so each origin they will likely take gets a connection ahead of them
        (the default route's origins, and those that served a request before; a named route may
        be a TCP stream route, whose origin must not see HTTP connections it never asked for);
        and while any session is up, the pools keep such a connection across a silence (see
        ptproxy/server/pool.py)."""

        def established(fut: asyncio.Future[None]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            self._sessions_up += 1
            session.closed.add_done_callback(self._session_ended)
            self.warm()

        session.confirmed.add_done_callback(established)

    def _session_ended(self, _fut: asyncio.Future[str]) -> None:
        self._sessions_up -= 1

    def warm(self) -> None:
        """Open a connection to each likely origin that has none idle (see :meth:`track`), unless
        ``origin_preconnect`` is false."""
        if not self._preconnect:
            return
        for name, route in self.routes.items():
            for origin in route.origins.values():
                if name == DEFAULT_ROUTE or origin.pool.served:
                    origin.pool.warm()

    def start(self) -> None:
        """Start the active health probes (needs the running loop)."""
        if not self._started:
            self._started = True
            for route in self.routes.values():
                route.start()

    def on_request(self, session: Session, stream: TunnelStream) -> None:
        self.start()
        task = asyncio.get_running_loop().create_task(self._handle(session, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float | None = None) -> None:
        """Wait for requests in flight."""
        self.tcp.close()  # TCP streams have no end of their own to wait for: reset after a grace
        # Nor have WebSockets: those still open after their grace are cut.
        cut = asyncio.get_running_loop().call_later(
            WEBSOCKET_GRACE, abort_all, self._websockets, "shutting down"
        )
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        cut.cancel()

    def close(self) -> None:
        for route in self.routes.values():
            route.close()

    # -- one request --------------------------------------------------------------------------

    async def _handle(self, session: Session, stream: TunnelStream) -> None:
        started = time.monotonic()
        status = 0
        route: list[str] = []  # filled in by _exchange once the route is known
        try:
            status = await self._exchange(session, stream, route)
        except StreamAborted as exc:
            logger.info("[conn %d stream %d] aborted: %s", session.number, stream.stream_id, exc)
        finally:
            stream.finish()
            elapsed = time.monotonic() - started
            if self._on_request_done is not None and status:
                self._on_request_done(SIDE, status, elapsed)
            if self._on_route_done is not None and status and route:
                self._on_route_done(route[0], status, elapsed)

    async def _exchange(self, session: Session, stream: TunnelStream, route_out: list[str]) -> int:
        first = await stream.receive()
        assert isinstance(first, Headers)
        try:
            # An ordinary request: mapped and its internal fields read in one pass over the headers.
            routed = routed_request_from_h3(first.headers, first.stream_ended)
            if routed is not None:
                request, route, client_address = routed
                name = DEFAULT_ROUTE if route is None else route.decode("latin-1")
            else:
                # An Extended CONNECT (RFC 9220) is a WebSocket: routed like any request, then
                # replayed as an HTTP/1.1 upgrade (server/upgrade.py); or a plain CONNECT.
                parse = websocket.request_from_h3 if websocket.is_extended_connect(first.headers) else request_from_h3
                request = parse(first.headers, first.stream_ended)
                name, client_address, request.fields = internal_fields(request.fields)
        except PtproxyError as exc:
            status = exc.status if exc.status < 500 else 400
            return self._fail(stream, status, f"invalid request: {exc}")
        runtime = self.routes.get(name)
        if runtime is None:
            msg = f"no route named {name!r} at the server end"
            logger.warning("%s %s", _where(session, stream), msg)
            return self._fail(stream, 502, msg)
        route_out.append(name)
        spec = runtime.spec
        # The peer's identity read only for a route that restricts its peers (most do not).
        if spec.allowed_peers is not None and not spec.allows(identity := session.peer_identity):
            who = f"peer {identity.name!r}" if identity is not None else "a peer without a verified certificate name"
            msg = f"{who} may not use route {name!r}"
            logger.warning("%s %s (allowed_peers)", _where(session, stream), msg)
            return self._fail(stream, 403, msg)
        if request.is_connect:
            return await self.tcp.serve(stream, runtime, self._peer_key(session), _where(session, stream))
        if runtime.path_groups:  # path rules: the group and path they give (else as they are)
            group, request.path = runtime.plan(request.path)
        else:
            group = runtime.group
        try:
            head = self._origin_head(session, spec, request, client_address)
        except PtproxyError as exc:
            status = exc.status if exc.status < 500 else 400
            return self._fail(stream, status, f"invalid request: {exc}")
        if request.protocol is not None:
            return await forward_websocket(
                stream,
                group,
                head,
                self._peer_key(session),
                config=self.config,
                fail=self._fail,
                where=_where(session, stream),
                splices=self._websockets,
            )
        # Only PeerHash balances on the peer's key: the others are given "" (they ignore it).
        return await self._forward(session, stream, group, request, head, self._peer_key(session) if group.by_peer else "")

    def _origin_head(
        self, session: Session, spec: RouteSpec, request: TunnelRequest, client_address: bytes | None
    ) -> bytes:
        """The request head for the origin: identity headers (any copy from the client removed
        first, so none can be forged) and ``Forwarded`` as configured."""
        if spec.request_headers:
            names = spec.request_headers
            request.fields = strip_identity_fields(request.fields, names)
            request.fields += identity_fields(names, session.peer_identity, client_address)
        if self.config.system.add_forwarded:
            request.fields.append(
                (b"forwarded", serialize.forwarded(session.peer[:2], self._local_address()[:2], "http3"))
            )
        # serialize.request_head without its keyword wrapper (the body kind as its code, inline).
        body = request.body
        code = 0 if body is _NONE else 1 if body is _LENGTH else 2 if body is _CHUNKED else 3
        return _request_head(request.method, request.path, request.authority, request.fields, code, request.content_length)

    @staticmethod
    def _peer_key(session: Session) -> str:
        """What PeerHash balances on: the certificate name, else the peer's address."""
        identity = session.peer_identity
        if identity is not None:
            return identity.name
        return str(session.peer[0]) if session.peer else ""

    async def _forward(
        self,
        session: Session,
        stream: TunnelStream,
        group: Group,
        request: TunnelRequest,
        head: bytes,
        peer_key: str,
    ) -> int:
        """Send the request to an origin of ``group``, on another one when that is safe."""
        resendable = request.method in IDEMPOTENT and request.body is _NONE
        tried: set[Origin] = set()
        failure: UpstreamError | None = None
        while True:
            # Without a coroutine (choose, acquire) or a context manager (lease) when nothing has
            # to wait: an origin UP and an idle connection to it, as nearly every request finds.
            origin = group.choose_now(peer_key, tried)
            if origin is None:
                try:
                    origin = await group.choose(peer_key, tried, failure)
                except UpstreamError as exc:
                    if exc is not failure:
                        logger.warning("%s %s", _where(session, stream), exc)
                    return self._fail(stream, exc.status, str(exc))
            if failure is not None:
                logger.info("%s retrying on origin %s", _where(session, stream), origin.address)
            tried.add(origin)
            origin.in_flight += 1  # Origin.lease(), inline
            try:
                conn = origin.take_idle()
                if conn is None:
                    try:
                        conn = await origin.acquire()
                    except UpstreamError as exc:
                        logger.warning("%s %s", _where(session, stream), exc)
                        failure = exc
                        continue
                try:
                    return await self._relay(session, stream, request, head, conn, origin, resendable)
                except _Retry as exc:
                    failure = exc
                    logger.warning("%s %s", _where(session, stream), exc)
            finally:
                origin.in_flight -= 1

    async def _relay(
        self,
        session: Session,
        stream: TunnelStream,
        request: TunnelRequest,
        head: bytes,
        conn: H1Connection,
        origin: Origin,
        resendable: bool,
    ) -> int:
        """Send ``head`` (and the body, if any) on ``conn``; relay the response back."""
        upload: asyncio.Task[bool] | None = None
        if request.body is not _NONE:
            # The upload task writes the head: the body bytes already received then join it in
            # one write to the origin (written here, the head would leave before the task ran).
            upload = asyncio.get_running_loop().create_task(self._upload(stream, request, head, conn))
        else:
            conn.write_now(head)  # the whole request: to the origin now, before this end's own packets
        # The response's parser, made after the write: no byte of the response can arrive before
        # this step ends, and any that did would wait in the connection for it (set_parser).
        conn.set_parser(ResponseParser(request.method))
        try:
            status, complete = await self._download(session, stream, conn, origin.address, upload, resendable)
        except BaseException:
            if upload is not None:
                upload.cancel()
            conn.abort()
            raise
        if upload is not None:
            if not upload.done():
                # Early response: the origin answered without reading the whole body.
                upload.cancel()
                stream.stop_receiving()
                complete = False
            elif not upload.result():
                complete = False
        if complete:
            origin.pool.release(conn)
        else:
            conn.close()
        return status

    async def _upload(self, stream: TunnelStream, request: TunnelRequest, head: bytes, conn: H1Connection) -> bool:
        """Request head, then DATA frames → origin (one chunk per frame when chunked). False if
        the body failed."""
        conn.write(head)
        try:
            await relay.stream_body_to_h1(stream, conn, request.body, request.content_length)
            return True
        except PtproxyError as exc:
            logger.warning("request body to origin failed: %s", exc)
            # The origin must not take a short body for a whole one: cut its connection.
            conn.abort()
            return False

    async def _download(
        self,
        session: Session,
        stream: TunnelStream,
        conn: H1Connection,
        address: str,
        upload: asyncio.Task[bool] | None = None,
        resendable: bool = False,
    ) -> tuple[int, bool]:
        """Origin response → stream. Raises _Retry when the origin closed the connection before
        any byte of a response to a ``resendable`` request (nothing reached the client yet)."""
        timeout = self.config.limits.origin_response_timeout / 1000.0
        interim_sent = False
        try:
            while True:
                if upload is None:  # no body to send: the response timeout runs from now
                    event = await conn.next_event(timeout=timeout)
                else:
                    event = await self._origin_event(conn, upload, timeout)
                if isinstance(event, ResponseHead):
                    if event.status >= 200:
                        break
                    if event.status != 101:
                        stream.send_headers(response_to_h3(event))
                        interim_sent = True
                    continue
        except TimeoutError:
            msg = f"origin {address} sent no response head within {timeout:g}s"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, UpstreamTimeout.status, msg), False
        except StreamAborted:
            raise  # the peer is gone, not the origin: _handle logs it (it is a PtproxyError too)
        except ConnectionClosed as exc:
            msg = f"origin {address}: {_describe(exc)}"
            if resendable and not interim_sent and conn.message_started_at is None:
                raise _Retry(msg) from None
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, 502, msg), False
        except PtproxyError as exc:
            msg = f"origin {address}: {_describe(exc)}"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, 502, msg), False
        head = event
        bad = conn.message_error()
        if bad is not None:
            # The rest of this response is already known to be malformed: answer 502 instead of
            # forwarding a head whose body would be cut.
            msg = f"origin {address}: {_describe(bad)}"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, 502, msg), False
        body = head.body
        try:
            h3_headers = _response_to_h3(head.status, head.headers, body is _CHUNKED)  # response_to_h3
        except PtproxyError as exc:
            return self._fail(stream, 502, f"origin {address} sent an invalid response: {exc}"), False
        if body is _NONE:
            stream.send_headers(h3_headers, end_stream=True)
            if not conn.take_end_of_message():
                await self._expect_end(conn)
            return head.status, head.keep_alive
        stream.send_headers(h3_headers)
        if body is _LENGTH:
            # A small response is usually here whole: its body (one piece, its end behind it)
            # leaves with the FIN at once, as relay.h1_body_to_stream would send it, in fewer steps.
            data = conn.take_last_body()
            if data is not None:
                await stream.send_data(data, end_stream=True)
                return head.status, head.keep_alive
        try:
            complete = await relay.h1_body_to_stream(conn, stream, head.body)
        except StreamAborted:
            raise  # the peer is gone, not the origin: _handle logs it (it is a PtproxyError too)
        except PtproxyError as exc:
            logger.warning(
                "[conn %d stream %d] origin response body failed: %s; resetting the stream",
                session.number,
                stream.stream_id,
                _describe_mid_body(exc),
            )
            stream.reset()
            return head.status, False
        return head.status, complete and head.keep_alive

    async def _origin_event(
        self, conn: H1Connection, upload: asyncio.Task[bool] | None, timeout: float
    ) -> Any:
        """The next event from the origin while waiting for the response head.

        The response timeout runs from the end of the request body: an origin still reading a
        long upload (slowly, as it may) is not late. While the body is being sent we only look
        up once a second to see whether it is done."""
        while upload is not None and not upload.done():
            try:
                return await conn.next_event(timeout=min(timeout, 1.0))
            except TimeoutError:
                pass
        return await conn.next_event(timeout=timeout)

    async def _expect_end(self, conn: H1Connection) -> None:
        event = await conn.next_event()
        assert isinstance(event, EndOfMessage)

    def _fail(self, stream: TunnelStream, status: int, message: str) -> int:
        body = (message + "\n").encode()
        headers = [
            (b":status", str(status).encode()),
            (b"server", SERVER_HEADER),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"date", serialize.http_date()),
        ]
        try:
            stream.send_headers(headers)
            stream.send_final(body)  # a few bytes: no waiting for send-buffer room
            stream.stop_receiving()
        except StreamAborted:
            pass
        return status


def _where(session: Session, stream: TunnelStream) -> str:
    """The log prefix naming a request (made when a line is logged, not per request)."""
    return f"[conn {session.number} stream {stream.stream_id}]"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return "closed the connection before responding"
    return str(exc)


def _describe_mid_body(exc: BaseException) -> str:
    """Why a response body could not be relayed whole, for the log line."""
    if isinstance(exc, ConnectionReset):
        return "origin reset the connection mid-body"
    if isinstance(exc, ConnectionClosed):
        return "origin closed the connection mid-body"
    return str(exc)
