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

from collections.abc import Sequence
from ipaddress import ip_address
from typing import Literal

from ptproxy.wire import headmap
from ptproxy.wire.events import BodyKind

__all__ = ["REASONS", "error_response", "forwarded", "http_date", "request_head", "response_head"]

# The writers themselves are the headmap twin's (compiled, or its pure twin); the body kind goes to
# it as a code (this module maps BodyKind; the twin sits below wire.events).
REASONS: dict[int, bytes] = headmap.REASONS
http_date = headmap.http_date
_request_head = headmap.request_head_bytes
_response_head = headmap.response_head_bytes
# BodyKind's members as plain globals: ``BodyKind.X`` goes through the enum metaclass's attribute
# hook (~1k instructions each on CPython 3.11).
_NONE, _LENGTH, _CHUNKED = BodyKind.NONE, BodyKind.LENGTH, BodyKind.CHUNKED


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

    Raises HeaderError for a method, target, authority or field that could not be written safely
    (method: a token, RFC 9110 9.1; target: visible ASCII; authority: RFC 9110 7.2 Host bytes)."""
    code = 0 if body is _NONE else 1 if body is _LENGTH else 2 if body is _CHUNKED else 3
    return _request_head(method, target, authority, fields, code, content_length)


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
    code = 0 if body is _NONE else 1 if body is _LENGTH else 2 if body is _CHUNKED else 3
    return _response_head(status, fields, code, content_length, add_date, server, close, now)


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
        body=_LENGTH,
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
