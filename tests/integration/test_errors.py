"""Errors: what a client sees when the origin, the tunnel or the client itself fails."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.support.h1client import curl, open_socket, raw_exchange, read_response, request
from tests.support.pair import free_port, wait_for
from tools.origin_server import pattern_bytes


def marker() -> str:
    return uuid.uuid4().hex[:12]


def test_origin_down_gives_502_naming_the_origin(make_pair) -> None:
    dead = free_port()  # nothing listens there
    p = make_pair(origin_port=dead)
    resp = request(p.http_port, "GET", "/bytes/10")
    assert resp.status == 502
    assert resp.header("Server") == "ptproxy server"
    assert resp.header("Content-Type").startswith("text/plain")
    assert f"127.0.0.1:{dead}" in resp.body.decode()
    assert p.wait_server_log(f"127.0.0.1:{dead}")
    # The tunnel is not affected: still the one session.
    assert request(p.http_port, "GET", "/bytes/10").status == 502
    assert p.client_log().count("tunnel ready") == 1


def test_origin_down_under_concurrency_keeps_the_session(make_pair) -> None:
    """Many 502s at once: the server end answers each and stops reading its request, and the
    client end must not mistake the tail of a response (arriving after STOP_SENDING) for a new
    stream — that used to close the whole session with H3_FRAME_ERROR within a second."""
    dead = free_port()
    p = make_pair(origin_port=dead)
    out = subprocess.run(
        ["wrk", "-c32", "-t2", "-d3s", f"http://127.0.0.1:{p.http_port}/bytes/10"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1))
    assert total > 100 and non2xx == total, out
    assert "Socket errors" not in out, out
    assert request(p.http_port, "GET", "/bytes/10").status == 502
    log = p.client_log()
    assert log.count("tunnel ready") == 1 and "lost" not in log, log[-3000:]
    assert not re.search(r": 503\b", log), log[-3000:]  # no 503 answered (a port may hold "503")


def test_tunnel_down_gives_503_after_the_wait(make_pair) -> None:
    # While the dialer keeps trying, a request waits for the tunnel up to stream_queue_timeout
    # (1 s here), then gets 503 (before: 503 at once; tests/integration/test_tunnel_wait.py).
    p = make_pair({"limits": {"stream_queue_timeout": 1000}}, start_server=False, wait=False)
    assert p.wait_client_log("listening for HTTP/1.1"), p.logs()
    started = time.monotonic()
    resp = request(p.http_port, "GET", "/bytes/10", timeout=30)
    elapsed = time.monotonic() - started
    assert resp.status == 503
    assert resp.header("Server") == "ptproxy client"
    assert "tunnel" in resp.body.decode()
    assert elapsed >= 0.9  # it waited (an upper bound would only measure the machine)
    # A request with a body waits the same way, then is refused without its body being read.
    resp = request(p.http_port, "POST", "/sink", body=b"x" * 100_000, timeout=30)
    assert resp.status == 503


def test_origin_reset_mid_body_cuts_the_curl_transfer(pair, tmp_path) -> None:
    n = 1_000_000
    out = tmp_path / "body"
    result = curl(
        "-o", str(out), "-w", "%{http_code} %{size_download}", pair.url(f"/reset-mid-body?n={n}")
    )
    # curl: 18 = partial file, 56 = failure receiving; never 0 with a short body.
    assert result.returncode in (18, 56), (result.returncode, result.stderr)
    status, size = result.stdout.split()
    assert status == b"200"
    assert int(size) < n


def test_origin_reset_mid_body_gives_http_client_an_incomplete_read(pair) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", pair.http_port, timeout=30)
    try:
        conn.request("GET", "/reset-mid-body?n=1000000")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_origin_reset_mid_body_closes_the_connection_early_and_the_session_survives(pair) -> None:
    ready_before = pair.client_log().count("tunnel ready")
    n = 1_000_000
    with open_socket(pair.http_port) as sock:
        sock.sendall(b"GET /reset-mid-body?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n)
        resp = read_response(sock.makefile("rb"))
    assert resp.status == 200 and resp.header(b"Content-Length") == b"%d" % n
    assert not resp.complete
    assert len(resp.body) < n
    assert resp.body == pattern_bytes(len(resp.body))  # what came is right, just short
    # Chunked downloads are cut the same way (no terminating zero chunk).
    (resp,) = raw_exchange(pair.http_port, b"GET /bytes/10 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert resp.status == 200 and resp.body == pattern_bytes(10)
    assert pair.client_log().count("tunnel ready") == ready_before
    assert pair.wait_client_log("closing the connection")


def test_client_disconnect_mid_upload_resets_the_stream(pair, origin) -> None:
    ready_before = pair.client_log().count("tunnel ready")
    m = marker()
    n = 2_000_000
    with open_socket(pair.http_port) as sock:
        sock.sendall(
            b"POST /sink?id=%b HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (m.encode(), n)
        )
        sock.sendall(pattern_bytes(300_000))
        # Wait until the request reached the origin, so the reset has something to cut.
        assert wait_for(lambda: origin.entries(m), 10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # The origin sees its connection end mid-body: never a complete request.
    entries = wait_for(lambda: [e for e in origin.entries(m) if e["outcome"] != "reading"], 10)
    assert entries, origin.entries(m)
    assert [e["outcome"] for e in entries] == ["incomplete"]
    assert entries[0]["body_length"] < n
    assert pair.wait_client_log("resetting the stream"), pair.logs()
    assert pair.wait_server_log("request body to origin failed"), pair.logs()
    # The session survives.
    assert request(pair.http_port, "GET", "/bytes/10").status == 200
    assert pair.client_log().count("tunnel ready") == ready_before


def test_client_half_close_mid_upload_gets_an_error_not_a_hang(pair, origin) -> None:
    # The client sends part of a Content-Length body and then shuts its write side: the body is
    # short, so the origin must not see a complete request, and the client gets a synthetic
    # error (the head was not sent yet) and a closed connection instead of waiting forever.
    m = marker()
    with open_socket(pair.http_port, timeout=15) as sock:
        sock.sendall(
            b"POST /echo?id=%b HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" % m.encode()
        )
        sock.sendall(b"x" * 400)
        sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        resp = read_response(f)
        assert f.read() == b""  # then the connection is closed
    assert resp.status == 400, resp
    assert resp.header(b"Server") == b"ptproxy client"
    assert b"request body incomplete" in resp.body
    entries = wait_for(lambda: [e for e in origin.entries(m) if e["outcome"] != "reading"], 10)
    assert [e["outcome"] for e in entries] in ([], ["incomplete"]), entries
    assert request(pair.http_port, "GET", "/bytes/10").status == 200


def test_client_end_exits_promptly_on_sigint_after_an_aborted_upload(make_pair, origin) -> None:
    p = make_pair()
    m = marker()
    with open_socket(p.http_port) as sock:
        sock.sendall(
            b"POST /sink?id=%b HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n" % m.encode()
        )
        sock.sendall(b"x" * 100_000)
        assert wait_for(lambda: origin.entries(m), 10)
    assert p.wait_client_log("resetting the stream")
    p.client.send(signal.SIGINT)
    assert p.client.wait(5) == 0, p.logs()
