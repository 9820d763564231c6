"""HTTP/1.1 request and response parsers over httptools (llhttp) callbacks, sans-IO.

# Strategy:
# llhttp does the byte-level work and is strict by default: it rejects obs-fold, whitespace before
# the colon, CTLs in names and values, bare LF, CL+TE, duplicate or malformed Content-Length, and bad
# or overflowing chunk sizes (see tests/unit/test_http1_parser.py, one test per vector). On top of it
# we decide framing ourselves at the end of each head, because llhttp is lenient exactly where request
# smuggling lives:
#   - it accepts "Transfer-Encoding: gzip, chunked" (and any non-chunked coding on responses); we
#     accept only exactly "chunked" (reference: "Any Transfer-Encoding other than exactly chunked is
#     rejected"), and no Transfer-Encoding at all on HTTP/1.0 (RFC 9112 6.1: "MUST treat the message
#     as if the framing is faulty");
#   - it accepts HTTP/0.9 and 2.0 request lines, absolute-form targets, "*" with any method, requests
#     without Host (RFC 9112 3.2: "A server MUST respond with a 400 ... to any HTTP/1.1 request message
#     that lacks a Host header field and to any request message that contains more than one Host
#     header field line or a Host header field with an invalid field value");
#   - on "Connection: Upgrade" + "Upgrade" it stops at the end of the head and *skips the body*
#     (httptools returns 1 from on_headers_complete), so the body would be parsed as the next request.
#     We treat Upgrade requests as ordinary requests: after HttpParserUpgrade we start a fresh llhttp
#     primed with a synthetic head carrying the same framing and keep parsing the real body bytes.
#     The exception is a WebSocket handshake (wire/websocket.py is_handshake: GET, no body): what
#     follows its head is frames, not requests, so the parser ends there and keeps those bytes in
#     ``leftover`` for whoever takes the connection over.
# Limits are enforced from callback sizes (request line, field bytes, field count) plus a guard for a
# single field line growing across feeds inside httptools, where no callback fires until it ends.
#
# Chunk extensions: llhttp rejects the whitespace RFC 9112 7.1.1 allows around ";" and "=" (BWS), so
# we feed it each head up to its CRLFCRLF and each body by its framing: exactly Content-Length bytes,
# and chunked bodies through ``chunked.ChunkedScanner``, which follows the chunk sizes and hands
# llhttp a valid chunk-size line with such whitespace as plain ``chunk-size CRLF`` (extensions are
# dropped in any case). Every other byte reaches llhttp as received, so it still rejects bad lines.
#
# Responses: one parser per response. llhttp cannot be told that the request was HEAD, and since a
# message always ends at the end of a feed_data call (see above), ``leftover`` is exact and we can
# stop after a HEAD response's head.
#
# Plain heads (wire/headscan.py, a compiled twin): a head complete in one feed, while llhttp has
# seen nothing (a new parser, or only plain messages so far), is read by one scanner call when it is
# plain (known method, origin-form target, one valid Host, tchar names, VCHAR/SP/HTAB values, no
# Transfer-Encoding / Upgrade / Proxy-Connection, Content-Length and Connection in one plain form, a
# final response with a Content-Length or no body). Its event and framing are what the callbacks
# would make of it; a Content-Length body after such a head is counted off without llhttp. Anything
# else, and everything after it on this parser, goes to llhttp, which is then made (so a response
# parser that only sees a plain response never makes one).
#
# Errors: a bad request raises ClientProtocolError (or 405/414/431 subclasses); a bad response raises
# UpstreamError. Events that precede the error in the same feed are returned first and the error is
# raised by the next feed() (feed(b"") suffices) and is visible at once as ``.error``. A failed parser
# stays failed.
"""

from __future__ import annotations

from httptools import HttpRequestParser, HttpResponseParser
from httptools.parser.errors import HttpParserError, HttpParserInvalidMethodError, HttpParserUpgrade

from ptproxy.errors import (
    ClientProtocolError,
    HeadersTooLarge,
    MethodNotAllowed,
    PtproxyError,
    RequestLineTooLong,
    UpstreamError,
)
from ptproxy.wire._parsebase import (
    BODY,
    HEAD,
    HOST_OK,
    IDLE,
    REASON_OK,
    VERSIONS,
    VISIBLE,
    BaseParser,
    Framing,
)
from ptproxy.wire.events import BodyKind, EndOfMessage, Event, RequestHead, ResponseHead
from ptproxy.wire.headscan import scan_request, scan_response
from ptproxy.wire.websocket import is_handshake

__all__ = ["RequestParser", "ResponseParser"]


class RequestParser(BaseParser):
    """Parses requests from the local service: ``feed(data) -> list[Event]``; pipelining supported.

    After a request that does not keep the connection alive, later bytes are ignored (RFC 9112 9.6:
    "The server SHOULD NOT process any further requests received on that connection")."""

    _what = "invalid request"

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_bytes: int = 65536,
        max_header_count: int = 100,
    ) -> None:
        super().__init__(
            max_header_bytes, max_header_count, max_request_line + max_header_bytes + 4
        )
        self._max_request_line = max_request_line
        self._url: list[bytes] = []
        self._url_len = 0
        self._synthetic = False
        self._skip_eom = False
        self._content_length: int | None = None
        self._websocket = False  # the head being parsed is a WebSocket handshake
        self._upgraded = False  # ... and it ended this parser: later bytes go to leftover
        self._leftover = bytearray()

    def _new_llhttp(self) -> HttpRequestParser:
        ns = self._callbacks()
        ns.on_url = self._on_url
        llhttp = HttpRequestParser(ns)
        # After "Connection: close" llhttp errors on further bytes; we want them ignored instead.
        llhttp.set_dangerous_leniencies(lenient_data_after_close=True)
        return llhttp

    def _too_large(self, message: str) -> PtproxyError:
        return HeadersTooLarge(message)

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` (any split); return the events it completes, in order."""
        if self._error is not None:
            self._raise_stored()
        if self._ended or not data:
            if self._upgraded:
                self._leftover += data
            return []
        return self._parse(data)

    @property
    def upgraded(self) -> bool:
        """The last request was a WebSocket handshake: this parser takes no more requests."""
        return self._upgraded

    @property
    def leftover(self) -> bytes:
        """After a WebSocket handshake, the bytes received past its head (frames)."""
        return bytes(self._leftover)

    def _after_end(self, rest: bytes) -> None:
        if self._upgraded:
            self._leftover += rest

    def _translate(self, exc: HttpParserError) -> BaseException:
        if isinstance(exc, HttpParserInvalidMethodError):
            return ClientProtocolError("invalid request: unknown or malformed method")
        return super()._translate(exc)

    def _restart_after_upgrade(self) -> None:
        if self._upgraded:
            return  # the handshake ended this parser; _after_end keeps what follows
        self._llhttp = self._new_llhttp()
        if self._state != BODY:
            return
        # The body llhttp skipped is still ahead of us: prime a fresh llhttp with a head of the same
        # framing (its events are suppressed) so the real body bytes are parsed, then what follows.
        framing = (
            b"Transfer-Encoding: chunked"
            if self._body is BodyKind.CHUNKED
            else b"Content-Length: %d" % (self._content_length or 0)
        )
        close = b"" if self._keep_alive else b"Connection: close\r\n"
        self._synthetic = True
        self._llhttp.feed_data(b"POST / HTTP/1.1\r\nHost: x\r\n%b%b\r\n\r\n" % (close, framing))

    def _plain_head(self, data: bytes, pos: int, end: int) -> bool:
        head = scan_request(
            data, pos, end, self._max_request_line, self._max_header_bytes, self._max_header_count
        )
        if head is None:
            return False
        # What the callbacks below make of the same head (no Upgrade, no CONNECT, no error here).
        self._headers = head.headers
        self._trailers = []
        length = self._content_length = head.content_length
        self._keep_alive = head.keep_alive
        self._start_body(head.body, length)
        self._events.append(head)
        if not length:
            self._on_message_complete()
        return True

    # -- callbacks -------------------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        if self._synthetic:
            return
        super()._on_message_begin()
        self._url = []
        self._url_len = 0

    def _on_url(self, piece: bytes) -> None:
        if self._synthetic:
            return
        if not self._url:
            # "method SP request-target SP HTTP-version": the method is known once the target starts
            # (not yet in on_message_begin).
            self._url_len = len(self._llhttp.get_method()) + len(b"  HTTP/1.1")
        self._url.append(piece)
        self._url_len += len(piece)
        # llhttp reports a partial target at the end of every feed, so this bounds it precisely.
        if self._url_len > self._max_request_line:
            raise RequestLineTooLong(f"request line longer than {self._max_request_line} bytes")

    def _on_headers_complete(self) -> None:
        if self._synthetic:
            self._synthetic = False
            return
        llhttp = self._llhttp
        method: bytes = llhttp.get_method()
        if method == b"CONNECT":
            raise MethodNotAllowed("CONNECT is not supported")
        version = VERSIONS.get(llhttp.get_http_version())
        if version is None:
            raise ClientProtocolError(f"unsupported HTTP version {llhttp.get_http_version()}")
        target = b"".join(self._url)
        self._check_target(method, target)
        framing = Framing(self._headers)
        if len(framing.hosts) != 1:
            raise ClientProtocolError(
                "missing Host" if not framing.hosts else "several Host fields"
            )
        host = framing.hosts[0]
        if not host or host.translate(None, HOST_OK):
            raise ClientProtocolError(f"invalid Host {host[:64]!r}")
        body, length = framing.body(version, ClientProtocolError)
        self._content_length = length
        self._keep_alive = bool(llhttp.should_keep_alive())
        self._start_body(body, length)
        # Upgrade with a body: llhttp is about to report the message complete without reading it.
        upgrade = bool(llhttp.should_upgrade())
        self._skip_eom = upgrade and (body is BodyKind.CHUNKED or (body is BodyKind.LENGTH and bool(length)))
        self._websocket = upgrade and is_handshake(method, version, self._headers, body)
        self._events.append(
            RequestHead(
                method=method,
                target=target,
                headers=self._headers,
                http_version=version,
                keep_alive=self._keep_alive,
                body=body,
                content_length=length,
                # RFC 9110 10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
                # request MUST ignore that expectation."
                expect_continue=framing.expect and version == (1, 1),
            )
        )

    @staticmethod
    def _check_target(method: bytes, target: bytes) -> None:
        if target.translate(None, VISIBLE):
            raise ClientProtocolError(f"invalid byte in request target {target[:64]!r}")
        if target[:1] == b"/":
            return  # origin-form (RFC 9112 3.2.1)
        if target == b"*":
            # RFC 9112 3.2.4: asterisk-form "is only used for a server-wide OPTIONS request".
            if method != b"OPTIONS":
                raise ClientProtocolError(f"request target * with {method.decode('ascii')}")
            return
        if b"://" in target:
            # RFC 9112 3.2.2 absolute-form: this is a forward-proxy request; we are a reverse proxy.
            raise ClientProtocolError(
                "absolute-form request target (proxy request) is not supported"
            )
        raise ClientProtocolError(f"invalid request target {target[:64]!r}")

    def _on_message_complete(self) -> None:
        if self._skip_eom:
            self._skip_eom = False
            return
        self._state = IDLE
        self._events.append(EndOfMessage(self._trailers))
        if not self._keep_alive or self._websocket:
            self._ended = True
            self._upgraded = self._websocket


class ResponseParser(BaseParser):
    """Parses one response from the origin (interim 1xx responses first, then the final one).

    Create one per request with the request's method; ``feed`` bytes as they arrive and ``feed_eof``
    when the origin closes. ``done`` turns True after the final EndOfMessage; ``leftover`` holds bytes
    that came after it (non-empty means the connection cannot be reused)."""

    _error_class = UpstreamError
    _what = "invalid response from origin"

    def __init__(
        self,
        request_method: bytes,
        *,
        max_header_bytes: int = 65536,
        max_header_count: int = 100,
        upgrade: bool = False,
    ) -> None:
        super().__init__(max_header_bytes, max_header_count, max_header_bytes + 8192)
        # The request asked to upgrade (a WebSocket handshake): a 101 is its final response, and
        # what follows it (``leftover``) belongs to the new protocol.
        self._upgrade = upgrade
        # RFC 9112 6.3 step 1: a response to HEAD ends at the end of its header section.
        self._head_request = request_method == b"HEAD"
        self._leftover = b""
        self._reason: list[bytes] = []
        self._seen_head = False
        self._interim = False

    def _new_llhttp(self) -> HttpResponseParser:
        ns = self._callbacks()
        ns.on_status = self._on_status
        return HttpResponseParser(ns)

    @property
    def done(self) -> bool:
        """True once the final response's EndOfMessage has been returned."""
        return self._ended

    @property
    def leftover(self) -> bytes:
        """Bytes received after the final response (should be empty)."""
        return self._leftover

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` (any split); return the events it completes, in order."""
        if self._error is not None:
            self._raise_stored()
        if self._ended:
            self._leftover += data
            return []
        if not data:
            return []
        events = self._parse(data)
        if self._ended:
            # llhttp holds our bound callbacks, a reference cycle (parser -> llhttp -> callbacks
            # -> parser) that only the garbage collector frees: ~20 objects with the events, per
            # request. Dropped once the response ended, the parser goes by reference counting.
            self._llhttp = None
        return events

    def feed_eof(self) -> list[Event]:
        """The origin closed the connection: end a close-delimited body, or raise UpstreamError."""
        if self._error is not None:
            self._raise_stored()
        if self._ended:
            return []
        events = self._events = []
        if self._state == BODY and self._body is BodyKind.CLOSE:
            self._ended = True
            self._llhttp = None  # the cycle, as in feed
            events.append(EndOfMessage([]))
            return events
        if self._state == BODY:
            what = "chunked body" if self._body is BodyKind.CHUNKED else "body"
            msg = f"origin closed the connection before the end of the {what}"
        elif self._state == HEAD:
            msg = "origin closed the connection in the middle of the response head"
        elif self._seen_head:
            msg = "origin closed the connection after an interim response"
        else:
            msg = "origin closed the connection without sending a response"
        self._error = UpstreamError(msg)
        raise self._error

    def _after_end(self, rest: bytes) -> None:
        self._leftover += rest

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            super()._feed(data)
        except HttpParserUpgrade:
            # Only a 101 makes llhttp stop here, and _on_headers_complete refuses 101 first
            # unless the request asked for it; then _execute stops and keeps the rest as leftover.
            if self._ended:
                raise
            raise UpstreamError("origin switched protocols") from None

    def _restart_after_upgrade(self) -> None:
        return None  # the 101 ended this parser: nothing more to parse as HTTP

    def _plain_head(self, data: bytes, pos: int, end: int) -> bool:
        head = scan_response(
            data, pos, end, self._max_header_bytes, self._max_header_count, self._head_request
        )
        if head is None:
            return False
        # What the callbacks below make of the same head (a final response, no error here).
        self._headers = head.headers
        self._trailers = []
        self._seen_head = True
        length = head.content_length
        self._start_body(head.body, length)
        self._events.append(head)
        if not length:
            self._finish()  # HEAD, 204, 304 or Content-Length: 0: the response ends at its head
        return True

    # -- callbacks -------------------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        super()._on_message_begin()
        self._reason = []

    def _on_status(self, piece: bytes) -> None:
        self._reason.append(piece)
        self._header_bytes += len(piece)
        if self._header_bytes > self._max_header_bytes:
            raise UpstreamError("response status line too long")

    def _on_headers_complete(self) -> None:
        if self._ended:
            return
        llhttp = self._llhttp
        status: int = llhttp.get_status_code()
        version = VERSIONS.get(llhttp.get_http_version())
        if version is None:
            raise UpstreamError(f"origin answered with HTTP version {llhttp.get_http_version()}")
        if status == 101 and not self._upgrade:
            # We forward Upgrade only for a WebSocket handshake, so a 101 is a violation here.
            raise UpstreamError("origin switched protocols (101) without an upgrade request")
        if not 100 <= status <= 599:
            # RFC 9110 15: "Values outside the range 100..599 are invalid." llhttp takes 000..999.
            raise UpstreamError(f"origin sent invalid status {status}")
        reason = b"".join(self._reason)
        if reason.translate(None, REASON_OK):
            raise UpstreamError(f"invalid byte in reason phrase {reason[:64]!r}")
        framing = Framing(self._headers)
        body, length = framing.body(version, UpstreamError)
        interim = status < 200
        if interim or self._head_request or status in (204, 304):
            body, length = BodyKind.NONE, None  # RFC 9112 6.3 step 1
        elif body is BodyKind.NONE:
            body = BodyKind.CLOSE  # RFC 9112 6.3 step 8: read until the connection closes
        # RFC 9112 9.3: persistent unless "close", or HTTP/1.0 without "keep-alive".
        if b"close" in framing.conn or body is BodyKind.CLOSE:
            keep_alive = False
        else:
            keep_alive = version == (1, 1) or b"keep-alive" in framing.conn
        self._seen_head = True
        self._interim = interim
        self._start_body(body, length)
        self._events.append(
            ResponseHead(
                status=status,
                reason=reason,
                headers=self._headers,
                http_version=version,
                keep_alive=keep_alive,
                body=body,
                content_length=length,
            )
        )
        if (self._head_request and not interim) or status == 101:
            # llhttp would wait for a body that a HEAD response never has: end here ourselves.
            # After a 101 the bytes are the new protocol's, not a response.
            self._finish()

    def _on_body(self, data: bytes) -> None:
        if not self._ended:
            super()._on_body(data)

    def _on_message_complete(self) -> None:
        if self._ended:
            return
        if self._interim:
            # A 1xx ends at its head; llhttp goes on with the next response on the same bytes.
            self._state = IDLE
            self._events.append(EndOfMessage([]))
            return
        self._finish()

    def _finish(self) -> None:
        self._state = IDLE
        self._ended = True
        self._events.append(EndOfMessage(self._trailers))
