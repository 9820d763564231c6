"""HTTP semantics of a client+server pair seen as one proxy (reference: "HTTP semantics")."""

from __future__ import annotations

import email.utils
import re
import time
import uuid

from tests.support.h1client import header, header_all, raw_exchange, request
from tools.origin_server import OLD_DATE, pattern_bytes

HOP_BY_HOP = [
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authenticate",
    "Proxy-Authorization",
]


def marker() -> str:
    return uuid.uuid4().hex[:12]


def names(headers) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n, _ in headers]


# -- hop-by-hop -----------------------------------------------------------------------------------


def test_hop_by_hop_request_headers_are_removed(pair) -> None:
    req = (
        b"GET /echo HTTP/1.1\r\nHost: h\r\n"
        b"Connection: X-Secret, keep-alive, Upgrade\r\n"
        b"X-Secret: must-not-pass\r\n"
        b"Keep-Alive: timeout=300\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Whatever\r\n"
        b"Upgrade: h2c\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"X-Kept: yes\r\n\r\n"
    )
    (resp,) = raw_exchange(pair.http_port, req)
    assert resp.status == 200
    seen = {n.lower() for n in names(resp.json()["headers"])}
    for name in HOP_BY_HOP + ["X-Secret"]:
        assert name.lower() not in seen, name
    assert header(resp.json()["headers"], "X-Kept") == "yes"


def test_hop_by_hop_response_headers_are_removed(pair) -> None:
    (resp,) = raw_exchange(pair.http_port, b"GET /hop HTTP/1.1\r\nHost: h\r\n\r\n")
    assert resp.status == 200 and resp.body == b"hop\n"
    got = {n.lower() for n in names(resp.headers)}
    for name in [
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Authenticate",
        "X-Foo",
    ]:
        assert name.lower() not in got, name
    # The origin's "Connection: X-Foo, keep-alive" must not come through (the client end may
    # add its own Connection: close, which is not the case on a keep-alive exchange).
    assert resp.header(b"Connection") is None
    assert resp.header(b"X-Kept") == b"yes"


# -- Date, reason phrase, names ---------------------------------------------------------------------


def test_date_is_added_when_the_origin_sends_none(pair) -> None:
    resp = request(pair.http_port, "GET", "/nodate")
    assert resp.status == 200
    date = resp.header("Date")
    assert date is not None
    sent = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(sent - time.time()) < 120


def test_date_from_the_origin_is_kept(pair) -> None:
    resp = request(pair.http_port, "GET", "/bytes/1")
    assert header_all(resp.headers, "Date") == [OLD_DATE.decode()]


def test_reason_phrase_is_replaced_by_the_standard_one(pair) -> None:
    (resp,) = raw_exchange(pair.http_port, b"GET /reason HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (resp.status, resp.reason) == (200, b"OK")
    (resp,) = raw_exchange(pair.http_port, b"GET /status/404 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (resp.status, resp.reason) == (404, b"Not Found")


def test_header_names_reach_the_origin_in_title_case(pair) -> None:
    req = (
        b"GET /echo HTTP/1.1\r\nhost: h\r\nx-lower-case: 1\r\nX-UPPER-CASE: 2\r\n"
        b"content-type: text/plain\r\naccept: */*\r\nx-a-b-c: 3\r\n\r\n"
    )
    (resp,) = raw_exchange(pair.http_port, req)
    got = names(resp.json()["headers"])
    for name in ["Host", "X-Lower-Case", "X-Upper-Case", "Content-Type", "Accept", "X-A-B-C"]:
        assert name in got, got


def test_header_names_reach_the_client_in_title_case(pair) -> None:
    (resp,) = raw_exchange(
        pair.http_port,
        b"GET /headers?h=x-lower-case:1&h=X-UPPER-CASE:2&h=cache-control:no-store HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    got = names(resp.headers)
    for name in ["X-Lower-Case", "X-Upper-Case", "Cache-Control", "Content-Type", "Server"]:
        assert name in got, got


def test_same_name_request_headers_keep_their_relative_order(pair) -> None:
    req = (
        b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Multi: one\r\nX-Other: a\r\nX-Multi: two\r\n"
        b"Accept: text/html\r\nX-Multi: three\r\nX-Other: b\r\n\r\n"
    )
    (resp,) = raw_exchange(pair.http_port, req)
    headers = resp.json()["headers"]
    assert header_all(headers, "X-Multi") == ["one", "two", "three"]
    assert header_all(headers, "X-Other") == ["a", "b"]


def test_same_name_response_headers_keep_their_relative_order(pair) -> None:
    (resp,) = raw_exchange(
        pair.http_port,
        b"GET /headers?h=Set-Cookie:a%3D1&h=X-Other:x&h=Set-Cookie:b%3D2&h=Set-Cookie:c%3D3 HTTP/1.1\r\n"
        b"Host: h\r\n\r\n",
    )
    assert header_all(resp.headers, b"Set-Cookie") == [b"a=1", b"b=2", b"c=3"]


def test_header_values_with_obs_text_and_inner_spaces_pass_through(pair) -> None:
    req = b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\nX-Spaces: a  b\tc\r\nX-Empty:\r\n\r\n"
    (resp,) = raw_exchange(pair.http_port, req)
    assert resp.status == 200
    headers = resp.json()["headers"]
    assert header(headers, "X-Latin") == "caf\xe9"
    assert header(headers, "X-Spaces") == "a  b\tc"
    assert header(headers, "X-Empty") == ""


def test_host_reaches_the_origin_as_sent(pair) -> None:
    resp = request(pair.http_port, "GET", "/echo?q=1&r=%20x", headers={"Host": "api.example:8443"})
    seen = resp.json()
    assert header_all(seen["headers"], "Host") == ["api.example:8443"]
    assert seen["target"] == "/echo?q=1&r=%20x"


# -- rejected requests -------------------------------------------------------------------------------


def assert_client_refusal(resp, status: int) -> None:
    assert resp.status == status, resp
    assert resp.header(b"Server") == b"ptproxy client"
    assert resp.header(b"Content-Type").startswith(b"text/plain")
    assert resp.body.strip()


def test_missing_host_is_rejected_with_400(pair, origin) -> None:
    m = marker()
    (resp,) = raw_exchange(pair.http_port, b"GET /echo?id=%b HTTP/1.1\r\n\r\n" % m.encode())
    assert_client_refusal(resp, 400)
    assert b"Host" in resp.body
    assert origin.entries(m) == []


def test_repeated_host_is_rejected_with_400(pair) -> None:
    (resp,) = raw_exchange(pair.http_port, b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert_client_refusal(resp, 400)


def test_absolute_form_target_is_rejected_with_400(pair, origin) -> None:
    m = marker()
    req = b"GET http://example.com/echo?id=%b HTTP/1.1\r\nHost: example.com\r\n\r\n" % m.encode()
    (resp,) = raw_exchange(pair.http_port, req)
    assert_client_refusal(resp, 400)
    assert origin.entries(m) == []


def test_connect_is_answered_405(pair) -> None:
    (resp,) = raw_exchange(
        pair.http_port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert_client_refusal(resp, 405)


def test_request_transfer_encoding_other_than_chunked_is_rejected_with_400(pair, origin) -> None:
    m = marker()
    req = (
        b"POST /echo?id=%b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" % m.encode()
    )
    (resp,) = raw_exchange(pair.http_port, req)
    assert_client_refusal(resp, 400)
    assert origin.entries(m) == []


def test_response_transfer_encoding_other_than_chunked_is_answered_502(pair) -> None:
    (resp,) = raw_exchange(pair.http_port, b"GET /te-gzip HTTP/1.1\r\nHost: h\r\n\r\n")
    assert resp.status == 502
    assert resp.header(b"Server") == b"ptproxy server"
    assert b"hello" not in resp.body


# -- framing -------------------------------------------------------------------------------------------


def test_content_length_is_dropped_when_a_response_is_chunked(pair) -> None:
    (resp,) = raw_exchange(
        pair.http_port, b"GET /bytes/200000?chunked=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert resp.framing == "chunked" and resp.complete
    assert resp.header(b"Content-Length") is None
    assert resp.body == pattern_bytes(200000)


def test_request_with_both_content_length_and_chunked_is_not_forwarded_with_both(
    pair, origin
) -> None:
    # RFC 9112 6.1: a server MAY reject such a request, or process it by Transfer-Encoding alone
    # (dropping Content-Length). Either way the origin must never see both.
    m = marker()
    req = (
        b"POST /echo?id=%b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % m.encode()
    )
    (resp,) = raw_exchange(pair.http_port, req)
    if resp.status == 400:
        assert resp.header(b"Server") == b"ptproxy client"
        assert origin.entries(m) == []
    else:
        seen = resp.json()
        assert header(seen["headers"], "Content-Length") is None
        assert seen["chunked"] is True and seen["body_length"] == 5


def test_response_without_content_length_goes_out_chunked(pair) -> None:
    n = 50_000
    (resp,) = raw_exchange(
        pair.http_port, b"GET /close-delimited?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n
    )
    assert resp.status == 200
    assert resp.framing == "chunked" and resp.complete
    assert resp.header(b"Content-Length") is None
    assert resp.body == pattern_bytes(n)


def test_response_without_content_length_to_http10_client_is_close_delimited(pair) -> None:
    n = 50_000
    (resp,) = raw_exchange(
        pair.http_port, b"GET /close-delimited?n=%d HTTP/1.0\r\nHost: h\r\n\r\n" % n
    )
    assert resp.status == 200
    assert resp.header(b"Transfer-Encoding") is None
    assert resp.body == pattern_bytes(n)


def test_close_delimited_response_through_http_client(pair) -> None:
    resp = request(pair.http_port, "GET", "/close-delimited?n=30000")
    assert resp.status == 200 and resp.body == pattern_bytes(30000)


# -- Forwarded -------------------------------------------------------------------------------------------

FWD = {"system": {"add_forwarded": True}}


def forwarded_elements(headers) -> list[str]:
    return [e.strip() for v in header_all(headers, "Forwarded") for e in v.split(",")]


def test_forwarded_is_appended_at_both_ends(make_pair) -> None:
    p = make_pair(FWD, FWD)
    import socket as _s

    with _s.create_connection(("127.0.0.1", p.http_port)) as sock:
        src = sock.getsockname()
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        from tests.support.h1client import read_response

        resp = read_response(sock.makefile("rb"))
    elements = forwarded_elements(resp.json()["headers"])
    assert len(elements) == 2, elements
    assert elements[0] == f'for="127.0.0.1:{src[1]}";by="127.0.0.1:{p.http_port}";proto=http'
    m = re.fullmatch(
        rf'for="127\.0\.0\.1:(\d+)";by="127\.0\.0\.1:{p.quic_port}";proto=http3', elements[1]
    )
    assert m, elements[1]
    # The "for" of the server end is the client end's QUIC address, as the server logged it.
    assert f"established (127.0.0.1:{m.group(1)})" in p.server_log()


def test_existing_forwarded_is_kept(make_pair) -> None:
    p = make_pair(FWD, FWD)
    resp = request(p.http_port, "GET", "/echo", headers={"Forwarded": "for=192.0.2.60;proto=https"})
    elements = forwarded_elements(resp.json()["headers"])
    assert elements[0] == "for=192.0.2.60;proto=https"
    assert len(elements) == 3
    assert elements[1].endswith("proto=http") and elements[2].endswith("proto=http3")


def test_no_forwarded_by_default(pair) -> None:
    resp = request(pair.http_port, "GET", "/echo")
    assert header(resp.json()["headers"], "Forwarded") is None
