"""Smuggling and malformed messages end to end, through real processes.

Request vectors (the same list the parser's unit tests use, plus smuggling payloads carrying a
second request) go as raw bytes to the client end: the answer is a 400-class response from
``ptproxy client`` with the connection closed, and the origin's request log shows nothing new.

Response vectors come from a raw-socket origin this module controls (``/v/<index>`` answers with
vector ``index`` verbatim): the answer is ``502`` from ``ptproxy server`` and none of the
vector's bytes reach the client.

One pair per module (and one for the raw origin), not one per vector.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.h1client import open_socket, read_until_close, request
from tests.support.http1_vectors import REQUEST_VECTORS as _REQ
from tests.support.http1_vectors import RESPONSE_VECTORS as _RESP
from tests.support.pair import Pair, build_pair, defects

SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST = b"POST /front HTTP/1.1\r\nHost: example.com\r\n"

REQUEST_VECTORS = [pytest.param(p.values[0], p.values[1].status, id=p.id) for p in _REQ] + [
    # Classic smuggling payloads: a second request hidden in what one parser reads as body.
    pytest.param(POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-cl-te"),
    pytest.param(POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + SMUGGLE + b"\r\n0\r\n\r\n",
                 400, id="smuggle-te-cl"),
    pytest.param(POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-te-te"),
    pytest.param(POST + b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-te-space-before-colon"),
    pytest.param(POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-te-vtab"),
    pytest.param(POST + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLE) + SMUGGLE,
                 400, id="smuggle-cl-cl"),
    pytest.param(POST + b"X: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-bare-lf-header"),
    pytest.param(POST + b"Transfer-Encoding: chunked\r\n\r\n1;\x00\r\nx\r\n0\r\n\r\n" + SMUGGLE,
                 400, id="smuggle-nul-chunk-ext"),
    pytest.param(POST + b"Transfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n",
                 400, id="chunk-size-2^64-wrap"),
    pytest.param(b"GET /a HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400, id="request-line-extra-token"),
    pytest.param(b"\x00GET /a HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="request-line-leading-nul"),
]

RESPONSE_VECTORS = [pytest.param(p.values[0], id=p.id) for p in _RESP] + [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
                 id="smuggle-cl-te"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\nab", id="cl-conflicting"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", id="cr-in-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", id="chunk-size-negative"),
]


# -- fixtures -----------------------------------------------------------------------------------


class RawOrigin:
    """A socket server answering ``GET /v/<i>`` with ``vectors[i]`` verbatim, then closing."""

    def __init__(self, vectors: list[bytes]) -> None:
        self.vectors = vectors
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                try:
                    piece = conn.recv(65536)
                except OSError:
                    return
                if not piece:
                    return
                data += piece
            self.requests.append(data)
            target = data.split(b" ", 2)[1]
            if target.startswith(b"/v/"):
                conn.sendall(self.vectors[int(target[3:])])
                time.sleep(0.2)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _module_pair(tmp: Path, pki: Any, origin_port: int) -> Pair:
    p = build_pair(tmp, pki, origin_port)
    p.start_server()
    p.start_client()
    return p


@pytest.fixture(scope="module")
def spair(tmp_path_factory: pytest.TempPathFactory, pki, origin) -> Iterator[Pair]:
    p = _module_pair(tmp_path_factory.mktemp("smuggling-pair"), pki, origin.port)
    yield p
    problems = p.teardown()
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture(scope="module")
def raw_origin() -> Iterator[RawOrigin]:
    o = RawOrigin([p.values[0] for p in RESPONSE_VECTORS])
    yield o
    o.close()


@pytest.fixture(scope="module")
def rpair(tmp_path_factory: pytest.TempPathFactory, pki, raw_origin: RawOrigin) -> Iterator[Pair]:
    p = _module_pair(tmp_path_factory.mktemp("raw-origin-pair"), pki, raw_origin.port)
    yield p
    problems = p.teardown()
    if problems:
        pytest.fail("\n\n".join(problems))


def _check_logs(p: Pair, before: tuple[int, int]) -> None:
    new = p.client_log()[before[0]:] + p.server_log()[before[1]:]
    assert not defects(new), p.logs()
    assert p.alive(), p.logs()


# -- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "status"), REQUEST_VECTORS)
def test_bad_request_is_refused_and_nothing_reaches_the_origin(spair: Pair, origin, data: bytes, status: int) -> None:
    before_logs = (len(spair.client_log()), len(spair.server_log()))
    before = len(origin.log())
    with open_socket(spair.http_port, timeout=10) as sock:
        sock.sendall(data)
        sock.settimeout(10.0)
        got = read_until_close(sock)  # returns only once the client end closed the connection
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:300]
    head = got.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nServer: ptproxy client" in head
    assert b"\r\nConnection: close" in head
    assert got.count(b"HTTP/1.1 ") == 1, got  # one answer: nothing smuggled got its own
    time.sleep(0.05)
    assert origin.log()[before:] == [], "forwarded to the origin"
    _check_logs(spair, before_logs)


def test_pair_still_serves_after_the_vectors(spair: Pair) -> None:
    assert request(spair.http_port, "GET", "/bytes/100").status == 200


# -- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(RESPONSE_VECTORS)), ids=[p.id for p in RESPONSE_VECTORS])
def test_bad_response_is_502_and_nothing_of_it_reaches_the_client(rpair: Pair, raw_origin: RawOrigin, index: int) -> None:
    before_logs = (len(rpair.client_log()), len(rpair.server_log()))
    vector = raw_origin.vectors[index]
    with open_socket(rpair.http_port, timeout=15) as sock:
        sock.sendall(b"GET /v/%d HTTP/1.1\r\nHost: h\r\n\r\n" % index)
        sock.settimeout(15)
        f = sock.makefile("rb")
        status_line = f.readline()
        head = [status_line]
        while True:
            line = f.readline()
            head.append(line)
            if line in (b"\r\n", b""):
                break
        raw_head = b"".join(head)
        length = int(next((h.split(b":")[1] for h in head if h.lower().startswith(b"content-length:")), b"0"))
        body = f.read(length)
    assert status_line.startswith(b"HTTP/1.1 502 "), raw_head + body
    assert b"\r\nServer: ptproxy server\r\n" in raw_head
    assert b"origin" in body
    # Nothing of the bad response is passed on: no header of it, none of its body.
    for piece in (b"X-A", b"X: a", b"HELLO", b"Switching", b"ab\r", b"\r\n0\r\n"):
        if piece in vector:
            assert piece not in raw_head + body
    _check_logs(rpair, before_logs)


def test_raw_origin_pair_still_serves(rpair: Pair) -> None:
    resp = request(rpair.http_port, "GET", "/fine")
    assert resp.status == 200 and resp.body == b"ok"
