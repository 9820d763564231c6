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

from dataclasses import dataclass

from ptproxy.errors import ClientProtocolError, UpstreamError
from ptproxy.wire import fieldcodec
from ptproxy.wire.events import BodyKind, RequestHead, ResponseHead

__all__ = [
    "TunnelRequest",
    "TunnelResponse",
    "request_to_h3",
    "request_to_h3_tagged",
    "request_from_h3",
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


@dataclass(slots=True)
class TunnelRequest:
    """A request as the server end replays it: lowercase fields, body framing decided."""

    method: bytes
    authority: bytes
    path: bytes
    fields: list[tuple[bytes, bytes]]
    body: BodyKind
    content_length: int | None
    # The Upgrade token of an Extended CONNECT replayed as an HTTP/1.1 upgrade (wire/websocket.py);
    # None for an ordinary request.
    protocol: bytes | None = None

    @property
    def is_connect(self) -> bool:
        """A plain CONNECT (RFC 9114 4.4): a TCP stream route's byte stream, not a message."""
        return self.method == b"CONNECT" and self.protocol is None


@dataclass(slots=True)
class TunnelResponse:
    status: int
    fields: list[tuple[bytes, bytes]]
    content_length: int | None


def _host_of(head: RequestHead) -> bytes:
    hosts = [v for n, v in head.headers if n.lower() == b"host"]
    if len(hosts) != 1 or not hosts[0]:
        raise ClientProtocolError("missing or repeated Host header")
    return hosts[0]


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


_INTERNAL_OR_LENGTH = INTERNAL_FIELDS | {b"content-length"}


def request_to_h3_tagged(
    head: RequestHead, forwarded: bytes | None = None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Client end: :func:`request_to_h3` without the ends' own fields (INTERNAL_FIELDS: no
    HTTP/1.1 client may choose a route or an address), for the caller to append its own; and
    the ``:authority`` (to choose the route by). One pass over the fields instead of three."""
    authority = _host_of(head)
    drop = _INTERNAL_OR_LENGTH if head.body is BodyKind.CHUNKED else INTERNAL_FIELDS
    out = [
        (b":method", head.method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", head.target),
    ]
    out += [(n, v) for n, v in fieldcodec.h1_to_h3_fields(head.headers) if n not in drop]
    if forwarded is not None:
        out.append((b"forwarded", forwarded))
    return out, authority


def _content_length(fields: list[tuple[bytes, bytes]], error: type[Exception]) -> int | None:
    values = {v.strip() for n, v in fields if n == b"content-length"}
    if not values:
        return None
    if len(values) != 1:
        raise error("conflicting content-length values")
    (value,) = values
    if not value.isdigit() or len(value) > 18:
        raise error(f"invalid content-length {value[:32]!r}")
    return int(value)


def request_from_h3(headers: list[tuple[bytes, bytes]], ended: bool) -> TunnelRequest:
    """Server end: HTTP/3 request headers → what to replay. Raises ClientProtocolError (400).

    Field names and values are left for :func:`ptproxy.wire.serialize.request_head` to validate,
    the one place they are written from."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []  # without Host: it is written from the authority
    hosts: list[bytes] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"host":
            hosts.append(value)
        else:
            fields.append((name, value))
    method = pseudo.get(b":method")
    if not method:
        raise ClientProtocolError("missing :method")
    if method == b"CONNECT":
        if b":protocol" not in pseudo:
            return _connect_request(pseudo, [(n, v) for n, v in headers if not n.startswith(b":")])
        raise ClientProtocolError("CONNECT is not supported")
    path = pseudo.get(b":path")
    if not path:
        raise ClientProtocolError("missing :path")
    authority = pseudo.get(b":authority")
    if not authority:
        if len(hosts) != 1:
            raise ClientProtocolError("missing :authority and Host")
        authority = hosts[0]
    # Names and values are not validated here: serialize.request_head validates every field it
    # writes (HeaderError, a 400 too), and checking them here as well parsed each field twice.
    length = _content_length(fields, ClientProtocolError)
    if length is not None:
        body = BodyKind.LENGTH
    elif ended:
        body = BodyKind.NONE
    else:
        body = BodyKind.CHUNKED
    return TunnelRequest(method, authority, path, fields, body, length)


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
    fields = fieldcodec.h1_to_h3_fields(head.headers)
    if head.body is BodyKind.CHUNKED:
        fields = [(n, v) for n, v in fields if n != b"content-length"]
    return [(b":status", str(head.status).encode()), *fields]


def response_from_h3(headers: list[tuple[bytes, bytes]]) -> TunnelResponse:
    """Client end: HTTP/3 response headers → status, HTTP/1.1 fields. Raises UpstreamError."""
    status_values = [v for n, v in headers if n == b":status"]
    if len(status_values) != 1 or not status_values[0].isdigit() or len(status_values[0]) != 3:
        raise UpstreamError("peer sent a response without a valid :status")
    fields = [(n, v) for n, v in headers if not n.startswith(b":")]
    length = _content_length(fields, UpstreamError)
    return TunnelResponse(int(status_values[0]), fields, length)
