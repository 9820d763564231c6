"""Pure-Python twin of the field codec: header names and values between HTTP/1.1 and HTTP/3.

# Strategy:
# HTTP/1.1 field lines arrive in any case with OWS around the value; HTTP/3 wants lowercase names
# ("Characters in field names MUST be converted to lowercase prior to their encoding", RFC 9114
# 4.2) and forbids connection-specific fields ("An endpoint MUST NOT generate an HTTP/3 field
# section containing connection-specific fields", RFC 9114 4.2). Going the other way we emit
# Title-Case names, as the Rust original does. Both directions validate with RFC 9110 5.1/5.5 rules
# so nothing that could split a message (CR, LF, NUL) is ever written to a wire.
#
# The compiled twin ``ptproxy/_speedups/fieldcodec.pyx`` has the same ``__all__`` and raises the same
# ``HeaderError``; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptproxy.errors import HeaderError

__all__ = [
    "HOP_BY_HOP",
    "title_case",
    "validate_name",
    "validate_value",
    "h1_to_h3_fields",
    "h3_to_h1_fields",
]

# RFC 9110 7.6.1: Connection and the fields it lists are hop-by-hop; Keep-Alive, Proxy-Connection, TE,
# Trailer, Transfer-Encoding and Upgrade are the well-known ones (RFC 9110 7.6.1 / 9114 4.2), and the
# Proxy-Authenticate/-Authorization pair is consumed by the proxy it addresses (RFC 9110 11.7).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# RFC 9110 5.6.2: token = 1*tchar; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
# "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. ``bytes.translate(None, delete)`` removes the allowed
# bytes in C, so a non-empty remainder means an invalid byte.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 9110 5.5: field-value bytes are VCHAR, SP, HTAB and obs-text (0x80-0xFF); CR, LF, NUL and the
# other CTLs (0x00-0x1F, 0x7F) are invalid ("a recipient of CR, LF, or NUL within a field value MUST
# either reject the message or replace each of those characters with SP").
_VALUE_OK = bytes([9]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_OWS = b" \t"

_COMMON = (
    b"accept accept-charset accept-encoding accept-language accept-ranges access-control-allow-origin "
    b"age allow authorization cache-control connection content-disposition content-encoding "
    b"content-language content-length content-location content-range content-security-policy "
    b"content-type cookie date etag expect expires forwarded host if-match if-modified-since "
    b"if-none-match if-range if-unmodified-since keep-alive last-modified link location max-forwards "
    b"origin pragma proxy-authenticate proxy-authorization range referer retry-after server "
    b"set-cookie strict-transport-security te trailer transfer-encoding upgrade user-agent vary via "
    b"www-authenticate x-content-type-options x-forwarded-for x-forwarded-host x-forwarded-proto "
    b"x-frame-options x-request-id x-xss-protection"
).split()


def _title(name: bytes) -> bytes:
    # bytes.capitalize() is ASCII-only: first byte upper, rest lower, non-letters unchanged.
    return b"-".join([part.capitalize() for part in name.split(b"-")])


# The cache is keyed by the name as seen, so it is pre-filled with the lowercase spelling HTTP/3
# delivers, and grows (bounded) with names seen at run time.
_TITLE_CACHE: dict[bytes, bytes] = {n: _title(n) for n in _COMMON}
_TITLE_CACHE_MAX = 1024


def title_case(name: bytes) -> bytes:
    """``b"content-type"`` -> ``b"Content-Type"``: first byte and each byte after ``-`` upper, the rest lower."""
    try:
        return _TITLE_CACHE[name]
    except KeyError:
        pass
    result = _title(name)
    if len(_TITLE_CACHE) < _TITLE_CACHE_MAX:
        _TITLE_CACHE[bytes(name)] = result
    return result


def validate_name(name: bytes) -> None:
    """Raise HeaderError unless ``name`` is a non-empty RFC 9110 token (field-name = token, 5.1)."""
    if not name or name.translate(None, _TCHAR):
        raise HeaderError(f"invalid header name {name[:64]!r}")


def validate_value(value: bytes) -> None:
    """Raise HeaderError if ``value`` contains NUL, CR, LF or another CTL other than HTAB (RFC 9110 5.5)."""
    if value.translate(None, _VALUE_OK):
        raise HeaderError(f"invalid byte in header value {value[:64]!r}")


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    # RFC 9110 7.6.1: Connection = #connection-option; a proxy "MUST parse a received Connection header
    # field before a message is forwarded and, for each connection-option in this field, remove any
    # header or trailer field(s) from the message with the same name as the connection-option".
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(_OWS).lower()
                if token:
                    tokens.add(token)
    return tokens


def h1_to_h3_fields(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """HTTP/1.1 field lines -> HTTP/3 fields, for a head about to cross the tunnel.

    Validates each line, lowercases names, strips OWS, drops hop-by-hop fields, every field named by a
    Connection option and ``host`` (the caller sends it as ``:authority``, RFC 9114 4.3.1). Order kept.
    """
    dropped = _connection_tokens(headers)
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        validate_name(name)
        value = value.strip(_OWS)
        validate_value(value)
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in dropped or lname == b"host":
            continue
        out.append((lname, value))
    return out


def h3_to_h1_fields(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """HTTP/3 fields -> HTTP/1.1 field lines with Title-Case names, for a head about to be written.

    Skips pseudo-headers, drops hop-by-hop and Connection-listed fields (a conforming peer never sends
    them, but a message that carried them would be malformed, RFC 9114 4.2), validates names and values
    (HeaderError) so nothing can inject a line break. Relative order of same-name fields is kept.
    """
    dropped = _connection_tokens(headers)
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name[:1] == b":":
            continue
        validate_name(name)
        validate_value(value)
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in dropped:
            continue
        out.append((title_case(name), value))
    return out
