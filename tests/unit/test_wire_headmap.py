"""The head mapping twins (``ptproxy.wire.headmap``): the compiled twin against the pure one.

On the same generated heads (hypothesis) each of the seven mappings and writers gives the same
result, or raises the same exception class with the same message. The generator mixes ordinary
fields with what the rules single out: pseudo-headers (repeated, empty, unknown), Host (none, one,
several, empty), Content-Length (equal and conflicting copies, whitespace, non-digits, too long),
hop-by-hop fields and Connection options naming other fields, the ends' internal fields, Date and
Server in any case, invalid name and value bytes, and every body code.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.errors import ClientProtocolError
from ptproxy.server.routes import DEFAULT_ROUTE, internal_fields
from ptproxy.wire import _headmap_py, h3map

SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def c() -> ModuleType:
    try:
        return importlib.import_module("ptproxy._speedups.headmap")
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip("compiled twin ptproxy._speedups.headmap is not built")


py = _headmap_py


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the class and message are what is compared
        return ("raised", (type(exc), str(exc)))


def same(c: ModuleType, name: str, *args: Any) -> tuple[str, Any]:
    expected = outcome(getattr(py, name), *args)
    assert outcome(getattr(c, name), *args) == expected
    return expected


# -- generated fields ----------------------------------------------------------------------------

_NAMES = [
    b"accept", b"User-Agent", b"user-agent", b"CONTENT-TYPE", b"content-type", b"x-custom", b"X-Odd-Name",
    b"host", b"Host", b"HOST", b"content-length", b"Content-Length", b"date", b"Date", b"server",
    b"SERVER", b"connection", b"Connection", b"keep-alive", b"te", b"TE", b"trailer", b"upgrade",
    b"transfer-encoding", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
    b"ptproxy-route", b"PTPROXY-Client-Address", b"ptproxy-client-address", b"forwarded", b"set-cookie", b"a--b", b"-x", b"x-",
    b":method", b":path", b":authority", b":scheme", b":status", b":protocol", b":other", b":",
    b"", b"bad name", b"bad\x00", b"caf\xe9", b"x:y", b"1", b"sec-fetch-mode", b"Www-Authenticate",
]
_VALUES = [
    b"", b"1", b"0", b"5", b"42", b" 42", b"42 ", b"\t7\t", b"007", b"12a", b"-1", b"1" * 18, b"1" * 19,
    b"\x0b3\x0c", b"3\r", b"text/plain", b"GET", b"HEAD", b"CONNECT", b"POST", b"/", b"/a?b=c",
    b"example.com", b"a.b:80", b"200", b"204", b"101", b"099", b"20x", b"2000", b"close",
    b"close, x-custom", b"keep-alive, Date", b"Server ,, content-length", b"websocket",
    b"a\r\nb", b"a\x00", b"\x7f", b"caf\xe9", b"  spaced  ", b"Mon, 01 Jan 2001 00:00:00 GMT",
]
_NAME = st.one_of(st.sampled_from(_NAMES), st.binary(max_size=8))
_VALUE = st.one_of(st.sampled_from(_VALUES), st.binary(max_size=12))
FIELDS = st.lists(st.tuples(_NAME, _VALUE), max_size=10)


def _h3_request(parts: tuple[bytes, bytes, bytes], extra: list[tuple[bytes, bytes]], order: int) -> list:
    pseudo = [(b":method", parts[0]), (b":path", parts[1]), (b":authority", parts[2]), (b":scheme", b"http")]
    return pseudo[: order % 5] + extra + pseudo[order % 5 :]


_TOKEN = st.one_of(st.sampled_from(_VALUES), st.binary(max_size=6))


# -- the mappings ----------------------------------------------------------------------------------


@SETTINGS
@given(method=_TOKEN, target=_TOKEN, headers=FIELDS, chunked=st.booleans(),
       forwarded=st.one_of(st.none(), _TOKEN))
def test_h1_request_to_h3_twins_agree(c: ModuleType, method: bytes, target: bytes, headers: list,
                                      chunked: bool, forwarded: bytes | None) -> None:
    same(c, "h1_request_to_h3", method, target, headers, chunked, forwarded)
    # with exactly one Host the mapping itself runs (most generated lists have none or several)
    same(c, "h1_request_to_h3", method, target, [(b"Host", b"h.example"), *headers], chunked, forwarded)
    clean = [(n, v) for n, v in headers if n.lower() != b"host"]
    same(c, "h1_request_to_h3", method, target, [*clean, (b"host", b"h")], chunked, forwarded)


@SETTINGS
@given(parts=st.tuples(_TOKEN, _TOKEN, _TOKEN), extra=FIELDS, order=st.integers(0, 9))
def test_h3_request_parts_twins_agree(c: ModuleType, parts: tuple[bytes, bytes, bytes], extra: list,
                                      order: int) -> None:
    for name in ("h3_request_parts", "h3_request_routed"):
        same(c, name, extra)
        same(c, name, _h3_request(parts, extra, order))
        same(c, name, _h3_request((b"GET", b"/", b"a"), extra, order))
    # h3_request_routed is what the server end read in two passes before: h3_request_parts, then
    # routes.internal_fields; None (the general path) whenever :protocol is there.
    request = _h3_request((b"GET", b"/", b"a"), extra, order)
    kind, got = outcome(py.h3_request_routed, request)
    if any(n == b":protocol" for n, _ in request):
        assert (kind, got) == ("ok", None)
        return
    before = outcome(py.h3_request_parts, request)
    if kind == "raised" or before[0] == "raised":
        assert (kind, got) == before
        return
    method, authority, path, fields, length = before[1]
    name, client_address, rest = internal_fields(fields)
    assert got[:5] == (method, authority, path, rest, length)
    assert (DEFAULT_ROUTE if got[5] is None else got[5].decode("latin-1"), got[6]) == (name, client_address)


@SETTINGS
@given(status=st.one_of(st.integers(0, 1200), st.sampled_from([200, 204, 304, 101])), headers=FIELDS,
       chunked=st.booleans())
def test_h1_response_to_h3_twins_agree(c: ModuleType, status: int, headers: list, chunked: bool) -> None:
    same(c, "h1_response_to_h3", status, headers, chunked)


@SETTINGS
@given(status=_TOKEN, extra=FIELDS, at=st.integers(0, 10))
def test_h3_response_parts_twins_agree(c: ModuleType, status: bytes, extra: list, at: int) -> None:
    same(c, "h3_response_parts", extra)
    same(c, "h3_response_parts", [*extra[:at], (b":status", status), *extra[at:]])
    same(c, "h3_response_parts", [*extra[:at], (b":status", b"200"), *extra[at:]])


# -- the writers -----------------------------------------------------------------------------------

_LENGTH = st.one_of(st.none(), st.integers(-2, 10**6), st.sampled_from([2**63, 2**64, 10**30, True]))
_BODY = st.integers(0, 4)


@SETTINGS
@given(method=_TOKEN, target=_TOKEN, authority=_TOKEN, fields=FIELDS, body=_BODY, length=_LENGTH)
def test_request_head_twins_agree(c: ModuleType, method: bytes, target: bytes, authority: bytes,
                                  fields: list, body: int, length: int | None) -> None:
    same(c, "request_head_bytes", method, target, authority, fields, body, length)
    ok = [(n, v) for n, v in fields if n and not n.translate(None, _headmap_py._TCHAR)]
    ok = [(n, v.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")) for n, v in ok]
    same(c, "request_head_bytes", b"GET", b"/p?q", b"a.example:8080", ok, body, length)


@SETTINGS
@given(status=st.one_of(st.integers(90, 610), st.sampled_from([100, 101, 103, 200, 204, 304, 499, 599])),
       fields=FIELDS, body=_BODY, length=_LENGTH, add_date=st.booleans(),
       server=st.one_of(st.none(), _TOKEN), close=st.booleans(),
       now=st.one_of(st.integers(0, 2**33), st.floats(0, 2e9)))
def test_response_head_twins_agree(c: ModuleType, status: int, fields: list, body: int, length: int | None,
                                   add_date: bool, server: bytes | None, close: bool, now: float) -> None:
    same(c, "response_head_bytes", status, fields, body, length, add_date, server, close, now)
    ok = [(n, v) for n, v in fields if n and not n.translate(None, _headmap_py._TCHAR)]
    ok = [(n, v.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")) for n, v in ok]
    same(c, "response_head_bytes", status, ok, body, length, add_date, server, close, now)


@settings(max_examples=500, deadline=None)
@given(now=st.one_of(st.integers(-2, 253402300800 + 5), st.floats(0, 4e9), st.integers(-(2**40), 2**40)))
def test_http_date_twins_agree(c: ModuleType, now: float) -> None:
    same(c, "http_date", now)


def test_http_date_of_the_wall_clock(c: ModuleType) -> None:
    assert len(c.http_date()) == len(py.http_date()) == 29
    assert c.http_date(784111777) == py.http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"


# -- fixed cases and constants ----------------------------------------------------------------------


def test_constants_are_the_same(c: ModuleType) -> None:
    assert c.REASONS == py.REASONS
    assert (c.BODY_NONE, c.BODY_LENGTH, c.BODY_CHUNKED, c.BODY_CLOSE) == (0, 1, 2, 3)
    assert py._INTERNAL == h3map.INTERNAL_FIELDS


@pytest.mark.parametrize("impl", ["py", "c"])
def test_a_head_round_trip(c: ModuleType, impl: str) -> None:
    m = py if impl == "py" else c
    h3, authority = m.h1_request_to_h3(
        b"GET", b"/x", [(b"Host", b"a.example"), (b"User-Agent", b" ua "), (b"Ptproxy-Route", b"r")], False, None
    )
    assert authority == b"a.example"
    assert h3 == [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.example"), (b":path", b"/x"),
                  (b"user-agent", b"ua")]
    method, authority, path, fields, length = m.h3_request_parts(h3)
    assert m.request_head_bytes(method, path, authority, fields, m.BODY_NONE, length) == (
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: ua\r\n\r\n"
    )
    h3 = m.h1_response_to_h3(200, [(b"Content-Type", b"t"), (b"Content-Length", b"2"), (b"Connection", b"x")], False)
    assert h3 == [(b":status", b"200"), (b"content-type", b"t"), (b"content-length", b"2")]
    status, fields, length = m.h3_response_parts(h3)
    assert (status, length) == (200, 2)
    assert m.response_head_bytes(status, fields, m.BODY_LENGTH, length, True, b"s", False, 0) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: t\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: s\r\n"
        b"Content-Length: 2\r\n\r\n"
    )


def test_many_fields_and_list_pairs(c: ModuleType) -> None:
    fields = [[b"x-%d" % i, b"v"] for i in range(100)] + [(b"content-length", b"3")]
    for args in ((200, fields, 0, None, False, None, False, 0), (200, fields, 3, None, True, None, True, 5)):
        same(c, "response_head_bytes", *args)
    same(c, "request_head_bytes", bytearray(b"PUT"), bytearray(b"/"), b"h", fields, 2, None)
    same(c, "h1_request_to_h3", b"GET", b"/", [[b"Host", b"h"], *fields], True, b"f")
    same(c, "h3_response_parts", [(b":status", b"200"), *fields])


@pytest.mark.parametrize(
    ("extra", "ended", "body", "length"),
    [([], True, "NONE", None), ([], False, "CHUNKED", None), ([(b"content-length", b"3")], False, "LENGTH", 3)],
)
def test_routed_request_from_h3(extra: list, ended: bool, body: str, length: int | None) -> None:
    """The server end's one-pass mapping: the request as request_from_h3 makes it, its internal
    fields read and removed; None for a CONNECT and for anything with :protocol."""
    h3 = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p"),
          (b"ptproxy-route", b"r1"), (b"accept", b"*/*"), (b"ptproxy-client-address", b"10.0.0.1"),
          (b"ptproxy-route", b"r2"), *extra]
    routed = h3map.routed_request_from_h3(h3, ended)
    assert routed is not None
    request, route, client_address = routed
    assert (route, client_address) == (b"r2", b"10.0.0.1")
    expected = h3map.request_from_h3(h3, ended)
    expected.fields = [(n, v) for n, v in expected.fields if n not in h3map.INTERNAL_FIELDS]
    assert request == expected
    assert (request.body.name, request.content_length) == (body, length)
    assert request.fields == [(b"accept", b"*/*"), *extra]
    assert h3map.routed_request_from_h3([(b":method", b"CONNECT"), (b":authority", b"a:1")], False) is None
    assert h3map.routed_request_from_h3([*h3, (b":protocol", b"websocket")], False) is None
    assert h3map.routed_request_from_h3([(b":method", b"GET"), (b":protocol", b"x")], False) is None
    with pytest.raises(ClientProtocolError, match="missing :path"):
        h3map.routed_request_from_h3([(b":method", b"GET"), (b":authority", b"a")], False)
