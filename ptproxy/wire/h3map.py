"""Sans-IO mapping between HTTP/1.1 messages and HTTP/3 header lists (RFC 9114 §4).

Strategy: the hop between the ends is plain HTTP/3, so either end interoperates with any
conforming peer (the Rust original included). Requests carry ``Host`` as ``:authority`` and the
request target as ``:path`` (RFC 9114 §4.3.1); names are lowercase and connection-specific fields
never cross (§4.2: a peer MUST treat them as malformed — aioquic closes the whole connection).
Framing travels implicitly: ``content-length`` when the HTTP/1.1 message had one; otherwise the
body is the DATA frames until FIN, which the receiving end re-frames as chunked, one chunk per
DATA frame.
"""

from __future__ import annotations

from ptproxy.errors import ClientProtocolError
from ptproxy.values import MutableValue
from ptproxy.wire import fieldcodec, headmap
from ptproxy.wire.events import BodyKind, RequestHead, ResponseHead

__all__ = [
    "TunnelRequest",
    "TunnelResponse",
    "request_to_h3",
    "request_to_h3_tagged",
    "request_from_h3",
    "routed_request_from_h3",
    "response_to_h3",
    "response_from_h3",
    "NO_BODY_STATUSES",
    "ROUTE_FIELD",
    "CLIENT_ADDRESS_FIELD",
    "INTERNAL_FIELDS",
]

NO_BODY_STATUSES = frozenset({204, 304})

# Fields the two ptproxy ends add to a request between themselves. The client end removes any of
# them arriving from its HTTP/1.1 client (so none can be forged) and the server end removes them
# before the origin. A standard HTTP/3 peer sends neither: its requests take the default route.
ROUTE_FIELD = b"ptproxy-route"  # the route's name (absent: the default route)
CLIENT_ADDRESS_FIELD = b"ptproxy-client-address"  # the address the client end saw (X-Forwarded-For)
INTERNAL_FIELDS = frozenset({ROUTE_FIELD, CLIENT_ADDRESS_FIELD})

# The head mapping itself is the headmap twin's (compiled, or its pure twin): bound once here.
_h1_request_to_h3 = headmap.h1_request_to_h3
_h3_request_parts = headmap.h3_request_parts
_h3_request_routed = headmap.h3_request_routed
_h1_response_to_h3 = headmap.h1_response_to_h3
_h3_response_parts = headmap.h3_response_parts
# BodyKind's members as plain globals: ``BodyKind.X`` goes through the enum metaclass's attribute
# hook (~1k instructions each on CPython 3.11, more than a module global's ~20).
_NONE, _LENGTH, _CHUNKED = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED


# Written out on MutableValue, not @dataclass(slots=True) (the same fields, __init__, __eq__ and repr):
# this module is imported on the client end's path to serving, after its first Initial.
class TunnelRequest(MutableValue):
    """A request as the server end replays it: lowercase fields, body framing decided."""

    __slots__ = ("method", "authority", "path", "fields", "body", "content_length", "protocol")
    __match_args__ = ("method", "authority", "path", "fields", "body", "content_length", "protocol")

    def __init__(
        self,
        method: bytes,
        authority: bytes,
        path: bytes,
        fields: list[tuple[bytes, bytes]],
        body: BodyKind,
        content_length: int | None,
        # The Upgrade token of an Extended CONNECT replayed as an HTTP/1.1 upgrade
        # (wire/websocket.py); None for an ordinary request.
        protocol: bytes | None = None,
    ) -> None:
        self.method = method
        self.authority = authority
        self.path = path
        self.fields = fields
        self.body = body
        self.content_length = content_length
        self.protocol = protocol

    @property
    def is_connect(self) -> bool:
        """A plain CONNECT (RFC 9114 4.4): a TCP stream route's byte stream, not a message."""
        return self.method == b"CONNECT" and self.protocol is None


class TunnelResponse(MutableValue):
    __slots__ = ("status", "fields", "content_length")
    __match_args__ = ("status", "fields", "content_length")

    def __init__(self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None) -> None:
        self.status = status
        self.fields = fields
        self.content_length = content_length


def request_to_h3(head: RequestHead, forwarded: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Client end: an HTTP/1.1 request head → HTTP/3 header list."""
    authority = _host_of(head)
    fields = fieldcodec.h1_to_h3_fields(head.headers)
    if head.body is BodyKind.CHUNKED:
        fields = [(n, v) for n, v in fields if n != b"content-length"]
    if forwarded is not None:
        fields.append((b"forwarded", forwarded))
    return [
        (b":method", head.method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", head.target),
        *fields,
    ]


def _host_of(head: RequestHead) -> bytes:
    hosts = [v for n, v in head.headers if n.lower() == b"host"]
    if len(hosts) != 1 or not hosts[0]:
        raise ClientProtocolError("missing or repeated Host header")
    return hosts[0]


def request_to_h3_tagged(
    head: RequestHead, forwarded: bytes | None = None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Client end: :func:`request_to_h3` without the ends' own fields (INTERNAL_FIELDS: no
    HTTP/1.1 client may choose a route or an address), for the caller to append its own; and
    the ``:authority`` (to choose the route by). One pass over the fields (headmap twin)."""
    return _h1_request_to_h3(head.method, head.target, head.headers, head.body is _CHUNKED, forwarded)


def request_from_h3(headers: list[tuple[bytes, bytes]], ended: bool) -> TunnelRequest:
    """Server end: HTTP/3 request headers → what to replay. Raises ClientProtocolError (400).

    Field names and values are left for :func:`ptproxy.wire.serialize.request_head` to validate,
    the one place they are written from (serialize.request_head validates every field it writes,
    HeaderError, a 400 too; checking them here as well parsed each field twice)."""
    parts = _h3_request_parts(headers)
    if parts is None:  # :method CONNECT
        pseudo = {n: v for n, v in headers if n.startswith(b":")}
        if b":protocol" not in pseudo:
            return _connect_request(pseudo, [(n, v) for n, v in headers if not n.startswith(b":")])
        raise ClientProtocolError("CONNECT is not supported")
    method, authority, path, fields, length = parts
    body = _LENGTH if length is not None else _NONE if ended else _CHUNKED
    return TunnelRequest(method, authority, path, fields, body, length)


def routed_request_from_h3(
    headers: list[tuple[bytes, bytes]], ended: bool
) -> tuple[TunnelRequest, bytes | None, bytes | None] | None:
    """Server end: :func:`request_from_h3` of an ordinary request and its INTERNAL_FIELDS, read in
    the same pass over the headers (the request's fields without them): (request, ``ptproxy-route``
    value or None, ``ptproxy-client-address`` value or None; the last copy of each counts). None for
    a CONNECT and for any request with ``:protocol`` (an Extended CONNECT or a malformed one): the
    caller's general path. Raises ClientProtocolError (400) as request_from_h3 does."""
    parts = _h3_request_routed(headers)
    if parts is None:
        return None
    method, authority, path, fields, length, route, client_address = parts
    body = _LENGTH if length is not None else _NONE if ended else _CHUNKED
    return TunnelRequest(method, authority, path, fields, body, length), route, client_address


def _connect_request(pseudo: dict[bytes, bytes], fields: list[tuple[bytes, bytes]]) -> TunnelRequest:
    """A plain CONNECT: only ``:method`` and ``:authority`` (RFC 9114 4.4); the stream's DATA
    frames are the bytes of a TCP connection, so there is no body framing to decide."""
    if b":scheme" in pseudo or b":path" in pseudo:
        raise ClientProtocolError("malformed CONNECT: :scheme and :path must be absent")
    authority = pseudo.get(b":authority")
    if not authority:
        raise ClientProtocolError("malformed CONNECT: missing :authority")
    for name, value in fields:
        fieldcodec.validate_name(name)
        fieldcodec.validate_value(value)
    return TunnelRequest(b"CONNECT", authority, b"", fields, BodyKind.NONE, None)


def response_to_h3(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """Server end: origin response head → HTTP/3 header list (1xx included)."""
    return _h1_response_to_h3(head.status, head.headers, head.body is _CHUNKED)


def response_from_h3(headers: list[tuple[bytes, bytes]]) -> TunnelResponse:
    """Client end: HTTP/3 response headers → status, HTTP/1.1 fields. Raises UpstreamError."""
    return TunnelResponse(*_h3_response_parts(headers))
