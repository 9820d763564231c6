"""HTTP/1.1 heads from HTTP/3-style fields, synthetic error responses and Forwarded elements."""

from __future__ import annotations

import re

import pytest

from ptproxy.errors import HeaderError
from ptproxy.wire.events import BodyData, BodyKind, EndOfMessage, RequestHead, ResponseHead
from ptproxy.wire.parser import RequestParser, ResponseParser
from ptproxy.wire.serialize import (
    REASONS,
    error_response,
    forwarded,
    http_date,
    request_head,
    response_head,
)

NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example
DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_request_head_puts_host_first_and_title_cases() -> None:
    head = request_head(
        b"GET",
        b"/a?b",
        b"example.com:8080",
        [(b"accept", b"*/*"), (b"x-request-id", b"1"), (b"host", b"ignored")],
        body=BodyKind.NONE,
        content_length=None,
    )
    assert head == (
        b"GET /a?b HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-Request-Id: 1\r\n\r\n"
    )


def test_request_head_with_length() -> None:
    head = request_head(
        b"POST", b"/", b"a", [(b"content-length", b"99")], body=BodyKind.LENGTH, content_length=5
    )
    assert head == b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"


def test_request_head_chunked_never_carries_content_length() -> None:
    head = request_head(
        b"POST",
        b"/",
        b"a",
        [(b"content-length", b"5"), (b"content-type", b"x/y")],
        body=BodyKind.CHUNKED,
        content_length=5,
    )
    assert (
        head
        == b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: x/y\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


def test_request_head_without_body_drops_stray_content_length() -> None:
    head = request_head(
        b"GET", b"/", b"a", [(b"content-length", b"5")], body=BodyKind.NONE, content_length=None
    )
    assert b"Content-Length" not in head


def test_request_head_drops_hop_by_hop() -> None:
    head = request_head(
        b"GET",
        b"/",
        b"a",
        [(b"connection", b"x-a"), (b"x-a", b"1"), (b"te", b"trailers"), (b"upgrade", b"h2c")],
        body=BodyKind.NONE,
        content_length=None,
    )
    assert head == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_request_head_round_trips_through_the_parser() -> None:
    head = request_head(
        b"PUT", b"/x", b"[::1]:80", [(b"x-a", b"1")], body=BodyKind.LENGTH, content_length=3
    )
    events = RequestParser().feed(head + b"abc")
    assert isinstance(events[0], RequestHead)
    assert events[0].headers == [(b"Host", b"[::1]:80"), (b"X-A", b"1"), (b"Content-Length", b"3")]
    assert events[1:] == [BodyData(b"abc"), EndOfMessage([])]


@pytest.mark.parametrize(
    ("method", "target", "authority", "fields"),
    [
        (b"GET", b"/", b"a\r\nX-Injected: 1", []),
        (b"GET", b"/ HTTP/1.1\r\nX: y", b"a", []),
        (b"GET", b"", b"a", []),
        (b"GET", b"/", b"", []),
        (b"G T", b"/", b"a", []),
        (b"GET\r\n", b"/", b"a", []),
        (b"GET", b"/", b"a", [(b"x-a", b"1\r\nX-Injected: 1")]),
        (b"GET", b"/", b"a", [(b"x a", b"1")]),
    ],
)
def test_request_head_refuses_line_injection(
    method: bytes, target: bytes, authority: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(HeaderError):
        request_head(method, target, authority, fields, body=BodyKind.NONE, content_length=None)


def test_request_head_close_body_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        request_head(b"POST", b"/", b"a", [], body=BodyKind.CLOSE, content_length=None)
    with pytest.raises(ValueError):
        request_head(b"POST", b"/", b"a", [], body=BodyKind.LENGTH, content_length=None)


def test_response_head_uses_the_standard_reason_and_adds_date() -> None:
    head = response_head(
        404, [(b"content-type", b"text/html")], body=BodyKind.LENGTH, content_length=9, now=NOW
    )
    assert head == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nDate: "
        + DATE
        + b"\r\nContent-Length: 9\r\n\r\n"
    )


def test_response_head_keeps_an_existing_date() -> None:
    head = response_head(200, [(b"date", b"x")], body=BodyKind.LENGTH, content_length=0, now=NOW)
    assert head.count(b"Date:") == 1 and b"Date: x\r\n" in head


def test_response_head_add_date_off() -> None:
    head = response_head(200, [], body=BodyKind.LENGTH, content_length=0, add_date=False)
    assert b"Date" not in head


def test_response_head_unknown_status_reason() -> None:
    assert response_head(299, [], body=BodyKind.LENGTH, content_length=0, now=NOW).startswith(
        b"HTTP/1.1 299 Unknown\r\n"
    )


def test_response_head_chunked() -> None:
    head = response_head(
        200, [(b"content-length", b"10")], body=BodyKind.CHUNKED, content_length=None, now=NOW
    )
    assert b"Content-Length" not in head
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def test_response_head_length_replaces_a_given_content_length() -> None:
    head = response_head(
        200, [(b"content-length", b"10")], body=BodyKind.LENGTH, content_length=3, now=NOW
    )
    assert head.count(b"Content-Length") == 1 and b"Content-Length: 3\r\n" in head


def test_response_head_to_head_request_keeps_content_length() -> None:
    head = response_head(
        200, [(b"content-length", b"10")], body=BodyKind.NONE, content_length=None, now=NOW
    )
    assert b"Content-Length: 10\r\n" in head and b"Transfer-Encoding" not in head


@pytest.mark.parametrize("status", [100, 103, 204])
def test_response_head_never_sends_content_length_on_1xx_or_204(status: int) -> None:
    head = response_head(
        status,
        [(b"content-length", b"0"), (b"link", b"<a>")],
        body=BodyKind.NONE,
        content_length=None,
        now=NOW,
    )
    assert b"Content-Length" not in head and b"Link: <a>\r\n" in head


def test_interim_response_has_no_date() -> None:
    assert (
        response_head(100, [], body=BodyKind.NONE, content_length=None)
        == b"HTTP/1.1 100 Continue\r\n\r\n"
    )


def test_response_head_close_delimited_implies_connection_close() -> None:
    head = response_head(
        200, [(b"content-length", b"1")], body=BodyKind.CLOSE, content_length=None, now=NOW
    )
    assert head == b"HTTP/1.1 200 OK\r\nDate: " + DATE + b"\r\nConnection: close\r\n\r\n"


def test_response_head_server_and_close() -> None:
    head = response_head(
        200,
        [],
        body=BodyKind.LENGTH,
        content_length=0,
        server=b"ptproxy server",
        close=True,
        now=NOW,
    )
    assert b"Server: ptproxy server\r\n" in head and head.endswith(b"Connection: close\r\n\r\n")
    kept = response_head(
        200, [(b"server", b"nginx")], body=BodyKind.LENGTH, content_length=0, server=b"x"
    )
    assert b"Server: nginx\r\n" in kept and b"Server: x" not in kept


def test_response_head_drops_hop_by_hop_and_rejects_injection() -> None:
    head = response_head(
        200,
        [(b"keep-alive", b"5"), (b"upgrade", b"x")],
        body=BodyKind.LENGTH,
        content_length=0,
        now=NOW,
    )
    assert b"Keep-Alive" not in head and b"Upgrade" not in head
    with pytest.raises(HeaderError):
        response_head(200, [(b"x", b"a\r\nb: c")], body=BodyKind.LENGTH, content_length=0)


@pytest.mark.parametrize("status", [99, 600, 0])
def test_response_head_rejects_invalid_status(status: int) -> None:
    with pytest.raises(ValueError):
        response_head(status, [], body=BodyKind.NONE, content_length=None)


def test_response_head_round_trips_through_the_parser() -> None:
    head = response_head(
        201, [(b"location", b"/x")], body=BodyKind.CHUNKED, content_length=None, now=NOW
    )
    parser = ResponseParser(b"POST")
    events = parser.feed(head + b"0\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    assert (events[0].status, events[0].reason, events[0].body) == (
        201,
        b"Created",
        BodyKind.CHUNKED,
    )
    assert parser.done


def test_reason_table() -> None:
    assert REASONS[200] == b"OK"
    assert REASONS[413] == b"Content Too Large"
    assert REASONS[421] == b"Misdirected Request"
    assert REASONS[422] == b"Unprocessable Content"
    assert REASONS[425] == b"Too Early"
    assert REASONS[431] == b"Request Header Fields Too Large"
    assert REASONS[103] == b"Early Hints"
    assert REASONS[511] == b"Network Authentication Required"
    assert all(
        100 <= code <= 599 and reason and b"\r" not in reason for code, reason in REASONS.items()
    )


def test_http_date_is_imf_fixdate_and_cached_per_second() -> None:
    assert http_date(NOW) == DATE
    assert http_date(NOW + 0.9) is http_date(NOW)
    assert re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", http_date())


@pytest.mark.parametrize("side", ["client", "server"])
def test_error_response(side: str) -> None:
    raw = error_response(503, "tunnel is down", side=side, close=False, now=NOW)  # type: ignore[arg-type]
    assert raw == (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Date: " + DATE + b"\r\n"
        b"Server: ptproxy " + side.encode() + b"\r\n"
        b"Content-Length: 15\r\n"
        b"\r\n"
        b"tunnel is down\n"
    )


def test_error_response_close_and_unicode_parse_back() -> None:
    raw = error_response(502, "origin said “no”", side="server", close=True)
    parser = ResponseParser(b"GET")
    events = parser.feed(raw)
    assert parser.done
    head = events[0]
    assert isinstance(head, ResponseHead) and head.status == 502 and not head.keep_alive
    assert (b"Connection", b"close") in head.headers
    assert events[1] == BodyData("origin said “no”\n".encode())


def test_error_response_rejects_unknown_side() -> None:
    with pytest.raises(ValueError):
        error_response(500, "x", side="middle", close=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("for_addr", "by_addr", "proto", "expected"),
    [
        (
            ("192.0.2.1", 5000),
            ("127.0.0.1", 20010),
            "http",
            b'for="192.0.2.1:5000";by="127.0.0.1:20010";proto=http',
        ),
        (
            ("::1", 5000),
            ("2001:db8::1", 443),
            "http3",
            b'for="[::1]:5000";by="[2001:db8::1]:443";proto=http3',
        ),
        (
            ("::ffff:192.0.2.1", 1),
            ("10.0.0.1", 2),
            "http",
            b'for="[::ffff:192.0.2.1]:1";by="10.0.0.1:2";proto=http',
        ),
        (
            ("fe80::1%eth0", 7),
            ("10.0.0.1", 2),
            "http",
            b'for="[fe80::1%eth0]:7";by="10.0.0.1:2";proto=http',
        ),
    ],
)
def test_forwarded(
    for_addr: tuple[str, int], by_addr: tuple[str, int], proto: str, expected: bytes
) -> None:
    assert forwarded(for_addr, by_addr, proto) == expected
