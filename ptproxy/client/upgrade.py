"""Client end of a WebSocket: an HTTP/1.1 handshake carried as an Extended CONNECT stream.

The listener (listener.py) opens the stream with the mapped head (wire/websocket.py) when the
server end's SETTINGS allow Extended CONNECT (:func:`peer_allows`); otherwise the handshake goes as
an ordinary GET, Upgrade dropped, as before. Here: the stream's answer → a ``2xx`` becomes
``101 Switching Protocols`` (the accept computed from the client's own key) and the bytes are
relayed raw both ways (ptproxy/splice.py), starting with what the client sent behind its head;
any other answer is passed to the client as the response, and the connection closes after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ptproxy import relay
from ptproxy.addr import format_address
from ptproxy.errors import PtproxyError, RemoteError, TunnelUnavailable, UpstreamError
from ptproxy.h1conn import H1Connection
from ptproxy.ops.config import Config
from ptproxy.splice import SocketEnd, Splice
from ptproxy.tunnel import H3_REQUEST_REJECTED, Headers, Session, StreamAborted, TunnelStream
from ptproxy.wire import serialize, websocket
from ptproxy.wire.events import BodyKind, RequestHead
from ptproxy.wire.h3map import NO_BODY_STATUSES, TunnelResponse, response_from_h3
from ptproxy.wire.parser import RequestParser

__all__ = ["DRAIN_GRACE", "SETTINGS_WAIT", "abort_all", "peer_allows", "serve_websocket"]

logger = logging.getLogger("ptproxy.frontend")

# The server end sends its SETTINGS with its first flight after the handshake; a session just up
# may not have delivered them yet.
SETTINGS_WAIT = 2.0

# Seconds open WebSockets may go on once shutdown began (a hand-off too): unlike a request they
# have no natural end to wait for, so after this they are cut (as TCP streams are).
DRAIN_GRACE = 10.0


def abort_all(splices: set[Splice], reason: str) -> None:
    """End every open WebSocket now (both sides reset)."""
    for splice in list(splices):
        splice.abort(reason)


async def peer_allows(session: Session, timeout: float = SETTINGS_WAIT) -> bool:
    """Whether the server end announced SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (aioquic does by
    default; another HTTP/3 peer may not), waiting up to ``timeout`` for its SETTINGS."""
    if session.peer_settings is None:
        either: set[asyncio.Future[Any]] = {session.settings_received, session.closed}
        await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return websocket.connect_protocol_enabled(session.peer_settings)


async def serve_websocket(
    conn: H1Connection,
    stream: TunnelStream,
    head: RequestHead,
    config: Config,
    answered: Callable[[int], None],
    splices: set[Splice],
) -> None:
    """Answer the handshake ``head`` from ``stream`` (its Extended CONNECT is sent) and, once
    switched, relay until either side closes. ``answered(status)`` counts the answer; the splice
    is in ``splices`` while it runs (see :func:`abort_all`)."""
    what = f"websocket {head.target[:200].decode('latin-1')} from {format_address(conn.peername)}"
    if conn.transport is not None:
        # Until the answer, nothing the client sends is needed: bound what the parser keeps.
        conn.transport.pause_reading()
    kind, length = BodyKind.NONE, None
    try:
        event, response = await _answer(stream)
        switched = 200 <= response.status < 300
        # Written only once it is known to be writable (a peer's field could be invalid here).
        if switched:
            first = websocket.switching_protocols(websocket.client_key(head.headers), response.fields)
        else:
            first, kind, length = _refusal_head(event, response)
    except asyncio.CancelledError:
        stream.reset()  # shutting down before the answer: the server end must not wait on it
        raise
    except PtproxyError as exc:
        if isinstance(exc, StreamAborted) and exc.code == H3_REQUEST_REJECTED:
            exc = TunnelUnavailable(f"the server end refused the request unprocessed: {exc}")
        elif not isinstance(exc, RemoteError):  # a field of the peer's answer we cannot write
            exc = UpstreamError(f"peer sent an invalid response: {exc}")
        logger.warning("%s: %d: proxying failed: %s", what, exc.status, exc)
        conn.write(serialize.error_response(exc.status, f"proxying failed: {exc}", side="client", close=True))
        stream.reset()
        answered(exc.status)
        return
    conn.write(first)
    if not switched:
        answered(response.status)
        await _pass_back(conn, stream, event, kind, length, what)
        return
    answered(101)
    await _splice(conn, stream, config, what, splices)


async def _answer(stream: TunnelStream) -> tuple[Headers, TunnelResponse]:
    """The stream's final response head (interim ones are not for this client: it waits for 101)."""
    while True:
        event = await stream.receive()
        if not isinstance(event, Headers):
            raise UpstreamError("peer sent data before the response head")
        response = response_from_h3(event.headers)
        if response.status >= 200:
            return event, response


def _refusal_head(event: Headers, response: TunnelResponse) -> tuple[bytes, BodyKind, int | None]:
    """The head of a refusal (origin or server end) for the client, with its body framing; the
    connection closes after it (the parser stopped at the handshake; what the client sent after
    it was meant as frames)."""
    status = response.status
    if status in NO_BODY_STATUSES:
        kind, length = BodyKind.NONE, None
    elif response.content_length is not None:
        kind, length = BodyKind.LENGTH, response.content_length
    elif event.stream_ended:
        kind, length = BodyKind.LENGTH, 0
    else:
        kind, length = BodyKind.CHUNKED, None
    head = serialize.response_head(status, response.fields, body=kind, content_length=length, close=True)
    return head, kind, length


async def _pass_back(
    conn: H1Connection, stream: TunnelStream, event: Headers, kind: BodyKind, length: int | None, what: str
) -> None:
    """The rest of a refusal whose head was written: its body, if any."""
    try:
        if not event.stream_ended:
            await relay.stream_body_to_h1(stream, conn, kind, length)
    except PtproxyError as exc:
        logger.warning("%s: response body failed after the head was sent: %s; closing the connection", what, exc)
        stream.reset()
        conn.abort()
        return
    stream.finish()


async def _splice(
    conn: H1Connection, stream: TunnelStream, config: Config, what: str, splices: set[Splice]
) -> None:
    """Hand the connection's transport to a splice; the bytes the client sent behind its
    handshake (the parser's leftover) go first, then everything as it comes."""
    parser = conn.parser
    leftover = parser.leftover if isinstance(parser, RequestParser) else b""
    if conn.transport is None or conn.is_closed:
        logger.info("%s: the client left before the switch", what)
        stream.reset()
        return
    end = SocketEnd.adopt(conn.transport, leftover, eof=conn.at_eof, tcp_nodelay=config.system.tcp_nodelay)
    splice = Splice(end, stream, idle_timeout=config.limits.tcp_idle_timeout / 1000.0)
    result = await splice.run_in(splices)
    level = logging.DEBUG if result.clean else logging.INFO
    logger.log(
        level,
        "%s ended after %.1fs: %s (%d bytes sent, %d received)",
        what,
        result.seconds,
        result.reason,
        result.to_stream,
        result.to_socket,
    )
