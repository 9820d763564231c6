"""Requests through a client+server pair with real clients: curl, http.client, raw sockets."""

from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.h1client import curl, header, open_socket, raw_exchange, read_response, request
from tests.support.pair import BULK
from tools.origin_server import OLD_DATE, pattern, pattern_bytes, pattern_sha256

MB = 1024 * 1024


def marker() -> str:
    return uuid.uuid4().hex[:12]


def test_get_with_curl(pair, tmp_path: Path) -> None:
    out = tmp_path / "body"
    result = curl(
        "-D", str(tmp_path / "head"), "-o", str(out), "-w", "%{http_code}", pair.url("/bytes/12345")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"200"
    assert out.read_bytes() == pattern_bytes(12345)
    head = (tmp_path / "head").read_bytes()
    assert b"Content-Length: 12345\r\n" in head


def test_get_with_http_client(pair) -> None:
    resp = request(pair.http_port, "GET", "/bytes/5000")
    assert resp.status == 200
    assert resp.reason == "OK"
    assert resp.body == pattern_bytes(5000)
    assert resp.header("Content-Length") == "5000"
    assert resp.header("Server") == "test-origin"  # the origin's answer, not a synthetic one
    assert resp.header("Date") == OLD_DATE.decode()


def test_head_keeps_content_length_and_sends_no_body(pair) -> None:
    # A GET follows on the same connection: any stray body byte after the HEAD response would
    # corrupt the second response.
    data = b"HEAD /bytes/5000 HTTP/1.1\r\nHost: h\r\n\r\nGET /bytes/7 HTTP/1.1\r\nHost: h\r\n\r\n"
    head, get = raw_exchange(pair.http_port, data, count=2, methods=[b"HEAD", b"GET"])
    assert head.status == 200
    assert head.header(b"Content-Length") == b"5000"
    assert head.header(b"Transfer-Encoding") is None
    assert get.status == 200 and get.body == pattern_bytes(7)


def test_head_with_curl_gets_headers_only(pair) -> None:
    result = curl("-I", pair.url("/bytes/5000"))
    assert result.returncode == 0, result.stderr
    assert b"HTTP/1.1 200 OK" in result.stdout
    assert b"Content-Length: 5000" in result.stdout


def test_post_with_content_length_reaches_origin_intact(pair) -> None:
    body = pattern_bytes(100_000, start=3)
    resp = request(
        pair.http_port,
        "POST",
        "/echo",
        body=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200
    seen = resp.json()
    assert seen["method"] == "POST"
    assert seen["chunked"] is False
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header(seen["headers"], "Content-Length") == str(len(body))
    assert header(seen["headers"], "Transfer-Encoding") is None


def test_chunked_request_keeps_chunk_sizes_and_drops_extensions(pair) -> None:
    sizes = [3, 1000, 5, 100_000, 1]
    body = pattern_bytes(sum(sizes))
    wire = [b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"]
    pos = 0
    for i, size in enumerate(sizes):
        ext = b";name=value;flag" if i % 2 == 0 else b""
        wire.append(b"%x%b\r\n%b\r\n" % (size, ext, body[pos : pos + size]))
        pos += size
    wire.append(b"0\r\n\r\n")
    (resp,) = raw_exchange(pair.http_port, b"".join(wire))
    assert resp.status == 200
    seen = resp.json()
    assert seen["chunked"] is True
    assert seen["chunk_sizes"] == sizes
    assert seen["chunk_extensions"] == []
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header(seen["headers"], "Transfer-Encoding") == "chunked"
    assert header(seen["headers"], "Content-Length") is None


def test_chunked_request_sent_in_pieces_keeps_chunk_sizes(pair) -> None:
    # The same, with the chunks trickling in across many TCP segments.
    sizes = [10, 20000, 7]
    body = pattern_bytes(sum(sizes))
    with open_socket(pair.http_port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        pos = 0
        for size in sizes:
            chunk = b"%x\r\n%b\r\n" % (size, body[pos : pos + size])
            pos += size
            for i in range(0, len(chunk), 4096):
                sock.sendall(chunk[i : i + 4096])
        sock.sendall(b"0\r\n\r\n")
        resp = read_response(sock.makefile("rb"))
    seen = resp.json()
    assert seen["chunk_sizes"] == sizes
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_response_is_preserved_chunk_by_chunk(pair) -> None:
    sizes = [3, 1000, 5, 100_000, 1]
    (resp,) = raw_exchange(
        pair.http_port,
        b"GET /chunked?sizes=%b&ext=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        % ",".join(map(str, sizes)).encode(),
    )
    assert resp.status == 200
    assert resp.framing == "chunked" and resp.complete
    assert resp.header(b"Transfer-Encoding") == b"chunked"
    assert resp.header(b"Content-Length") is None
    assert resp.chunk_sizes == sizes
    assert resp.chunk_extensions == []
    assert resp.body == pattern_bytes(sum(sizes))


def test_1mb_bodies_both_directions_with_curl(pair, tmp_path: Path) -> None:
    down = tmp_path / "down"
    result = curl("-o", str(down), "-w", "%{http_code}", pair.url(f"/bytes/{MB}"))
    assert result.stdout == b"200", result.stderr
    assert hashlib.sha256(down.read_bytes()).hexdigest() == pattern_sha256(MB)
    result = curl(
        "--data-binary",
        f"@{down}",
        "-H",
        "Content-Type: application/octet-stream",
        pair.url("/sink"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"{")
    seen = json.loads(result.stdout)
    assert seen == {"body_length": MB, "body_sha256": pattern_sha256(MB)}


def test_1mb_chunked_upload_with_curl(pair, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(pattern_bytes(MB))
    result = curl(
        "-T", str(src), "-X", "POST", "-H", "Transfer-Encoding: chunked", pair.url("/echo")
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["chunked"] is True
    assert sum(seen["chunk_sizes"]) == MB
    assert seen["body_sha256"] == pattern_sha256(MB)


@pytest.mark.slow
def test_100mb_download_is_byte_exact(make_pair, tmp_path: Path) -> None:
    p = make_pair(BULK, BULK)
    n = 100 * MB
    out = tmp_path / "down"
    result = curl(
        "-o", str(out), "-w", "%{http_code} %{size_download}", p.url(f"/bytes/{n}"), timeout=240
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"200 %d" % n
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while piece := f.read(MB):
            h.update(piece)
    assert h.hexdigest() == pattern_sha256(n)


@pytest.mark.slow
def test_100mb_upload_is_byte_exact(make_pair) -> None:
    p = make_pair(BULK, BULK)
    n = 100 * MB
    resp = request(
        p.http_port,
        "POST",
        "/sink",
        body=pattern(n),
        timeout=240,
        headers={"Content-Length": str(n), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200
    assert resp.json() == {"body_length": n, "body_sha256": pattern_sha256(n)}


def test_100_concurrent_requests_all_succeed(pair) -> None:
    def one(i: int) -> tuple[int, bool]:
        if i % 2:
            resp = request(pair.http_port, "GET", f"/bytes/{1000 + i}", timeout=60)
            return resp.status, resp.body == pattern_bytes(1000 + i)
        body = pattern_bytes(2000 + i, start=i)
        resp = request(pair.http_port, "POST", "/sink", body=body, timeout=60)
        ok = resp.status == 200 and resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        return resp.status, ok

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    assert [status for status, _ in results] == [200] * 100
    assert all(ok for _, ok in results)


def test_pipelined_requests_are_answered_in_order(pair) -> None:
    m = marker()
    data = (
        b"GET /sleep?ms=300&id=%b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /echo?id=%b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /chunked?sizes=2,3 HTTP/1.1\r\nHost: h\r\n\r\n" % (m.encode(), m.encode())
    )
    first, second, third = raw_exchange(pair.http_port, data, count=3)
    assert (first.status, first.body) == (200, b"slept\n")
    assert second.status == 200
    assert second.json()["target"] == f"/echo?id={m}"
    assert second.json()["body_sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert third.status == 200 and third.chunk_sizes == [2, 3]


def test_keep_alive_connection_serves_many_requests(pair) -> None:
    with open_socket(pair.http_port) as sock:
        f = sock.makefile("rb")
        for i in range(20):
            sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: h\r\n\r\n" % (i + 1))
            resp = read_response(f)
            assert resp.status == 200 and resp.body == pattern_bytes(i + 1)


def test_response_status_codes_pass_through(pair) -> None:
    for code in (201, 204, 301, 304, 404, 418, 500, 503):
        resp = request(pair.http_port, "GET", f"/status/{code}")
        assert resp.status == code
        assert resp.header("Server") == "test-origin"
