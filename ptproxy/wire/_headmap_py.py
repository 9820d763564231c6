"""Pure-Python twin of ``ptproxy._speedups.headmap``: the per-request head mapping of both ends.

The HTTP/1.1 <-> HTTP/3 head mappings (four, and h3_request_routed: h3_request_parts with the
ends' internal fields; ``h3map.py`` wraps them into its message objects) and the two HTTP/1.1 head
writers (``serialize.py`` wraps them). Both twins work on plain values only (bytes, lists of
``(bytes, bytes)`` tuples, ints): a body kind is one of the ``BODY_*`` codes below, and the CONNECT
request the server end replays differently is left to ``h3map``. Behaviour and error messages are
the reference: the compiled twin must produce the same bytes, the same lists and
raise the same exception with the same message (tests/unit/test_wire_headmap.py compares them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ptproxy.errors import ClientProtocolError, HeaderError, UpstreamError
from ptproxy.wire import fieldcodec

__all__ = [
    "BODY_NONE",
    "BODY_LENGTH",
    "BODY_CHUNKED",
    "BODY_CLOSE",
    "REASONS",
    "http_date",
    "h1_request_to_h3",
    "h3_request_parts",
    "h3_request_routed",
    "h1_response_to_h3",
    "h3_response_parts",
    "request_head_bytes",
    "response_head_bytes",
]

Fields = list[tuple[bytes, bytes]]

# How the body after a head is delimited (``ptproxy.wire.events.BodyKind``, which this layer cannot
# import): NONE, LENGTH, CHUNKED, CLOSE. Any other value is treated as CLOSE by the response writer.
BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2
BODY_CLOSE = 3

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
        _date_cache = (second, _formatdate(second))
    return _date_cache[1]


def _formatdate(second: int) -> bytes:
    """``formatdate(second, usegmt=True)``; email.utils imported at the first call, not at every
    start (~2.8 ms of imports; the server end calls this before its first request)."""
    from email.utils import formatdate

    return formatdate(second, usegmt=True).encode("ascii")


# -- HTTP/1.1 <-> HTTP/3 (RFC 9114 4.2, 4.3) ---------------------------------------------------------

# The ends' own request fields (h3map.INTERNAL_FIELDS): no HTTP/1.1 client may send them through.
_ROUTE, _CLIENT_ADDRESS = b"ptproxy-route", b"ptproxy-client-address"  # h3map's ROUTE_FIELD, CLIENT_ADDRESS_FIELD
_INTERNAL = frozenset({_ROUTE, _CLIENT_ADDRESS})
_INTERNAL_OR_LENGTH = _INTERNAL | {b"content-length"}


def h1_request_to_h3(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], chunked: bool, forwarded: bytes | None
) -> tuple[Fields, bytes]:
    """Client end: an HTTP/1.1 request head -> (HTTP/3 header list, ``:authority``).

    The one Host field is the authority (ClientProtocolError unless there is exactly one, non-empty);
    the fields are ``fieldcodec.h1_to_h3_fields`` without the ends' internal ones (and without
    ``content-length`` when ``chunked``), then ``forwarded`` when given."""
    hosts = [v for n, v in headers if n.lower() == b"host"]
    if len(hosts) != 1 or not hosts[0]:
        raise ClientProtocolError("missing or repeated Host header")
    authority = hosts[0]
    drop = _INTERNAL_OR_LENGTH if chunked else _INTERNAL
    out = [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", target),
    ]
    out += [(n, v) for n, v in fieldcodec.h1_to_h3_fields(headers) if n not in drop]
    if forwarded is not None:
        out.append((b"forwarded", forwarded))
    return out, authority


def _content_length(fields: Fields, error: type[Exception]) -> int | None:
    values = {v.strip() for n, v in fields if n == b"content-length"}
    if not values:
        return None
    if len(values) != 1:
        raise error("conflicting content-length values")
    (value,) = values
    if not value.isdigit() or len(value) > 18:
        raise error(f"invalid content-length {value[:32]!r}")
    return int(value)


def h3_request_parts(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bytes, bytes, Fields, int | None] | None:
    """Server end: HTTP/3 request headers -> (method, authority, path, fields without pseudo-headers
    and Host, content length or None); None for a CONNECT (h3map replays those itself). Raises
    ClientProtocolError (400). A repeated pseudo-header: the last one counts."""
    parts = _request_parts(headers, False)
    return None if parts is None else parts[:5]


def h3_request_routed(
    headers: Sequence[tuple[bytes, bytes]],
) -> tuple[bytes, bytes, bytes, Fields, int | None, bytes | None, bytes | None] | None:
    """Server end: :func:`h3_request_parts` plus the ends' internal fields, in the same pass:
    (method, authority, path, fields without the internal ones, content length or None,
    ``ptproxy-route`` value or None, ``ptproxy-client-address`` value or None; the last copy of
    each counts). None for a CONNECT and for any request with ``:protocol`` (the caller's general
    path). Raises ClientProtocolError (400)."""
    return _request_parts(headers, True)


def _request_parts(
    headers: Sequence[tuple[bytes, bytes]], routed: bool
) -> tuple[bytes, bytes, bytes, Fields, int | None, bytes | None, bytes | None] | None:
    pseudo: dict[bytes, bytes] = {}
    fields: Fields = []  # without Host: it is written from the authority
    hosts: list[bytes] = []
    route = client = None
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"host":
            hosts.append(value)
        elif routed and name == _ROUTE:
            route = value
        elif routed and name == _CLIENT_ADDRESS:
            client = value
        else:
            fields.append((name, value))
    if routed and b":protocol" in pseudo:
        return None
    method = pseudo.get(b":method")
    if not method:
        raise ClientProtocolError("missing :method")
    if method == b"CONNECT":
        return None
    path = pseudo.get(b":path")
    if not path:
        raise ClientProtocolError("missing :path")
    authority = pseudo.get(b":authority")
    if not authority:
        if len(hosts) != 1:
            raise ClientProtocolError("missing :authority and Host")
        authority = hosts[0]
    # Names and values are not validated here: request_head_bytes validates every field it writes.
    return method, authority, path, fields, _content_length(fields, ClientProtocolError), route, client


def h1_response_to_h3(status: int, headers: Sequence[tuple[bytes, bytes]], chunked: bool) -> Fields:
    """Server end: an origin response head -> HTTP/3 header list (1xx included)."""
    fields = fieldcodec.h1_to_h3_fields(headers)
    if chunked:
        fields = [(n, v) for n, v in fields if n != b"content-length"]
    return [(b":status", str(status).encode()), *fields]


def h3_response_parts(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, Fields, int | None]:
    """Client end: HTTP/3 response headers -> (status, fields without pseudo-headers, content length
    or None). Raises UpstreamError."""
    status_values = [v for n, v in headers if n == b":status"]
    if len(status_values) != 1 or not status_values[0].isdigit() or len(status_values[0]) != 3:
        raise UpstreamError("peer sent a response without a valid :status")
    fields = [(n, v) for n, v in headers if not n.startswith(b":")]
    length = _content_length(fields, UpstreamError)
    return int(status_values[0]), fields, length


# -- HTTP/1.1 heads ------------------------------------------------------------------------------------

# request-target and authority bytes: visible ASCII only (RFC 3986 characters are a subset); this is
# a safety net against line injection from the peer, not a URI parser.
_VISIBLE = bytes(range(0x21, 0x7F))
# RFC 9110 9.1: method = token.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HOST_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"


def _framed(fields: Fields, drop_length: bool) -> Fields:
    if not drop_length:
        return fields
    return [(n, v) for n, v in fields if n != b"Content-Length"]


def _block(first_line: bytes, lines: Fields, extra: list[bytes]) -> bytes:
    out = [first_line]
    for name, value in lines:
        out.append(b"%b: %b\r\n" % (name, value))
    out.extend(extra)
    out.append(b"\r\n")
    return b"".join(out)


def request_head_bytes(
    method: bytes,
    target: bytes,
    authority: bytes,
    fields: Sequence[tuple[bytes, bytes]],
    body: int,
    content_length: int | None,
) -> bytes:
    """``serialize.request_head`` with ``body`` a ``BODY_*`` code (see there)."""
    if not method or method.translate(None, _TCHAR):
        raise HeaderError(f"invalid method {method[:32]!r}")
    if not target or target.translate(None, _VISIBLE):
        raise HeaderError(f"invalid request target {target[:64]!r}")
    # RFC 9110 7.2: Host = uri-host [ ":" port ]; uri-host is reg-name / IPv4 / IP-literal.
    if not authority or authority.translate(None, _HOST_OK):
        raise HeaderError(f"invalid authority {authority[:64]!r}")
    if body == BODY_CLOSE:
        raise ValueError("a request body cannot be delimited by closing the connection")
    lines = [(n, v) for n, v in fieldcodec.h3_to_h1_fields(fields) if n not in (b"Host", b"Content-Length")]
    extra: list[bytes] = []
    if body == BODY_LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        extra.append(b"Content-Length: %d\r\n" % content_length)
    elif body == BODY_CHUNKED:
        extra.append(b"Transfer-Encoding: chunked\r\n")
    first = b"%b %b HTTP/1.1\r\nHost: %b\r\n" % (method, target, authority)
    return _block(first, lines, extra)


def response_head_bytes(
    status: int,
    fields: Sequence[tuple[bytes, bytes]],
    body: int,
    content_length: int | None,
    add_date: bool,
    server: bytes | None,
    close: bool,
    now: float | None,
) -> bytes:
    """``serialize.response_head`` with ``body`` a ``BODY_*`` code (see there)."""
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} is outside 100..599")
    interim = status < 200
    lines = fieldcodec.h3_to_h1_fields(fields)
    extra: list[bytes] = []
    names = {n for n, _ in lines}
    if add_date and not interim and b"Date" not in names:
        extra.append(b"Date: %b\r\n" % http_date(now))
    if server is not None and b"Server" not in names:
        extra.append(b"Server: %b\r\n" % server)
    if body == BODY_NONE:
        lines = _framed(lines, drop_length=interim or status == 204)
    elif body == BODY_LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        lines = _framed(lines, drop_length=True)
        extra.append(b"Content-Length: %d\r\n" % content_length)
    elif body == BODY_CHUNKED:
        lines = _framed(lines, drop_length=True)
        extra.append(b"Transfer-Encoding: chunked\r\n")
    else:  # CLOSE: the end of the body is the end of the connection (RFC 9112 6.3 rule 8).
        lines = _framed(lines, drop_length=True)
        close = True
    if close:
        extra.append(b"Connection: close\r\n")
    first = b"HTTP/1.1 %d %b\r\n" % (status, REASONS.get(status, b"Unknown"))
    return _block(first, lines, extra)
