"""Shared machinery of the HTTP/1.1 parsers: framing decisions and llhttp callback bookkeeping.

Private to ``ptproxy.http1``; ``parser.py`` holds the public RequestParser/ResponseParser and the
strategy comment that explains what is checked here and why.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from httptools.parser.errors import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from ptproxy.errors import ClientProtocolError, PtproxyError
from ptproxy.wire import chunked
from ptproxy.wire.events import BodyData, BodyKind, ChunkComplete, Event, Fields

__all__ = [
    "BODY",
    "HEAD",
    "HOST_OK",
    "IDLE",
    "OWS",
    "REASON_OK",
    "VERSIONS",
    "VISIBLE",
    "BaseParser",
    "Framing",
]

IDLE, HEAD, BODY = 0, 1, 2
OWS = b" \t"
VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}
# RFC 3986 characters (visible ASCII); llhttp lets some other bytes through in targets.
VISIBLE = bytes(range(0x21, 0x7F))
# RFC 9110 7.2: Host = uri-host [ ":" port ]; uri-host = IP-literal / IPv4address / reg-name.
HOST_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"
# RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); llhttp lets CTLs through.
REASON_OK = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


class Framing:
    """What one pass over a head's fields found (names compared case-insensitively)."""

    __slots__ = ("cl", "conn", "expect", "hosts", "te")

    def __init__(self, headers: Fields) -> None:
        self.hosts: list[bytes] = []
        self.te: list[bytes] = []
        self.cl: list[bytes] = []
        self.conn: set[bytes] = set()
        self.expect = False
        for name, value in headers:
            lname = name.lower()
            if lname == b"host":
                self.hosts.append(value)
            elif lname == b"transfer-encoding":
                self.te.append(value)
            elif lname == b"content-length":
                self.cl.append(value)
            elif lname == b"connection":
                if b"," in value:
                    self.conn.update(t.strip(OWS).lower() for t in value.split(b","))
                else:  # the usual "keep-alive" / "close": no generator (3.7 % of the server end)
                    self.conn.add(value.strip(OWS).lower())
            elif lname == b"expect" and value.lower() == b"100-continue":
                self.expect = True

    def body(
        self, version: tuple[int, int], err: type[PtproxyError]
    ) -> tuple[BodyKind, int | None]:
        """RFC 9112 6.3 steps 3-6, strict: returns CHUNKED, LENGTH or NONE (caller maps NONE)."""
        if self.te:
            if version == (1, 0):
                raise err("Transfer-Encoding in an HTTP/1.0 message")
            if self.cl:
                # RFC 9112 6.1: "A server MAY reject a request that contains both Content-Length and
                # Transfer-Encoding ... Such a message might indicate an attempt to perform request
                # smuggling". We always reject.
                raise err("both Content-Length and Transfer-Encoding")
            if len(self.te) != 1 or self.te[0].lower() != b"chunked":
                raise err(f"unsupported Transfer-Encoding {b', '.join(self.te)[:64]!r}")
            return BodyKind.CHUNKED, None
        if self.cl:
            # RFC 9112 6.3 step 5: several or invalid Content-Length values are "unrecoverable".
            if len(self.cl) != 1:
                raise err("several Content-Length fields")
            value = self.cl[0]
            if not value.isdigit():
                raise err(f"invalid Content-Length {value[:32]!r}")
            return BodyKind.LENGTH, int(value)
        return BodyKind.NONE, None


class BaseParser:
    """Callbacks and bookkeeping shared by both directions."""

    _error_class: type[PtproxyError] = ClientProtocolError
    # llhttp, made when the first head that is not plain (headscan.py) reaches it: None until then
    _llhttp: Any = None
    # The request parser feeds llhttp a head of its own after an Upgrade; its callbacks skip it.
    _synthetic = False
    # No more messages: after a request that does not keep the connection alive, or after the
    # final response.
    _ended = False

    def __init__(self, max_header_bytes: int, max_header_count: int, guard: int) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._guard = guard  # head bytes fed across whole feeds beyond which the head is too large
        self._events: list[Event] = []
        self._error: PtproxyError | None = None
        self._state = IDLE
        self._fresh_head = False
        self._stalled = 0
        self._headers: Fields = []
        self._trailers: Fields = []
        self._header_bytes = 0
        self._body = BodyKind.NONE
        self._remaining = 0  # Content-Length body bytes not yet parsed
        self._chunk_has_data = False
        self._keep_alive = True
        self._tail = b""  # up to 3 bytes fed last, to find CRLFCRLF across feeds
        # Follows chunked bodies ahead of llhttp so chunk extensions with whitespace pass; made at
        # the first chunked body (a parser per origin response mostly never sees one).
        self._chunks: chunked.ChunkedScanner | None = None

    def _callbacks(self) -> SimpleNamespace:
        # A separate namespace keeps the on_* callbacks off the public surface of the parser.
        return SimpleNamespace(
            on_message_begin=self._on_message_begin,
            on_header=self._on_header,
            on_headers_complete=self._on_headers_complete,
            on_body=self._on_body,
            on_chunk_header=self._on_chunk_header,
            on_chunk_complete=self._on_chunk_complete,
            on_message_complete=self._on_message_complete,
        )

    @property
    def error(self) -> PtproxyError | None:
        """The error that ended parsing, if any (raised now or by the next feed())."""
        return self._error

    # -- callbacks -------------------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        self._state = HEAD
        self._fresh_head = True
        self._stalled = 0
        self._headers = []
        self._trailers = []
        self._header_bytes = 0
        self._chunk_has_data = False

    def _on_header(self, name: bytes, value: bytes) -> None:
        # llhttp drops leading OWS; trailing OWS is ours to strip (RFC 9112 5: "field-line = field-name
        # ":" OWS field-value OWS").
        if self._synthetic:
            return  # a head the request parser made up itself (after an Upgrade): not the client's
        value = value.strip(OWS)
        target = self._trailers if self._state == BODY else self._headers
        target.append((name, value))
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            raise self._too_large(f"header section larger than {self._max_header_bytes} bytes")
        if len(self._headers) + len(self._trailers) > self._max_header_count:
            raise self._too_large(f"more than {self._max_header_count} header fields")

    def _too_large(self, message: str) -> PtproxyError:
        return self._error_class(message)

    def _on_headers_complete(self) -> None:
        raise NotImplementedError

    def _on_body(self, data: bytes) -> None:
        self._remaining -= len(data)
        self._chunk_has_data = True
        self._events.append(BodyData(data))

    def _on_chunk_header(self) -> None:
        self._chunk_has_data = False

    def _on_chunk_complete(self) -> None:
        # llhttp also reports the zero-size last-chunk; it carried no data, so no ChunkComplete.
        if self._chunk_has_data:
            self._chunk_has_data = False
            self._events.append(ChunkComplete())

    def _on_message_complete(self) -> None:
        raise NotImplementedError

    def _start_body(self, body: BodyKind, length: int | None) -> None:
        """The head is complete: what follows is its body, delimited as ``body``."""
        self._body = body
        self._remaining = length or 0
        if body is BodyKind.CHUNKED:
            if self._chunks is None:
                self._chunks = chunked.ChunkedScanner()
            else:
                self._chunks.reset()
        self._state = BODY

    # -- driving llhttp --------------------------------------------------------------------------

    def _parse(self, data: bytes) -> list[Event]:
        """Run ``data`` (not empty) through llhttp; return the events it completes, in order."""
        events = self._events = []
        self._fresh_head = False
        try:
            self._execute(data)
            if self._state == HEAD and not self._fresh_head:  # (_check_stall's own test, inline)
                self._check_stall(len(data))
        except PtproxyError as exc:
            return self._fail(exc, events)
        return events

    def _execute(self, data: bytes) -> None:
        """Feed llhttp one stretch at a time: a head up to its CRLFCRLF, a body by its framing."""
        if (
            self._state == IDLE
            and self._llhttp is None
            and not self._ended
            and data[-4:] == b"\r\n\r\n"
            and self._plain_head(data, 0, len(data))
        ):
            # The whole feed is one plain head (the usual bodiless request, read by one scanner
            # call): what the loop below makes of it, without its stretch bookkeeping.
            self._tail = data[-3:]
            return
        view = memoryview(data)
        pos, n = 0, len(data)
        while pos < n and not self._ended:
            if self._state == BODY and self._body is BodyKind.CHUNKED:
                pos = self._feed_chunked(data, view, pos)
                continue
            if self._state == BODY and self._body is BodyKind.LENGTH and self._remaining > 0:
                end = pos + min(self._remaining, n - pos)
                if self._llhttp is None:
                    # The head came through the plain-head scanner: llhttp has not seen this
                    # message, and a Content-Length body needs nothing of it (it would hand these
                    # bytes to _on_body as one piece).
                    self._on_body(data[pos:end] if type(data) is bytes else bytes(view[pos:end]))
                    if self._remaining == 0:
                        self._on_message_complete()
                    self._tail = data[end - 3 : end] if end - pos >= 3 else (self._tail + data[pos:end])[-3:]
                    pos = end
                    continue
            elif self._state == BODY and self._body is BodyKind.CLOSE:
                end = n
            else:
                end = self._boundary(data, pos)
                # A plain head, complete here, while llhttp has seen nothing yet (a new parser, or
                # only plain messages so far): read it without llhttp (headscan.py).
                if self._llhttp is None and self._state == IDLE and self._plain_head(data, pos, end):
                    self._tail = data[end - 3 : end]
                    pos = end
                    continue
            try:
                self._feed(data if end - pos == n else view[pos:end])
            except HttpParserUpgrade as up:
                # llhttp stopped right after an Upgrade request's head (CONNECT is refused earlier).
                pos += int(up.args[0])
                self._restart_after_upgrade()
                continue
            # The last 3 bytes fed, to find a CRLFCRLF across feeds (_boundary).
            self._tail = data[end - 3 : end] if end - pos >= 3 else (self._tail + data[pos:end])[-3:]
            pos = end
        if pos < n:
            self._after_end(data[pos:])

    def _plain_head(self, data: bytes, pos: int, end: int) -> bool:
        """Take ``data[pos:end]`` as a plain head without llhttp if it is one (headscan.py)."""
        return False

    def _new_llhttp(self) -> Any:
        raise NotImplementedError

    def _feed(self, data: bytes | memoryview) -> None:
        """Hand ``data`` to llhttp (made at the first head the plain-head scanner leaves to it);
        raise its complaint as our error class."""
        if self._llhttp is None:
            self._llhttp = self._new_llhttp()
        try:
            self._llhttp.feed_data(data)
        except HttpParserError as exc:
            err = self._translate(exc)
            raise err from None

    def _restart_after_upgrade(self) -> None:
        raise NotImplementedError

    def _after_end(self, rest: bytes) -> None:
        """Bytes after the last message this parser takes: ignored unless a subclass keeps them."""

    def _boundary(self, data: bytes, pos: int) -> int:
        """Index just past the next CRLFCRLF at or after ``pos`` (counting the tail of earlier feeds),
        or the end of ``data``. A head, and a chunked body, can only end there."""
        tail = self._tail
        if tail:
            i = (tail + data[pos : pos + 3]).find(b"\r\n\r\n")
            if i != -1:
                return pos + i + 4 - len(tail)
        i = data.find(b"\r\n\r\n", pos)
        return len(data) if i == -1 else i + 4

    def _feed_chunked(self, data: bytes, view: memoryview, pos: int) -> int:
        """Feed llhttp the next stretch of a chunked body through the scanner; return where to go on.

        Chunk-size lines with extension whitespace reach llhttp rewritten, so feeds stop at them.
        """
        scanner = self._chunks
        assert scanner is not None  # made by _start_body
        if scanner.done:
            # llhttp has not ended a body the scanner saw end: it is the judge, give it the rest.
            self._feed(view[pos:])
            return len(data)
        end, insert, resume = scanner.scan(data, pos)
        if end > pos:
            self._feed(view[pos:end])
        if insert:
            self._feed(insert)
        self._tail = b""  # a CRLFCRLF in a body is not the end of a head
        return resume

    def _translate(self, exc: HttpParserError) -> BaseException:
        if isinstance(exc, HttpParserCallbackError):
            # httptools chains the exception our callback raised as the context.
            inner = exc.__context__
            if isinstance(inner, BaseException):
                return inner  # ours (a PtproxyError) or a bug, which must surface as itself
        return self._error_class(f"{self._what}: {exc}")

    _what = "invalid message"

    def _fail(self, exc: PtproxyError, events: list[Event]) -> list[Event]:
        self._error = exc
        if events:
            return events
        raise exc

    def _raise_stored(self) -> None:
        if self._error is not None:
            err = self._error
            raise type(err)(*err.args)

    def _check_stall(self, fed: int) -> None:
        # httptools concatenates a field name or value split across feeds without calling us until
        # it ends, so bound it here: bytes of feeds that began and ended inside one head are all head.
        if self._state == HEAD and not self._fresh_head:
            self._stalled += fed
            if self._stalled > self._guard:
                raise self._too_large(f"header section larger than {self._max_header_bytes} bytes")
