"""Identity headers for the origin: what the server end knows of the client (sans-IO).

A route's ``request_headers`` (or ``[system] request_headers`` for the default route) name the
headers the server end adds to each origin request: ``X-Forwarded-For`` (the address the client end
saw), ``X-Forwarded-Proto`` (``http``: what the client end received) and ``X-SSL-*`` (the client
certificate as the server end verified it, :class:`~ptproxy.tunnel.identity.PeerIdentity`).

Every configured name is first removed from the request (:func:`strip_identity_fields`), so an
HTTP/1.1 client cannot forge one; then :func:`identity_fields` adds those that have a value. A
session without an identity (a client end, or a resumed session whose ticket carried none) gets no
``X-SSL-*`` header at all, never an empty or a guessed one.

Values are made safe field values (RFC 9110 section 5.5): only visible ASCII and inner spaces pass;
every other byte of the UTF-8 text (controls, CR, LF, NUL, DEL, non-ASCII, a leading or trailing
space) becomes ``\\XX`` (upper-case hex), the escape RFC 4514 itself uses in distinguished names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ptproxy.tunnel import PeerIdentity

__all__ = ["identity_fields", "strip_identity_fields"]

FORWARDED_PROTO = b"http"  # the client end accepts plain HTTP/1.1

_FROM_IDENTITY: dict[bytes, Callable[[PeerIdentity], str]] = {
    b"x-ssl-subject": lambda i: i.subject,
    b"x-ssl-issuer": lambda i: i.issuer,
    b"x-ssl-serial": lambda i: i.serial,
    b"x-ssl-notbefore": lambda i: i.not_before,
    b"x-ssl-notafter": lambda i: i.not_after,
    b"x-ssl-cipher": lambda i: i.cipher,
}


def _lower(name: str | bytes) -> bytes:
    raw = name.encode("ascii") if isinstance(name, str) else name
    return raw.lower()


def _safe_value(raw: bytes) -> bytes:
    """``raw`` as a valid field value: unsafe bytes escaped as ``\\XX`` (see the module doc)."""
    out = bytearray()
    last = len(raw) - 1
    for i, byte in enumerate(raw):
        if 0x21 <= byte <= 0x7E or (byte == 0x20 and 0 < i < last):
            out.append(byte)
        else:
            out += b"\\%02X" % byte
    return bytes(out)


def identity_fields(
    names: Sequence[str], identity: PeerIdentity | None, client_address: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The fields to add to an origin request: one per configured name that has a value.

    ``names`` are the configured header names (any case; duplicates give one field); the fields
    come back lower-case, in the order configured. ``X-Forwarded-For`` is ``client_address``
    (omitted when None or empty), ``X-Forwarded-Proto`` is ``http``, ``X-SSL-*`` come from
    ``identity`` (all omitted when it is None). Unknown names are ignored (the config allows none).
    """
    fields: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for configured in names:
        name = _lower(configured)
        if name in seen:
            continue
        seen.add(name)
        value: bytes | None = None
        if name == b"x-forwarded-for":
            value = client_address or None
        elif name == b"x-forwarded-proto":
            value = FORWARDED_PROTO
        elif identity is not None:
            getter = _FROM_IDENTITY.get(name)
            if getter is not None:
                value = getter(identity).encode("utf-8", "backslashreplace") or None
        if value is not None:
            fields.append((name, _safe_value(value)))
    return fields


def strip_identity_fields(
    fields: list[tuple[bytes, bytes]], names: Sequence[str]
) -> list[tuple[bytes, bytes]]:
    """``fields`` without any field (name compared case-insensitively) in ``names``: a new list."""
    if not names:
        return list(fields)
    drop = {_lower(name) for name in names}
    return [(name, value) for name, value in fields if name.lower() not in drop]
