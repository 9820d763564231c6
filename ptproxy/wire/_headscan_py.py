"""Pure-Python twin of ``ptproxy._speedups.headscan``: plain HTTP/1.1 heads read without llhttp.

The parsers (``parser.py``) hand llhttp each head up to its CRLFCRLF. Most heads are plain: a known
method, an origin-form target, a handful of field lines, ``Content-Length`` framing or none. For
those, :func:`scan_request` / :func:`scan_response` return the finished head's fields in one call,
and the parser builds its event without llhttp's per-field callbacks (nor, for a response, llhttp
itself). They return ``None`` for anything else - anything llhttp or our own checks would reject or
read differently, anything over a limit, chunked or close-delimited bodies, upgrades, interim
responses - and the parser gives that head to llhttp exactly as before. So a ``None`` costs a scan and
changes nothing; a result must be what the llhttp path makes of the same bytes (tests/unit/
test_http1_headscan.py feeds both paths the same heads).

The accepted grammar is a strict subset of what llhttp accepts (RFC 9112): the start line with single
spaces, ``HTTP/1.1`` or ``HTTP/1.0``; field names of tchars; field values of SP, HTAB and visible
ASCII (no obs-text); CRLF line ends only. Fields llhttp interprets itself are either refused
(Transfer-Encoding, Upgrade, Proxy-Connection, several Content-Length or Connection lines) or
accepted only in one plain form (``Content-Length`` of 1-18 digits, ``Connection`` of exactly
``keep-alive`` or ``close``). Requests: one of a few methods, a target starting with ``/`` of visible
ASCII without ``#``, exactly one valid Host. Responses: status 200-599 (a 204 / 304 without
Content-Length), a reason of printable ASCII not starting with a space, a Content-Length unless no
body can follow (HEAD, 204, 304).
"""

from __future__ import annotations

from ptproxy.wire.events import BodyKind, RequestHead, ResponseHead

__all__ = ["scan_request", "scan_response"]

Fields = list[tuple[bytes, bytes]]

_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}
# RFC 9110 5.6.2 tchar
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# field-value bytes accepted here: SP, HTAB, VCHAR (no obs-text, no other CTL)
_VALUE = b"\t" + bytes(range(0x20, 0x7F))
# request-target bytes: VCHAR without "#"
_TARGET = bytes(range(0x21, 0x7F)).replace(b"#", b"")
_HOST = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"
_REASON = bytes(range(0x20, 0x7F))
_DIGITS = b"0123456789"
_NONE, _LENGTH = BodyKind.NONE, BodyKind.LENGTH
_OWS = b" \t"
_CRLF2 = b"\r\n\r\n"


def _fields(
    lines: list[bytes], max_bytes: int, max_count: int, used: int
) -> tuple[Fields, list[bytes], bytes | None, int, bool] | None:
    """The field lines: (fields, hosts, content-length digits, connection 0/1 keep-alive/2 close,
    expect 100-continue), or None when a line is outside the grammar or a limit is passed."""
    if len(lines) > max_count:
        return None
    fields: Fields = []
    hosts: list[bytes] = []
    length: bytes | None = None
    conn = 0
    expect = False
    for line in lines:
        i = line.find(b":")
        if i <= 0:
            return None
        name = line[:i]
        raw = line[i + 1 :]
        if name.translate(None, _TCHAR) or raw.translate(None, _VALUE):
            return None
        value = raw.strip(_OWS)
        used += len(name) + len(value) + 4
        if used > max_bytes:
            return None
        fields.append((name, value))
        lname = name.lower()
        if lname == b"host":
            hosts.append(value)
        elif lname == b"content-length":
            # exactly the digits after the leading OWS: llhttp reads anything else its own way
            if length is not None or raw.lstrip(_OWS) != value or not 0 < len(value) <= 18:
                return None
            if value.translate(None, _DIGITS):
                return None
            length = value
        elif lname == b"connection":
            if conn:
                return None
            low = value.lower()
            if low == b"keep-alive":
                conn = 1
            elif low == b"close":
                conn = 2
            else:
                return None
        elif lname in (b"transfer-encoding", b"upgrade", b"proxy-connection"):
            return None
        elif lname == b"expect" and value.lower() == b"100-continue":
            expect = True
    return fields, hosts, length, conn, expect


def scan_request(
    data: bytes, pos: int, end: int, max_line: int, max_bytes: int, max_count: int
) -> RequestHead | None:
    """Read ``data[pos:end]`` as one complete plain request head (ending in CRLFCRLF).

    Returns its RequestHead (body NONE, or LENGTH with its ``content_length``) or None: give the
    head to llhttp."""
    if type(data) is not bytes or end - pos < 4 or data[end - 4 : end] != _CRLF2:
        return None
    lines = data[pos : end - 4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, vtext = parts
    version = _VERSIONS.get(vtext)
    if (
        version is None
        or method not in _METHODS
        or target[:1] != b"/"
        or target.translate(None, _TARGET)
        or len(method) + 10 + len(target) > max_line
    ):
        return None
    found = _fields(lines[1:], max_bytes, max_count, 0)
    if found is None:
        return None
    fields, hosts, length, conn, expect = found
    if len(hosts) != 1 or not hosts[0] or hosts[0].translate(None, _HOST):
        return None
    keep_alive = conn != 2 if version == (1, 1) else conn == 1
    size = None if length is None else int(length)
    return RequestHead(
        method=method, target=target, headers=fields, http_version=version, keep_alive=keep_alive,
        body=_NONE if size is None else _LENGTH, content_length=size, expect_continue=expect and version == (1, 1),
    )


def scan_response(
    data: bytes, pos: int, end: int, max_bytes: int, max_count: int, head_request: bool
) -> ResponseHead | None:
    """Read ``data[pos:end]`` as one complete plain final response head (ending in CRLFCRLF).

    Returns its ResponseHead (body NONE, which ends the response at its head, or LENGTH with its
    ``content_length``) or None: give the head to llhttp."""
    if type(data) is not bytes or end - pos < 17 or data[end - 4 : end] != _CRLF2:
        return None
    lines = data[pos : end - 4].split(b"\r\n")
    line = lines[0]
    version = _VERSIONS.get(line[:8])
    code = line[9:12]
    if (
        version is None
        or line[8:9] != b" "
        or line[12:13] != b" "
        or len(code) != 3
        or code.translate(None, _DIGITS)
        or not b"2" <= code[:1] <= b"5"
    ):
        return None
    reason = line[13:]
    if reason[:1] == b" " or reason.translate(None, _REASON):
        return None
    status = int(code)
    found = _fields(lines[1:], max_bytes, max_count, len(reason))
    if found is None:
        return None
    fields, _hosts, length, conn, _expect = found
    if status == 204 or status == 304:
        if length is not None:
            return None
        size = None
    elif head_request:
        size = None
    elif length is None:
        return None  # close-delimited: llhttp's
    else:
        size = int(length)
    keep_alive = conn != 2 and (version == (1, 1) or conn == 1)
    return ResponseHead(
        status=status, reason=reason, headers=fields, http_version=version, keep_alive=keep_alive,
        body=_NONE if size is None else _LENGTH, content_length=size,
    )
