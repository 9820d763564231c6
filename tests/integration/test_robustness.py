"""One bad request never takes the session down (nor the process, nor other requests)."""

from __future__ import annotations

import socket
import uuid

import pytest

from tests.support.h1client import open_socket, raw_exchange, read_response, request

MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "space-in-name": b"GET /echo HTTP/1.1\r\nHost: h\r\nBad Name: y\r\n\r\n",
    "nul-in-value": b"GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
    "bare-cr": b"GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n",
    "colon-in-name": b"GET /echo HTTP/1.1\r\nHost: h\r\n:path: /admin\r\n\r\n",
    "bad-content-length": b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
    "two-content-lengths": b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "negative-content-length": b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "huge-chunk-size": b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    "te-identity": b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "http-2.0-line": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "bad-version": b"GET / HTTP/1.x\r\nHost: h\r\n\r\n",
    "no-target": b"GET  HTTP/1.1\r\nHost: h\r\n\r\n",
    "ctl-in-target": b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n",
    "bad-host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "empty-host": b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    "long-target": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "huge-header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\nHost: h\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(300))
    + b"\r\n",
    "lf-only": b"GET / HTTP/1.1\nHost: h\n\n",
    "asterisk-get": b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_4xx_from_the_client_end(pair, name: str) -> None:
    responses = raw_exchange(pair.http_port, MALFORMED[name], timeout=15)
    # The client end answers (4xx, its own Server header) and closes; never a 5xx, never a hang.
    assert len(responses) == 1, name
    (resp,) = responses
    assert 400 <= resp.status < 500, (name, resp)
    assert resp.header(b"Server") == b"ptproxy client", (name, resp)
    assert resp.header(b"Connection") == b"close"


def test_malformed_requests_never_take_the_session_down(pair) -> None:
    ready = pair.client_log().count("tunnel ready")
    # The server end may log its side of the handshake just after the client end is ready.
    assert pair.wait_server_log("established"), pair.logs()
    established = pair.server_log().count("established")
    for data in MALFORMED.values():
        raw_exchange(pair.http_port, data, timeout=15)
    # Errors after the head crossed the tunnel: a chunked body that turns bad mid-way, and a
    # Content-Length body that turns out longer than declared (the excess is the next request).
    for data in (
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nab",
        b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhello",
    ):
        with open_socket(pair.http_port, timeout=15) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
    # A bad response from the origin is refused without harm either.
    assert request(pair.http_port, "GET", "/te-gzip").status == 502
    resp = request(pair.http_port, "GET", "/bytes/100")
    assert resp.status == 200
    assert pair.client_log().count("tunnel ready") == ready, pair.logs()
    assert pair.server_log().count("established") == established, pair.logs()
    assert "lost" not in pair.client_log()


def test_bad_request_after_a_good_one_on_the_same_connection_gets_both_answers(pair) -> None:
    data = b"GET /bytes/5 HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\n"
    first, second = raw_exchange(pair.http_port, data, count=2, timeout=15)
    assert first.status == 200 and first.body.__len__() == 5
    assert second.status == 400 and second.header(b"Server") == b"ptproxy client"


def test_bad_request_does_not_disturb_a_concurrent_transfer(pair) -> None:
    n = 5_000_000
    with open_socket(pair.http_port) as sock:
        sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: h\r\n\r\n" % n)
        f = sock.makefile("rb")
        f.peek(1)  # the download has started
        for data in list(MALFORMED.values())[:8]:
            raw_exchange(pair.http_port, data, timeout=15)
        resp = read_response(f)
    assert resp.status == 200 and len(resp.body) == n and resp.complete


def test_unknown_method_is_forwarded(pair) -> None:
    m = uuid.uuid4().hex[:8]
    resp = request(pair.http_port, "PURGE", f"/echo?id={m}")
    assert resp.status == 200
    assert resp.json()["method"] == "PURGE"
