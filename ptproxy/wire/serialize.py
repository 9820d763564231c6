"""HTTP/1.1 heads from HTTP/3-style fields: request and status lines, field block, framing headers.

# Strategy:
# Callers hand in lowercase HTTP/3-style fields (what crossed the tunnel) plus the body kind the
# bytes after the head will use. Framing headers are ours to write, never the peer's: any incoming
# content-length is dropped when we frame the body ourselves, because "A sender MUST NOT send a
# Content-Length header field in any message that contains a Transfer-Encoding header field" (RFC
# 9112 6.2) and a stale length next to different framing is the classic smuggling ingredient. The
# method, target and authority come from the peer too and are checked so no CR/LF reaches the wire.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from email.utils import formatdate
from ipaddress import ip_address
from typing import Literal

from ptproxy.errors import HeaderError
from ptproxy.wire.events import BodyKind
from ptproxy.wire.fieldcodec import h3_to_h1_fields

__all__ = ["REASONS", "error_response", "forwarded", "http_date", "request_head", "response_head"]

# IANA HTTP Status Code Registry (RFC 9110 section 15 and the RFCs it lists).
REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    102: b"Processing",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    207: b"Multi-Status",
    208: b"Already Reported",
    226: b"IM Used",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    306: b"Unused",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    418: b"Unused",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    423: b"Locked",
    424: b"Failed Dependency",
    425: b"Too Early",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates",
    507: b"Insufficient Storage",
    508: b"Loop Detected",
    510: b"Not Extended",
    511: b"Network Authentication Required",
}

_date_cache: tuple[int, bytes] = (-1, b"")


def http_date(now: float | None = None) -> bytes:
    """IMF-fixdate (RFC 9110 5.6.7) for ``now`` (default: the wall clock), cached per second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True).encode("ascii"))
    return _date_cache[1]


# request-target and authority bytes: visible ASCII only (RFC 3986 characters are a subset); this is
# a safety net against line injection from the peer, not a URI parser.
_VISIBLE = bytes(range(0x21, 0x7F))
# RFC 9110 9.1: method = token.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HOST_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"


def _check_method(method: bytes) -> None:
    if not method or method.translate(None, _TCHAR):
        raise HeaderError(f"invalid method {method[:32]!r}")


def _check_target(target: bytes) -> None:
    if not target or target.translate(None, _VISIBLE):
        raise HeaderError(f"invalid request target {target[:64]!r}")


def _check_authority(authority: bytes) -> None:
    # RFC 9110 7.2: Host = uri-host [ ":" port ]; uri-host is reg-name / IPv4 / IP-literal.
    if not authority or authority.translate(None, _HOST_OK):
        raise HeaderError(f"invalid authority {authority[:64]!r}")


def _framed(fields: list[tuple[bytes, bytes]], drop_length: bool) -> list[tuple[bytes, bytes]]:
    if not drop_length:
        return fields
    return [(n, v) for n, v in fields if n != b"Content-Length"]


def _block(first_line: bytes, lines: list[tuple[bytes, bytes]], extra: list[bytes]) -> bytes:
    out = [first_line]
    for name, value in lines:
        out.append(b"%b: %b\r\n" % (name, value))
    out.extend(extra)
    out.append(b"\r\n")
    return b"".join(out)


def request_head(
    method: bytes,
    target: bytes,
    authority: bytes,
    fields: Sequence[tuple[bytes, bytes]],
    *,
    body: BodyKind,
    content_length: int | None,
) -> bytes:
    """``METHOD target HTTP/1.1``, ``Host`` first (RFC 9112 3.2: "a user agent SHOULD generate Host as
    the first field line"), Title-Case fields, then the framing for ``body``:

    - NONE: no Content-Length/Transfer-Encoding (RFC 9112 6.3: no framing header means no body);
    - LENGTH: ``Content-Length: content_length``;
    - CHUNKED: ``Transfer-Encoding: chunked`` and never Content-Length.

    Raises HeaderError for a method, target, authority or field that could not be written safely."""
    _check_method(method)
    _check_target(target)
    _check_authority(authority)
    if body is BodyKind.CLOSE:
        raise ValueError("a request body cannot be delimited by closing the connection")
    lines = [(n, v) for n, v in h3_to_h1_fields(fields) if n not in (b"Host", b"Content-Length")]
    extra: list[bytes] = []
    if body is BodyKind.LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        extra.append(b"Content-Length: %d\r\n" % content_length)
    elif body is BodyKind.CHUNKED:
        extra.append(b"Transfer-Encoding: chunked\r\n")
    first = b"%b %b HTTP/1.1\r\nHost: %b\r\n" % (method, target, authority)
    return _block(first, lines, extra)


def response_head(
    status: int,
    fields: Sequence[tuple[bytes, bytes]],
    *,
    body: BodyKind,
    content_length: int | None,
    add_date: bool = True,
    server: bytes | None = None,
    close: bool = False,
    now: float | None = None,
) -> bytes:
    """``HTTP/1.1 status Reason`` (standard phrase, RFC 9112 4: "a client SHOULD ignore the
    reason-phrase content"), Title-Case fields, ``Date`` when missing (RFC 9110 6.6.1), ``Server`` when
    given and missing, framing for ``body``, and ``Connection: close`` when ``close``:

    - NONE: fields are kept as they are (a HEAD or 304 response may carry the representation's
      Content-Length), except that 1xx and 204 never carry Content-Length (RFC 9110 8.6 "MUST NOT");
    - LENGTH: ``Content-Length: content_length`` replaces any given one;
    - CHUNKED: ``Transfer-Encoding: chunked``, any Content-Length dropped;
    - CLOSE: no framing header; ``Connection: close`` is implied.
    """
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} is outside 100..599")
    interim = status < 200
    lines = h3_to_h1_fields(fields)
    extra: list[bytes] = []
    names = {n for n, _ in lines}
    if add_date and not interim and b"Date" not in names:
        extra.append(b"Date: %b\r\n" % http_date(now))
    if server is not None and b"Server" not in names:
        extra.append(b"Server: %b\r\n" % server)
    if body is BodyKind.NONE:
        lines = _framed(lines, drop_length=interim or status == 204)
    elif body is BodyKind.LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        lines = _framed(lines, drop_length=True)
        extra.append(b"Content-Length: %d\r\n" % content_length)
    elif body is BodyKind.CHUNKED:
        lines = _framed(lines, drop_length=True)
        extra.append(b"Transfer-Encoding: chunked\r\n")
    else:  # CLOSE: the end of the body is the end of the connection (RFC 9112 6.3 rule 8).
        lines = _framed(lines, drop_length=True)
        close = True
    if close:
        extra.append(b"Connection: close\r\n")
    first = b"HTTP/1.1 %d %b\r\n" % (status, REASONS.get(status, b"Unknown"))
    return _block(first, lines, extra)


def error_response(
    status: int,
    message: str,
    *,
    side: Literal["client", "server"],
    close: bool,
    now: float | None = None,
) -> bytes:
    """A complete synthetic response (head and body) for an error that arose in ptproxy itself.

    ``side`` says which end produced it (``Server: ptproxy client|server``); the body is ``message``
    plus a newline, as text/plain."""
    if side not in ("client", "server"):
        raise ValueError(f"side must be 'client' or 'server', not {side!r}")
    payload = (message + "\n").encode("utf-8", "replace")
    head = response_head(
        status,
        [(b"content-type", b"text/plain; charset=utf-8")],
        body=BodyKind.LENGTH,
        content_length=len(payload),
        server=b"ptproxy " + side.encode("ascii"),
        close=close,
        now=now,
    )
    return head + payload


def _node(addr: tuple[str, int] | str) -> str:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return "unknown"  # a UNIX socket's end (a path, or nothing): no node to name (RFC 7239 6.3)
    host, port = addr[0], addr[1]
    # RFC 7239 6: an IPv6 node is "enclosed in square brackets" and, since ":" and "[" are not token
    # characters, the whole node is then a quoted-string; we always quote for uniformity.
    try:
        if ip_address(host.split("%", 1)[0]).version == 6:
            host = f"[{host}]"
    except ValueError:
        if ":" in host:
            host = f"[{host}]"
    return f"{host}:{port}".replace("\\", "\\\\").replace('"', '\\"')


def forwarded(for_addr: tuple[str, int] | str, by_addr: tuple[str, int] | str, proto: str) -> bytes:
    """The RFC 7239 element ptproxy appends: ``for="<ip:port>";by="<ip:port>";proto=<proto>``."""
    return f'for="{_node(for_addr)}";by="{_node(by_addr)}";proto={proto}'.encode("ascii")
