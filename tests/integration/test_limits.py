"""Limits and timeouts end to end: each `[limits]` field has a defined answer.

One pair for the module with small limits (starting a pair costs seconds); the origin-connect
test needs its own pair (a blackholed origin).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.h1client import open_socket, read_response, request
from tests.support.pair import Pair, build_pair, defects

LIMITS = {
    "max_request_line": 1024,
    "max_header_bytes": 4096,
    "max_header_count": 20,
    "request_head_timeout": 1000,
    "keepalive_idle_timeout": 2000,
    "stream_queue_timeout": 1000,
    "origin_response_timeout": 1500,
}
STREAMS = {"max_concurrent_http_streams": 2}


def marker() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def lpair(tmp_path_factory: pytest.TempPathFactory, pki, origin) -> Iterator[Pair]:
    p = build_pair(
        tmp_path_factory.mktemp("limits-pair"),
        pki,
        origin.port,
        {"limits": LIMITS, "transport": STREAMS},
        {"limits": LIMITS, "transport": STREAMS},
    )
    p.start_server()
    p.start_client()
    yield p
    problems = p.teardown()
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture()
def lp(lpair: Pair) -> Iterator[Pair]:
    before = (len(lpair.client_log()), len(lpair.server_log()))
    yield lpair
    new = lpair.client_log()[before[0]:] + lpair.server_log()[before[1]:]
    assert not defects(new), lpair.logs()
    assert lpair.alive(), lpair.logs()


def recv_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything until EOF (or reset); returns (data, seconds until EOF)."""
    sock.settimeout(timeout)
    started = time.monotonic()
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        out.append(data)
    return b"".join(out), time.monotonic() - started


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def assert_refused(lp: Pair, data: bytes, status: int, mark: str) -> None:
    with open_socket(lp.http_port, timeout=10) as sock:
        sock.sendall(data)
        got, _ = recv_until_close(sock, 10)
    assert status_of(got) == status, got[:300]
    assert b"\r\nServer: ptproxy client\r\n" in got
    assert b"\r\nConnection: close\r\n" in got


# -- size limits --------------------------------------------------------------------------------


def test_request_line_too_long_is_414(lp, origin) -> None:
    m = marker()
    target = f"/echo?{m}&" + "a" * 1100
    assert_refused(lp, f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode(), 414, m)
    assert origin.entries(m) == []


def test_request_line_at_the_limit_passes(lp, origin) -> None:
    m = marker()
    target = f"/echo?{m}&"
    target += "a" * (1024 - len(f"GET {target} HTTP/1.1"))
    assert len(f"GET {target} HTTP/1.1") == 1024
    resp = request(lp.http_port, "GET", target)
    assert resp.status == 200


def test_header_block_too_large_is_431(lp, origin) -> None:
    m = marker()
    big = "".join(f"X-Big-{i}: {'v' * 900}\r\n" for i in range(5))
    assert_refused(lp, f"GET /echo?{m} HTTP/1.1\r\nHost: h\r\n{big}\r\n".encode(), 431, m)
    assert origin.entries(m) == []


def test_one_huge_header_value_is_431(lp, origin) -> None:
    m = marker()
    data = f"GET /echo?{m} HTTP/1.1\r\nHost: h\r\nX-Huge: {'v' * 10000}\r\n\r\n".encode()
    assert_refused(lp, data, 431, m)
    assert origin.entries(m) == []


def test_too_many_headers_is_431(lp, origin) -> None:
    m = marker()
    many = "".join(f"X-H{i}: v\r\n" for i in range(25))
    assert_refused(lp, f"GET /echo?{m} HTTP/1.1\r\nHost: h\r\n{many}\r\n".encode(), 431, m)
    assert origin.entries(m) == []


def test_header_count_at_the_limit_passes(lp) -> None:
    headers = [(f"X-H{i}", "v") for i in range(19)]  # + Host = 20
    resp = request(lp.http_port, "GET", "/echo", headers=headers)
    assert resp.status == 200


# -- slowloris and idle connections -------------------------------------------------------------


def test_partial_head_gets_408_after_request_head_timeout(lp, origin) -> None:
    m = marker()
    with open_socket(lp.http_port, timeout=10) as sock:
        sock.sendall(f"GET /echo?{m} HTTP/1.1\r\nHo".encode())
        got, took = recv_until_close(sock, 10)
    assert status_of(got) == 408, got
    assert b"\r\nServer: ptproxy client\r\n" in got
    assert 0.8 <= took <= 3.0, took
    assert origin.entries(m) == []


def test_drip_fed_head_is_not_kept_alive_by_each_byte(lp, origin) -> None:
    """Slowloris proper: a byte every 200 ms never completes the head; the timer runs from the
    first byte, so the answer comes after request_head_timeout, not after the last byte."""
    m = marker()
    data = f"GET /echo?{m} HTTP/1.1\r\nHost: h\r\nX-Slow: " + "a" * 100
    result: dict[str, object] = {}
    with open_socket(lp.http_port, timeout=10) as sock:
        started = time.monotonic()

        def drip() -> None:
            try:
                for ch in data.encode():
                    sock.send(bytes([ch]))
                    time.sleep(0.2)
            except OSError:
                result["stopped"] = time.monotonic() - started

        t = threading.Thread(target=drip, daemon=True)
        t.start()
        got, _ = recv_until_close(sock, 10)
        took = time.monotonic() - started
    assert status_of(got) == 408, got
    assert 0.8 <= took <= 3.0, took
    assert origin.entries(m) == []


def test_idle_connection_without_bytes_is_closed_quietly(lp) -> None:
    with open_socket(lp.http_port, timeout=10) as sock:
        got, took = recv_until_close(sock, 10)
    assert got == b""  # no 408 for a connection that never started a request
    assert 1.7 <= took <= 4.5, took


def test_idle_keepalive_connection_is_closed_after_keepalive_idle_timeout(lp) -> None:
    with open_socket(lp.http_port, timeout=10) as sock:
        sock.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: h\r\n\r\n")
        f = sock.makefile("rb")
        resp = read_response(f)
        assert resp.status == 200 and resp.complete
        started = time.monotonic()
        sock.settimeout(10)
        assert f.read() == b""  # closed, nothing more (no 408)
        took = time.monotonic() - started
    assert 1.7 <= took <= 4.5, took


def test_slow_but_complete_heads_are_served(lp) -> None:
    """Each request head of a keep-alive connection gets its own request_head_timeout."""
    with open_socket(lp.http_port, timeout=10) as sock:
        f = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /bytes/5 HTTP/1.1\r\n")
            time.sleep(0.6)
            sock.sendall(b"Host: h\r\n\r\n")
            resp = read_response(f)
            assert resp.status == 200 and resp.body and resp.complete


# -- origin timeouts ----------------------------------------------------------------------------


def test_origin_response_head_timeout_is_504(lp, origin) -> None:
    m = marker()
    started = time.monotonic()
    resp = request(lp.http_port, "GET", f"/sleep?ms=4000&{m}")
    took = time.monotonic() - started
    assert resp.status == 504
    assert resp.header("Server") == "ptproxy server"
    assert 1.3 <= took <= 3.5, took
    # The pair still works afterwards.
    assert request(lp.http_port, "GET", "/bytes/10").status == 200


def test_origin_connect_timeout_is_502_naming_the_origin(make_pair) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.2)
        p = make_pair(server_overrides={"limits": {"origin_connect_timeout": 1000}}, origin_port=port)
        started = time.monotonic()
        resp = request(p.http_port, "GET", "/bytes/10", timeout=20)
        took = time.monotonic() - started
        assert resp.status == 502, resp
        assert resp.header("Server") == "ptproxy server"
        assert f"127.0.0.1:{port}" in resp.body.decode()
        assert 0.8 <= took <= 4.0, took
    finally:
        for s in fillers:
            s.close()
        lsock.close()


# -- stream limit -------------------------------------------------------------------------------


def _sleepers(lp: Pair, ms: list[int]) -> list[tuple[int, float]]:
    def one(delay: int) -> tuple[int, float]:
        started = time.monotonic()
        resp = request(lp.http_port, "GET", f"/sleep?ms={delay}&{marker()}", timeout=20)
        return resp.status, time.monotonic() - started

    with ThreadPoolExecutor(len(ms)) as pool:
        futures = []
        for d in ms:
            futures.append(pool.submit(one, d))
            time.sleep(0.1)  # keep the order: the last one is the one beyond the limit
        return [f.result() for f in futures]


def test_request_beyond_stream_limit_waits_for_a_slot(lp) -> None:
    results = _sleepers(lp, [700, 700, 200])
    assert [s for s, _ in results] == [200, 200, 200], results
    # The third waited for a slot (~0.6 s) before its own 0.2 s.
    assert results[2][1] >= 0.7, results


def test_request_beyond_stream_limit_gets_503_after_stream_queue_timeout(lp) -> None:
    results = _sleepers(lp, [1400, 1400, 100])
    assert [s for s, _ in results[:2]] == [200, 200], results
    assert results[2][0] == 503, results
    assert 0.9 <= results[2][1] <= 1.4, results
    # Slots come back.
    assert request(lp.http_port, "GET", "/bytes/10").status == 200


def test_stream_queue_503_names_the_limit(lp) -> None:
    def slow() -> int:
        return request(lp.http_port, "GET", f"/sleep?ms=1400&{marker()}", timeout=20).status

    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(slow) for _ in range(2)]
        time.sleep(0.2)
        resp = request(lp.http_port, "GET", "/bytes/1")
        assert [f.result() for f in futs] == [200, 200]
    assert resp.status == 503
    assert resp.header("Server") == "ptproxy client"
    assert "streams busy" in resp.body.decode()

