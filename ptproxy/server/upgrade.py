"""Server end of a WebSocket: an Extended CONNECT stream replayed as an HTTP/1.1 upgrade.

Flow: the request (already routed, its identity headers set: see origin.py) → a *fresh*
connection to an origin of its group (an upgraded connection never returns to a pool) → ``GET``
with ``Upgrade: websocket`` and a key of our own → the origin's ``101``, checked against that key →
``200`` on the stream → bytes relayed raw both ways (ptproxy/splice.py) until either side closes.
Any other answer from the origin (a 403, a 404 with its body) is passed back as the response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ptproxy import relay
from ptproxy.errors import PtproxyError, UpstreamError
from ptproxy.h1conn import ConnectionClosed, H1Connection
from ptproxy.ops.config import Config
from ptproxy.server.pool import OriginConnectError
from ptproxy.server.upstream import Group, Origin
from ptproxy.splice import SocketEnd, Splice
from ptproxy.tunnel import StreamAborted, TunnelStream
from ptproxy.wire import websocket
from ptproxy.wire.events import BodyKind, ResponseHead
from ptproxy.wire.h3map import response_to_h3
from ptproxy.wire.parser import ResponseParser

__all__ = ["DRAIN_GRACE", "abort_all", "forward_websocket"]

logger = logging.getLogger("ptproxy.backend")

# Backend._fail: answer the stream with a synthetic response; returns the status.
Fail = Callable[[TunnelStream, int, str], int]

# Seconds open WebSockets may go on once shutdown began (a hand-off too): unlike a request they
# have no natural end to wait for, so after this they are cut (as TCP streams are).
DRAIN_GRACE = 10.0


def abort_all(splices: set[Splice], reason: str) -> None:
    """End every open WebSocket now (both sides reset)."""
    for splice in list(splices):
        splice.abort(reason)


async def forward_websocket(
    stream: TunnelStream,
    group: Group,
    head: bytes,
    peer_key: str,
    *,
    config: Config,
    fail: Fail,
    where: str,
    splices: set[Splice],
) -> int:
    """Replay a WebSocket request (``head``: its serialized GET without the upgrade lines) to an
    origin of ``group``; on to the next origin only when a connection could not be made. The
    splice is in ``splices`` while it runs (see :func:`abort_all`)."""
    key = websocket.new_key()
    head = websocket.with_upgrade(head, key)
    tried: set[Origin] = set()
    failure: UpstreamError | None = None
    while True:
        try:
            origin = await group.choose(peer_key, tried, failure)
        except UpstreamError as exc:
            if exc is not failure:
                logger.warning("%s %s", where, exc)
            return fail(stream, exc.status, str(exc))
        tried.add(origin)
        with origin.lease():
            try:
                # Fresh, never pooled: the upgraded connection is the WebSocket's for good.
                conn = await origin.acquire(fresh=True)
            except OriginConnectError as exc:
                logger.warning("%s %s", where, exc)
                failure = exc
                continue
            try:
                return await _handshake(stream, conn, origin.address, head, key, config, fail, where, splices)
            finally:
                conn.close()  # after a splice the transport is closed already: no-op


async def _handshake(
    stream: TunnelStream,
    conn: H1Connection,
    address: str,
    head: bytes,
    key: bytes,
    config: Config,
    fail: Fail,
    where: str,
    splices: set[Splice],
) -> int:
    limits = config.limits
    conn.set_parser(ResponseParser(b"GET", max_header_bytes=limits.max_header_bytes, upgrade=True))
    conn.write(head)
    timeout = limits.origin_response_timeout / 1000.0
    try:
        answer = await _final_head(conn, timeout)
    except TimeoutError:
        return _failed(stream, fail, where, 504, f"origin {address} sent no response head within {timeout:g}s")
    except ConnectionClosed:
        return _failed(stream, fail, where, 502, f"origin {address} closed the connection before responding")
    except PtproxyError as exc:
        return _failed(stream, fail, where, 502, f"origin {address}: {exc}")
    if answer.status != 101:
        return await _pass_back(stream, conn, answer, address, fail, where)
    problem = websocket.check_switch(answer, key)
    if problem is not None:
        return _failed(stream, fail, where, 502, f"origin {address} {problem}")
    try:
        h3_headers = websocket.response_to_h3(answer)
    except PtproxyError as exc:
        return _failed(stream, fail, where, 502, f"origin {address} sent an invalid 101: {exc}")
    stream.send_headers(h3_headers)
    await _splice(stream, conn, config, f"{where} websocket to origin {address}", splices)
    return 200


async def _final_head(conn: H1Connection, timeout: float) -> ResponseHead:
    """The origin's 101 or final response head (other interim responses are skipped: the
    HTTP/1.1 client gets its own 101 from the client end, nothing before it)."""
    while True:
        event = await conn.next_event(timeout=timeout)
        if isinstance(event, ResponseHead) and (event.status == 101 or event.status >= 200):
            return event


def _failed(stream: TunnelStream, fail: Fail, where: str, status: int, message: str) -> int:
    logger.warning("%s %s", where, message)
    return fail(stream, status, message)


async def _pass_back(
    stream: TunnelStream, conn: H1Connection, answer: ResponseHead, address: str, fail: Fail, where: str
) -> int:
    """The origin refused the upgrade: its response (head and body) is the stream's response."""
    bad = conn.message_error()
    try:
        if bad is not None:
            raise bad
        h3_headers = response_to_h3(answer)
    except PtproxyError as exc:
        return _failed(stream, fail, where, 502, f"origin {address} sent an invalid response: {exc}")
    if answer.body is BodyKind.NONE:
        stream.send_headers(h3_headers, end_stream=True)
        return answer.status
    stream.send_headers(h3_headers)
    try:
        await relay.h1_body_to_stream(conn, stream, answer.body)
    except StreamAborted:
        raise  # the peer is gone, not the origin: Backend._handle logs it
    except PtproxyError as exc:
        logger.warning("%s origin %s: response body failed: %s; resetting the stream", where, address, exc)
        stream.reset()
    return answer.status


async def _splice(
    stream: TunnelStream, conn: H1Connection, config: Config, what: str, splices: set[Splice]
) -> None:
    """Relay the switched connection's bytes both ways; the bytes the origin sent right behind
    its 101 (the parser's leftover) go first."""
    parser = conn.parser
    leftover = parser.leftover if isinstance(parser, ResponseParser) else b""
    assert conn.transport is not None
    end = SocketEnd.adopt(conn.transport, leftover, eof=conn.at_eof, tcp_nodelay=config.system.tcp_nodelay)
    splice = Splice(end, stream, idle_timeout=config.limits.tcp_idle_timeout / 1000.0)
    result = await splice.run_in(splices)
    level = logging.DEBUG if result.clean else logging.INFO
    logger.log(
        level,
        "%s ended after %.1fs: %s (%d bytes to the origin, %d from it)",
        what,
        result.seconds,
        result.reason,
        result.to_socket,
        result.to_stream,
    )
