"""A close-delimited origin response is whole only when the origin closes cleanly (FIN).

An origin that resets its connection (RST) mid-body has not ended the body: the server end must
reset the HTTP/3 stream, and the client end must cut its HTTP/1.1 connection without the last
chunk, so the client sees the truncation instead of a complete-looking chunked message.
"""

from __future__ import annotations

from tests.support.h1client import open_socket
from tools.origin_server import pattern_bytes

LAST_CHUNK = b"\r\n0\r\n\r\n"


def _exchange(port: int, target: bytes, *, close: bool) -> tuple[bytes, bool]:
    """One HTTP/1.1 GET on a raw socket: what arrived, and whether the connection then closed.

    Without ``close`` the request asks for keep-alive, so only a cut ends the connection."""
    extra = b"Connection: close\r\n" if close else b""
    out = []
    with open_socket(port, timeout=10) as sock:
        sock.sendall(b"GET %b HTTP/1.1\r\nHost: h\r\n%b\r\n" % (target, extra))
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return b"".join(out), True
            except TimeoutError:
                return b"".join(out), False
            if not data:
                return b"".join(out), True
            out.append(data)


def _split(data: bytes) -> tuple[bytes, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:500]
    return head, body


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body and whether it reached its last chunk."""
    out = []
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out), False
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(out), body[eol:] == b"\r\n\r\n"
        start = eol + 2
        if len(body) < start + size + 2:
            out.append(body[start : start + size])
            return b"".join(out), False
        out.append(body[start : start + size])
        pos = start + size + 2


def test_origin_reset_mid_close_delimited_body_reaches_the_client_as_truncation(pair) -> None:
    n = 20_000
    data, closed = _exchange(pair.http_port, b"/reset-close-delimited?n=%d&trunc-rst" % n, close=False)
    head, body = _split(data)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"\r\ntransfer-encoding: chunked" in head.lower(), head
    assert not body.endswith(LAST_CHUNK), body[-64:]
    payload, complete = _dechunk(body)
    assert not complete
    assert closed, "the client end kept the connection open after a truncated body"
    # Whatever arrived is a true prefix of what the origin sent, never padding or garbage.
    assert pattern_bytes(n).startswith(payload)
    assert pair.wait_server_log("resetting the stream", timeout=5), pair.logs()


def test_clean_close_ends_a_close_delimited_body_with_the_last_chunk(pair) -> None:
    n = 20_000
    data, closed = _exchange(pair.http_port, b"/close-delimited?n=%d&trunc-fin" % n, close=True)
    head, body = _split(data)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"\r\ntransfer-encoding: chunked" in head.lower(), head
    assert body.endswith(LAST_CHUNK), body[-64:]
    payload, complete = _dechunk(body)
    assert complete and payload == pattern_bytes(n)
    assert closed
