"""Server mode: replay each HTTP/3 request stream to the origin over a pooled HTTP/1.1 connection.

Flow: stream Headers → TunnelRequest → request head bytes → origin socket; request DATA frames →
one HTTP/1.1 chunk each (or raw bytes under Content-Length); origin response events → HTTP/3
HEADERS and DATA frames (one per chunk). Errors before the response head becomes a synthetic
response with ``Server: ptproxy server``; after it, the stream is reset so the client end cuts its
HTTP/1.1 connection instead of delivering a silently short body.
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
from ptproxy.server.pool import OriginPool
from ptproxy.tunnel import Headers, Session, StreamAborted, TunnelStream
from ptproxy.wire import serialize
from ptproxy.wire.events import BodyKind, EndOfMessage, ResponseHead
from ptproxy.wire.h3map import TunnelRequest, request_from_h3, response_to_h3
from ptproxy.wire.parser import ResponseParser

__all__ = ["Backend"]

logger = logging.getLogger("ptproxy.backend")

SIDE = "server"
SERVER_HEADER = b"ptproxy server"


class Backend:
    def __init__(
        self,
        config: Config,
        local_address: Callable[[], Any],
        on_request_done: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.config = config
        host, port = config.general.http_connect  # type: ignore[misc]
        limits = config.limits
        self.pool = OriginPool(
            host,
            port,
            tcp_nodelay=config.system.tcp_nodelay,
            max_idle=limits.max_origin_idle_connections,
            idle_timeout=limits.origin_idle_timeout / 1000.0,
            connect_timeout=limits.origin_connect_timeout / 1000.0,
        )
        self._local_address = local_address
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_request_done = on_request_done

    def on_request(self, session: Session, stream: TunnelStream) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(session, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float | None = None) -> None:
        """Wait for requests in flight."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)

    def close(self) -> None:
        self.pool.close()

    # -- one request --------------------------------------------------------------------------

    async def _handle(self, session: Session, stream: TunnelStream) -> None:
        started = time.monotonic()
        status = 0
        try:
            status = await self._exchange(session, stream)
        except StreamAborted as exc:
            logger.info("[conn %d stream %d] aborted: %s", session.number, stream.stream_id, exc)
        finally:
            stream.finish()
            if self._on_request_done is not None and status:
                self._on_request_done(SIDE, status, time.monotonic() - started)

    async def _exchange(self, session: Session, stream: TunnelStream) -> int:
        first = await stream.receive()
        assert isinstance(first, Headers)
        try:
            request = request_from_h3(first.headers, first.stream_ended)
            if self.config.system.add_forwarded:
                request.fields.append(
                    (b"forwarded", serialize.forwarded(session.peer[:2], self._local_address()[:2], "http3"))
                )
            head = serialize.request_head(
                request.method,
                request.path,
                request.authority,
                request.fields,
                body=request.body,
                content_length=request.content_length,
            )
        except PtproxyError as exc:
            status = exc.status if exc.status < 500 else 400
            return self._fail(stream, status, f"invalid request: {exc}")
        try:
            conn = await self._send_head(request, head)
        except UpstreamError as exc:
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, exc)
            return self._fail(stream, exc.status, str(exc))
        return await self._relay(session, stream, request, conn)

    async def _send_head(self, request: TunnelRequest, head: bytes) -> H1Connection:
        conn = await self.pool.acquire()
        conn.set_parser(ResponseParser(request.method))
        conn.write(head)
        return conn

    async def _relay(
        self, session: Session, stream: TunnelStream, request: TunnelRequest, conn: H1Connection
    ) -> int:
        upload: asyncio.Task[bool] | None = None
        if request.body is not BodyKind.NONE:
            upload = asyncio.get_running_loop().create_task(self._upload(stream, request, conn))
        try:
            status, complete = await self._download(session, stream, conn, upload)
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
            self.pool.release(conn)
        else:
            conn.close()
        return status

    async def _upload(self, stream: TunnelStream, request: TunnelRequest, conn: H1Connection) -> bool:
        """DATA frames → origin (one chunk per frame when chunked). False if the body failed."""
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
        upload: asyncio.Task[bool] | None = None,
    ) -> tuple[int, bool]:
        timeout = self.config.limits.origin_response_timeout / 1000.0
        try:
            while True:
                event = await self._origin_event(conn, upload, timeout)
                if isinstance(event, ResponseHead):
                    if event.status >= 200:
                        break
                    if event.status != 101:
                        stream.send_headers(response_to_h3(event))
                    continue
        except TimeoutError:
            msg = f"origin {self.pool.address} sent no response head within {timeout:g}s"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, UpstreamTimeout.status, msg), False
        except StreamAborted:
            raise  # the peer is gone, not the origin: _handle logs it (it is a PtproxyError too)
        except PtproxyError as exc:
            msg = f"origin {self.pool.address}: {_describe(exc)}"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, 502, msg), False
        head = event
        bad = conn.message_error()
        if bad is not None:
            # The rest of this response is already known to be malformed: answer 502 instead of
            # forwarding a head whose body would be cut.
            msg = f"origin {self.pool.address}: {_describe(bad)}"
            logger.warning("[conn %d stream %d] %s", session.number, stream.stream_id, msg)
            return self._fail(stream, 502, msg), False
        try:
            h3_headers = response_to_h3(head)
        except PtproxyError as exc:
            return self._fail(stream, 502, f"origin {self.pool.address} sent an invalid response: {exc}"), False
        if head.body is BodyKind.NONE:
            stream.send_headers(h3_headers, end_stream=True)
            await self._expect_end(conn)
            return head.status, head.keep_alive
        stream.send_headers(h3_headers)
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
