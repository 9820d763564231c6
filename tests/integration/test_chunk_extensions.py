"""Chunk extensions with whitespace and quoted values (RFC 9112 7.1.1) through a real pair.

``chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`` with
``chunk-ext-val = token / quoted-string``: such a request is proxied (200), and the origin gets the
same chunks with the extensions dropped. A line that does not fit the grammar is still refused."""

from __future__ import annotations

import hashlib
import uuid

from tests.support.h1client import open_socket, raw_exchange, read_response
from tools.origin_server import pattern_bytes

EXTENSIONS = [
    b" ;name=value",
    b"; name = value",
    b'\t;\tq\t=\t"quoted value; with \\"escapes\\""',
    b" ; a ; b = c ; d",
    b"",
]


def _chunked_request(target: bytes, sizes: list[int], body: bytes) -> bytes:
    wire = [b"POST %b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" % target]
    pos = 0
    for i, size in enumerate(sizes):
        ext = EXTENSIONS[i % len(EXTENSIONS)]
        wire.append(b"%x%b\r\n%b\r\n" % (size, ext, body[pos : pos + size]))
        pos += size
    wire.append(b'0 ; last = "yes"\r\n\r\n')
    return b"".join(wire)


def test_extensions_with_whitespace_are_accepted_and_dropped(pair) -> None:
    sizes = [3, 1000, 5, 70_000, 1, 17]
    body = pattern_bytes(sum(sizes))
    (resp,) = raw_exchange(pair.http_port, _chunked_request(b"/echo", sizes, body))
    assert resp.status == 200
    seen = resp.json()
    assert seen["chunked"] is True
    assert seen["chunk_sizes"] == sizes
    assert seen["chunk_extensions"] == []
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_extensions_split_across_segments_are_accepted(pair) -> None:
    # Size lines cut mid-extension: the line is held back until its LF arrives.
    sizes = [10, 2000, 7]
    body = pattern_bytes(sum(sizes))
    wire = _chunked_request(b"/echo", sizes, body)
    with open_socket(pair.http_port) as sock:
        for i in range(0, len(wire), 5):
            sock.sendall(wire[i : i + 5])
        resp = read_response(sock.makefile("rb"))
    assert resp.status == 200
    seen = resp.json()
    assert seen["chunk_sizes"] == sizes
    assert seen["chunk_extensions"] == []
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_garbage_extension_is_refused_and_nothing_reaches_the_origin(pair, origin) -> None:
    marker = uuid.uuid4().hex
    wire = (
        b"POST /echo?%b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5 ; a = "unterminated\r\nhello\r\n0\r\n\r\n' % marker.encode()
    )
    (resp,) = raw_exchange(pair.http_port, wire)
    assert resp.status == 400
    assert origin.entries(marker) == []
