"""Real HTTP/1.1 clients for the integration tests: http.client, raw sockets, curl.

The raw-socket reader parses responses itself so tests can see exactly what came over the wire:
header names in their raw case and order, chunk sizes and extensions, trailers, and whether a
message ended early (``complete=False``) instead of being taken for a whole one.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = [
    "RawResponse",
    "Response",
    "curl",
    "header",
    "header_all",
    "open_socket",
    "raw_exchange",
    "read_response",
    "request",
]


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


def header(headers: Iterable[tuple[Any, Any]], name: Any) -> Any:
    """Last value of ``name`` (case-insensitive), or None."""
    found = None
    for n, v in headers:
        if n.lower() == name.lower():
            found = v
    return found


def header_all(headers: Iterable[tuple[Any, Any]], name: Any) -> list[Any]:
    return [v for n, v in headers if n.lower() == name.lower()]


def request(
    port: int,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
    auto_host: bool = True,
) -> Response:
    """One request on a fresh http.client connection; the whole body is read.

    http.client adds ``Host`` unless ``headers`` has one or ``auto_host`` is False."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        skip_host = not auto_host or any(n.lower() == "host" for n, _ in items)
        conn.putrequest(method, target, skip_host=skip_host, skip_accept_encoding=True)
        if isinstance(body, bytes) and not any(
            n.lower() in ("content-length", "transfer-encoding") for n, _ in items
        ):
            items.append(("Content-Length", str(len(body))))
        for name, value in items:
            conn.putheader(name, value)
        conn.endheaders()
        if isinstance(body, bytes):
            conn.send(body)
        elif body is not None:
            for piece in body:
                conn.send(piece)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.getheaders(), data)
    finally:
        conn.close()


@dataclass
class RawResponse:
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    framing: str = "none"  # none | length | chunked | close
    chunk_sizes: list[int] = field(default_factory=list)
    chunk_extensions: list[bytes] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    complete: bool = True

    def header(self, name: bytes) -> bytes | None:
        return header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def open_socket(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _readline(f: BinaryIO) -> bytes:
    line = f.readline(1 << 20)
    return line


def read_response(f: BinaryIO, method: bytes = b"GET") -> RawResponse:
    """Parse one response from a buffered socket file. EOFError if nothing arrives at all."""
    line = _readline(f)
    if not line:
        raise EOFError("connection closed before a response")
    version, status, *rest = line.rstrip(b"\r\n").split(b" ", 2)
    resp = RawResponse(version, int(status), rest[0] if rest else b"", [])
    while True:
        line = _readline(f)
        if not line:
            resp.complete = False
            return resp
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.rstrip(b"\r\n").partition(b":")
        resp.headers.append((name, value.strip(b" \t")))
    if 100 <= resp.status < 200 or resp.status in (204, 304) or method == b"HEAD":
        return resp
    te = resp.header(b"Transfer-Encoding")
    cl = resp.header(b"Content-Length")
    if te is not None:
        resp.framing = "chunked"
        parts = []
        while True:
            line = _readline(f)
            if not line.endswith(b"\n"):
                resp.complete = False
                break
            size_text, _, ext = line.rstrip(b"\r\n").partition(b";")
            size = int(size_text, 16)
            if ext:
                resp.chunk_extensions.append(ext)
            if size == 0:
                while True:
                    line = _readline(f)
                    if not line.endswith(b"\n"):
                        resp.complete = False
                        break
                    if line in (b"\r\n", b"\n"):
                        break
                    n, _, v = line.rstrip(b"\r\n").partition(b":")
                    resp.trailers.append((n, v.strip()))
                break
            data = f.read(size)
            parts.append(data)
            if len(data) < size or f.read(2) != b"\r\n":
                resp.complete = False
                break
            resp.chunk_sizes.append(size)
        resp.body = b"".join(parts)
    elif cl is not None:
        resp.framing = "length"
        n = int(cl)
        resp.body = f.read(n)
        resp.complete = len(resp.body) == n
    else:
        resp.framing = "close"
        resp.body = f.read()
    return resp


def raw_exchange(
    port: int,
    data: bytes,
    *,
    count: int = 1,
    methods: list[bytes] | None = None,
    timeout: float = 30.0,
    shut_write: bool = False,
) -> list[RawResponse]:
    """Send ``data`` as is on a new connection and read up to ``count`` responses."""
    with open_socket(port, timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        out: list[RawResponse] = []
        for i in range(count):
            try:
                out.append(
                    read_response(f, (methods or [])[i] if methods and i < len(methods) else b"GET")
                )
            except (EOFError, ConnectionResetError):
                break
        return out


def read_until_close(sock: socket.socket) -> bytes:
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out.append(data)
    return b"".join(out)


def curl(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    """Run curl quietly (errors still shown); the caller checks returncode/stdout/stderr."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(int(timeout)), *args],
        capture_output=True,
        timeout=timeout + 15,
        check=False,
    )
