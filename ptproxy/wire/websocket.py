"""WebSocket through the pair, sans-IO: the RFC 6455 opening handshake on each HTTP/1.1 side and
the Extended CONNECT (RFC 9220 over RFC 8441's ``:protocol``) that carries it between the ends.

Client end: an HTTP/1.1 request is a WebSocket handshake (:func:`is_handshake`) when it is a
``GET`` on HTTP/1.1 without a body whose ``Connection`` lists ``upgrade``, whose ``Upgrade`` names
``websocket``, with one ``Sec-WebSocket-Key`` and ``Sec-WebSocket-Version: 13``. It crosses as
``:method CONNECT``, ``:protocol websocket`` (:func:`request_to_h3`); the key stays behind: RFC 9220
§3 has no key on HTTP/3 (each HTTP/1.1 hop proves its own handshake), so the client end answers
``101`` with the accept computed from its own client's key (:func:`switching_protocols`).

Server end: the stream becomes a ``GET`` to the origin with a fresh key (:func:`upgrade_lines`);
its ``101`` is checked (:func:`check_switch`) and answered ``200`` on the stream
(:func:`response_to_h3`). Everything else the handshake carries (Origin, Cookie,
Sec-WebSocket-Protocol/-Extensions, ...) travels as ordinary fields both ways.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping

from ptproxy.errors import ClientProtocolError
from ptproxy.wire import fieldcodec
from ptproxy.wire.events import BodyKind, Fields, RequestHead, ResponseHead
from ptproxy.wire.h3map import TunnelRequest

__all__ = [
    "PROTOCOL",
    "SETTINGS_ENABLE_CONNECT_PROTOCOL",
    "accept_for",
    "check_switch",
    "client_key",
    "connect_protocol_enabled",
    "is_extended_connect",
    "is_handshake",
    "new_key",
    "request_from_h3",
    "request_to_h3",
    "response_to_h3",
    "switching_protocols",
    "upgrade_lines",
    "with_upgrade",
]

PROTOCOL = b"websocket"
_NONE = BodyKind.NONE  # a plain global: BodyKind.X goes through the enum metaclass (is_handshake)
# RFC 8441 §3 (the HTTP/3 registration is RFC 9220 §3): a peer that sent 1 accepts :protocol.
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8
# RFC 6455 §1.3: the GUID every server appends to the client's key.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Proofs of one HTTP/1.1 handshake: never carried to the other hop, where they would be wrong.
_HOP_PROOFS = frozenset({b"sec-websocket-key", b"sec-websocket-accept"})
_OWS = b" \t"
# Title-Case would say "Websocket"; names are case-insensitive, but RFC 6455's spelling is kinder
# to clients that compare them as written.
_RFC_SPELLING = {
    b"Sec-Websocket-Protocol": b"Sec-WebSocket-Protocol",
    b"Sec-Websocket-Extensions": b"Sec-WebSocket-Extensions",
}


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def _tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The comma-separated tokens of every ``name`` field, lowercase (Connection, Upgrade)."""
    return {
        t.strip(_OWS).lower() for v in _values(headers, name) for t in v.split(b",") if t.strip(_OWS)
    }


def _valid_key(key: bytes) -> bool:
    # RFC 6455 §4.1: "a base64-encoded ... randomly selected 16-byte value".
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def is_handshake(method: bytes, version: tuple[int, int], headers: Fields, body: BodyKind) -> bool:
    """Whether an HTTP/1.1 request is a WebSocket opening handshake (RFC 6455 §4.1) the pair
    carries as Extended CONNECT. Anything else with ``Upgrade`` (h2c, a bad key, a body) stays an
    ordinary request whose Upgrade is dropped as hop-by-hop."""
    if method != b"GET" or version != (1, 1) or body is not _NONE:
        return False
    # The usual GET has no Upgrade: a plain loop says so (_values' comprehension cost ~2k more on
    # every request), without splitting Connection tokens.
    for name, _ in headers:
        if name.lower() == b"upgrade":
            break
    else:
        return False
    if b"upgrade" not in _tokens(headers, b"connection"):
        return False
    if PROTOCOL not in _tokens(headers, b"upgrade"):
        return False
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return False
    return _values(headers, b"sec-websocket-version") == [b"13"]


def accept_for(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def new_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key`` (the server end's own handshake with the origin)."""
    return base64.b64encode(os.urandom(16))


def connect_protocol_enabled(settings: Mapping[int, int] | None) -> bool:
    """Whether the peer's SETTINGS allow Extended CONNECT (None: none received yet)."""
    return settings is not None and settings.get(SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1


def _carried(headers: Fields) -> list[tuple[bytes, bytes]]:
    """The handshake's end-to-end fields: hop-by-hop (Connection, Upgrade, ...), Host and the
    key/accept proofs dropped, names lowercase (fieldcodec validates each)."""
    fields = fieldcodec.h1_to_h3_fields(headers)
    return [(n, v) for n, v in fields if n not in _HOP_PROOFS and n != b"content-length"]


def request_to_h3(head: RequestHead, forwarded: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Client end: a handshake (see :func:`is_handshake`) → Extended CONNECT header list."""
    hosts = _values(head.headers, b"host")
    if len(hosts) != 1 or not hosts[0]:
        raise ClientProtocolError("missing or repeated Host header")
    fields = _carried(head.headers)
    if forwarded is not None:
        fields.append((b"forwarded", forwarded))
    return [
        (b":method", b"CONNECT"),
        (b":protocol", PROTOCOL),
        (b":scheme", b"http"),
        (b":authority", hosts[0]),
        (b":path", head.target),
        *fields,
    ]


def is_extended_connect(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Server end: the request carries ``:protocol`` (whatever its value; see request_from_h3)."""
    for name, _ in headers:  # a loop, not any() over a generator: this runs for every request
        if name == b":protocol":
            return True
    return False


def request_from_h3(headers: list[tuple[bytes, bytes]], ended: bool) -> TunnelRequest:
    """Server end: an Extended CONNECT → the ``GET`` to replay as an upgrade (``protocol`` set).
    Raises ClientProtocolError (400) for another protocol or a malformed request."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            fields.append((name, value))
    if pseudo.get(b":method") != b"CONNECT":
        raise ClientProtocolError(":protocol without CONNECT")
    protocol = pseudo.get(b":protocol")
    if protocol != PROTOCOL:
        raise ClientProtocolError(f"unsupported :protocol {protocol!r}")
    if pseudo.get(b":scheme") not in (b"http", b"https"):
        raise ClientProtocolError("Extended CONNECT needs :scheme http or https")
    path, authority = pseudo.get(b":path"), pseudo.get(b":authority")
    if not path or not authority:
        raise ClientProtocolError("Extended CONNECT needs :path and :authority")
    if ended:
        # RFC 9220 §3: the stream carries the WebSocket bytes; a FIN with the head leaves none.
        raise ClientProtocolError("Extended CONNECT ended with its head")
    fields = [(n, v) for n, v in fields if n != b"host" and n not in _HOP_PROOFS]
    for name, value in fields:
        fieldcodec.validate_name(name)
        fieldcodec.validate_value(value)
    fields = [(n, v) for n, v in fields if n != b"content-length"]
    if not any(n == b"sec-websocket-version" for n, _ in fields):
        # RFC 9220 §3 carries the client's; 13 is the only version there is (RFC 6455 §4.1).
        fields.append((b"sec-websocket-version", b"13"))
    return TunnelRequest(b"GET", authority, path, fields, BodyKind.NONE, None, protocol=PROTOCOL)


def upgrade_lines(key: bytes) -> bytes:
    """The header lines that make the origin request an upgrade (serialize drops them as
    hop-by-hop, so the server end adds them to the serialized head)."""
    return b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %b\r\n" % key


def with_upgrade(head: bytes, key: bytes) -> bytes:
    """A serialized request head (ending in CRLFCRLF) with :func:`upgrade_lines` added."""
    return head[:-2] + upgrade_lines(key) + b"\r\n"


def check_switch(head: ResponseHead, key: bytes) -> str | None:
    """Why an origin's ``101`` does not complete our handshake (RFC 6455 §4.1, client steps 2-4),
    or None when it does."""
    if PROTOCOL not in _tokens(head.headers, b"upgrade"):
        return "switched protocols without Upgrade: websocket"
    if b"upgrade" not in _tokens(head.headers, b"connection"):
        return "switched protocols without Connection: upgrade"
    accepts = _values(head.headers, b"sec-websocket-accept")
    if accepts != [accept_for(key)]:
        return f"sent a wrong Sec-WebSocket-Accept {b','.join(accepts)[:64]!r}"
    return None


def response_to_h3(head: ResponseHead) -> list[tuple[bytes, bytes]]:
    """Server end: the origin's ``101`` → the stream's ``200`` (RFC 9220 §3: 2xx opens the
    tunnel), with its end-to-end fields (Sec-WebSocket-Protocol/-Extensions, Set-Cookie, ...)."""
    return [(b":status", b"200"), *_carried(head.headers)]


def switching_protocols(client_key: bytes, fields: Fields) -> bytes:
    """Client end: the ``101`` for its HTTP/1.1 client, from the stream's ``200`` fields (no
    pseudo-fields), with the accept for that client's own key."""
    lines = [
        (n, v)
        for n, v in fieldcodec.h3_to_h1_fields(fields)
        if n.lower() not in _HOP_PROOFS and n.lower() != b"content-length"
    ]
    out = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Sec-WebSocket-Accept: %b\r\n" % accept_for(client_key),
    ]
    out.extend(b"%b: %b\r\n" % (_RFC_SPELLING.get(n, n), v) for n, v in lines)
    out.append(b"\r\n")
    return b"".join(out)


def client_key(headers: Fields) -> bytes:
    """The handshake's ``Sec-WebSocket-Key`` (one, as :func:`is_handshake` checked)."""
    return _values(headers, b"sec-websocket-key")[0]

