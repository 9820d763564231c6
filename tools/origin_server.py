"""A standalone HTTP/1.1 test origin: raw asyncio sockets, keep-alive, its own parser. The
integration tests and the soak benchmark (which hash-checks every body against :func:`pattern`)
both use it.

Run it as ``python -m tools.origin_server --port N`` from the repository root (``--port 0`` picks
a free port; either way the first stdout line is ``listening on <port>``; ``--unix PATH``: a UNIX
socket, ``listening on unix:PATH``) or import :func:`serve`.

It does not use ptproxy's code: what it reports about a request (header names in raw case and
order, chunk sizes and extensions, whether the body was complete) is what really arrived on its
socket. Every request head is recorded (``GET /_log`` returns them as JSON, oldest first, with
``outcome``: ``reading``, ``complete``, ``incomplete`` (the connection ended mid-body) or ``bad``), so tests can assert what reached the origin.

Endpoints (any method unless said otherwise; the request body is always read first):

- ``/bytes/<n>``: ``n`` bytes of :func:`pattern` with Content-Length (``?chunked=1``: chunked in
  64 KiB chunks instead). HEAD gets the Content-Length and no body.
- ``/chunked?sizes=3,1000,5``: a chunked response with exactly those chunk sizes (pattern bytes);
  ``&trailers=1`` adds a trailer ``X-Checksum``; ``&ext=1`` puts extensions on every chunk line;
  ``&gap_ms=N`` pauses between chunks.
- ``/echo``: JSON ``{method, target, version, headers: [[name, value], ...], body_sha256,
  body_length, chunked, chunk_sizes, chunk_extensions, trailers}``.
- ``/sink``: reads and discards the body; JSON ``{body_length, body_sha256}``.
- ``/slow-read?rate=<bytes/s>``: like ``/sink`` but reads at most ``rate`` bytes per second
  (default 5 MB/s); ``&slow=<bytes>&fast=<bytes/s>``: only the first ``slow`` bytes at ``rate``,
  the rest at ``fast`` (0: unlimited).
- ``/status/<code>``: that status; a short text body unless the status forbids one.
- ``/reason``: 200 with the reason phrase ``Totally Fine By Me``.
- ``/hop``: a response carrying hop-by-hop fields (Connection: X-Foo, X-Foo, Keep-Alive, ...).
- ``/headers?h=name:value&h=...``: 200 with those extra fields, verbatim and in order.
- ``/nodate``: a response without ``Date`` (every other response carries a fixed old Date).
- ``/close-delimited?n=<bytes>``: no Content-Length, no chunked: the body ends when the origin
  closes the connection.
- ``/reset-mid-body?n=<bytes>``: declares Content-Length ``n``, sends half, then resets (RST).
- ``/reset-close-delimited?n=<bytes>``: a close-delimited head (as ``/close-delimited``), ``n``
  pattern bytes, then a reset (RST via SO_LINGER 0) instead of a clean close.
- ``/sleep?ms=N``: answers after ``N`` ms.
- ``/te-gzip``: a response with ``Transfer-Encoding: gzip, chunked`` (not acceptable to a proxy).
- ``/_log``: the recorded requests (not recorded itself).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["BLOCK", "OLD_DATE", "main", "pattern", "pattern_sha256", "serve"]

BLOCK = 65536
# Pattern bytes: block j is its 8-byte big-endian index followed by a fixed pseudo-random tail, so
# a dropped, duplicated or reordered block changes the hash (a period-256 pattern would not).
_TAIL = bytes((i * 2654435761 >> 13) & 0xFF for i in range(BLOCK - 8))
OLD_DATE = b"Mon, 01 Jan 2001 00:00:00 GMT"
_READ = 256 * 1024


def pattern(n: int, start: int = 0) -> Iterator[bytes]:
    """The deterministic body of ``/bytes/<n>``, as pieces of at most one block."""
    pos, end = start, start + n
    while pos < end:
        j, off = divmod(pos, BLOCK)
        block = struct.pack(">Q", j) + _TAIL
        piece = block[off : min(BLOCK, off + end - pos)]
        yield piece
        pos += len(piece)


def pattern_bytes(n: int, start: int = 0) -> bytes:
    return b"".join(pattern(n, start))


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for piece in pattern(n):
        h.update(piece)
    return h.hexdigest()


class BadRequest(Exception):
    pass


class Body:
    """What the origin saw of a request body."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.length = 0
        self.chunked = False
        self.chunk_sizes: list[int] = []
        self.chunk_extensions: list[str] = []
        self.trailers: list[list[str]] = []
        self.complete = False

    def summary(self) -> dict[str, Any]:
        return {
            "body_sha256": self.sha.hexdigest(),
            "body_length": self.length,
            "chunked": self.chunked,
            "chunk_sizes": self.chunk_sizes,
            "chunk_extensions": self.chunk_extensions,
            "trailers": self.trailers,
        }


class Origin:
    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []

    # -- connection loop ----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._simple(writer, 431, b"head too large\n", close=True)
                    return
                keep = await self._one(raw, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.is_closing():
                writer.close()

    async def _one(
        self, raw: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        lines = raw[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError:
            await self._simple(writer, 400, b"bad request line\n", close=True)
            return False
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                await self._simple(writer, 400, b"bad header line\n", close=True)
                return False
            headers.append((name, value.strip(b" \t")))
        url = urlsplit(target.decode("latin-1"))
        multi = parse_qs(url.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in multi.items()}
        path = url.path
        entry: dict[str, Any] | None = None
        if path != "/_log":
            entry = {
                "head": raw.decode("latin-1"),
                "method": method.decode("latin-1"),
                "target": target.decode("latin-1"),
                "complete": False,
                "outcome": "reading",
                "body_length": 0,
            }
            self.log.append(entry)
        lower = [(n.lower(), v) for n, v in headers]
        conn_tokens = {
            t.strip().lower() for n, v in lower if n == b"connection" for t in v.split(b",")
        }
        keep = (b"close" not in conn_tokens) and (
            version == b"HTTP/1.1" or b"keep-alive" in conn_tokens
        )
        rate = None
        if path == "/slow-read":
            rate = (
                float(query.get("rate", 5_000_000)),
                int(query.get("slow", 1 << 62)),
                float(query.get("fast", 0)) or None,
            )
        body = Body()
        try:
            await self._read_body(reader, lower, body, rate)
        except (asyncio.IncompleteReadError, ConnectionError):
            if entry is not None:
                entry["body_length"] = body.length
                entry["outcome"] = "incomplete"
            return False
        except BadRequest as exc:
            if entry is not None:
                entry["body_length"] = body.length
                entry["outcome"] = "bad"
            await self._simple(writer, 400, str(exc).encode() + b"\n", close=True)
            return False
        if entry is not None:
            entry["complete"] = True
            entry["outcome"] = "complete"
            entry["body_length"] = body.length
        return await self._respond(
            method, target, version, path, query, multi, headers, body, writer, keep
        )

    # -- request bodies -----------------------------------------------------------------------

    async def _read_body(
        self,
        reader: asyncio.StreamReader,
        lower: list[tuple[bytes, bytes]],
        body: Body,
        rate: tuple[float, int, float | None] | None,
    ) -> None:
        te = [v for n, v in lower if n == b"transfer-encoding"]
        cl = [v for n, v in lower if n == b"content-length"]
        started = time.monotonic()
        phase = {"t0": started, "b0": 0, "fast": False}

        async def take(n: int) -> None:
            # Read exactly n body bytes, hashing as they come; with `rate` = (bytes/s, for how
            # many bytes, then bytes/s or None for unlimited), never faster than that.
            while n > 0:
                limit = None
                if rate is not None:
                    slow_rate, slow_bytes, fast_rate = rate
                    if body.length >= slow_bytes and not phase["fast"]:
                        phase.update(t0=time.monotonic(), b0=body.length, fast=True)
                    limit = fast_rate if phase["fast"] else slow_rate
                if limit is not None:
                    ahead = (body.length - phase["b0"]) / limit - (time.monotonic() - phase["t0"])
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    step = min(n, _READ, max(1, int(limit / 50)))
                else:
                    step = min(n, _READ)
                data = await reader.read(step)
                if not data:
                    raise asyncio.IncompleteReadError(b"", n)
                body.sha.update(data)
                body.length += len(data)
                n -= len(data)

        if te:
            if te[-1].strip().lower() != b"chunked":
                raise BadRequest("unsupported transfer-encoding")
            body.chunked = True
            while True:
                line = (await reader.readuntil(b"\r\n"))[:-2]
                size_text, _, ext = line.partition(b";")
                try:
                    size = int(size_text.strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size line") from None
                if ext:
                    body.chunk_extensions.append(ext.decode("latin-1"))
                if size == 0:
                    break
                body.chunk_sizes.append(size)
                await take(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise BadRequest("chunk not followed by CRLF")
            while True:
                line = (await reader.readuntil(b"\r\n"))[:-2]
                if not line:
                    break
                name, _, value = line.partition(b":")
                body.trailers.append([name.decode("latin-1"), value.strip().decode("latin-1")])
        elif cl:
            try:
                await take(int(cl[0]))
            except ValueError:
                raise BadRequest("bad content-length") from None
        body.complete = True

    # -- responses ----------------------------------------------------------------------------

    async def _simple(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        *,
        close: bool = False,
        reason: bytes = b"",
        extra: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"text/plain",
        head_only: bool = False,
        date: bool = True,
    ) -> None:
        reason = reason or _REASONS.get(status, b"Whatever")
        lines = [b"HTTP/1.1 %d %b" % (status, reason), b"Server: test-origin"]
        if date:
            lines.append(b"Date: " + OLD_DATE)
        if status >= 200 and status not in (204, 304):
            lines += [b"Content-Type: " + content_type, b"Content-Length: %d" % len(payload)]
        for name, value in extra or []:
            lines.append(name + b": " + value)
        if close:
            lines.append(b"Connection: close")
        out = b"\r\n".join(lines) + b"\r\n\r\n"
        if not head_only and status >= 200 and status not in (204, 304):
            out += payload
        writer.write(out)
        await writer.drain()

    async def _respond(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        path: str,
        query: dict[str, str],
        multi: dict[str, list[str]],
        headers: list[tuple[bytes, bytes]],
        body: Body,
        writer: asyncio.StreamWriter,
        keep: bool,
    ) -> bool:
        head_only = method == b"HEAD"
        close = not keep
        if path == "/echo":
            doc = {
                "method": method.decode("latin-1"),
                "target": target.decode("latin-1"),
                "version": version.decode("latin-1"),
                "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
                **body.summary(),
            }
            await self._simple(
                writer,
                200,
                _json(doc),
                content_type=b"application/json",
                close=close,
                head_only=head_only,
            )
        elif path in ("/sink", "/slow-read"):
            doc = {"body_length": body.length, "body_sha256": body.sha.hexdigest()}
            await self._simple(
                writer,
                200,
                _json(doc),
                content_type=b"application/json",
                close=close,
                head_only=head_only,
            )
        elif path.startswith("/bytes/"):
            n = int(path[len("/bytes/") :])
            if query.get("chunked") == "1":
                await self._chunked(
                    writer,
                    [BLOCK] * (n // BLOCK) + ([n % BLOCK] if n % BLOCK else []),
                    close=close,
                    head_only=head_only,
                )
            else:
                head = (
                    b"HTTP/1.1 200 OK\r\nServer: test-origin\r\nDate: %b\r\n"
                    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n%b\r\n"
                    % (OLD_DATE, n, b"Connection: close\r\n" if close else b"")
                )
                writer.write(head)
                if not head_only:
                    await self._write_pattern(writer, n)
                await writer.drain()
        elif path == "/chunked":
            sizes = [int(s) for s in query.get("sizes", "").split(",") if s]
            await self._chunked(
                writer,
                sizes,
                close=close,
                head_only=head_only,
                trailers=query.get("trailers") == "1",
                ext=query.get("ext") == "1",
                gap=float(query.get("gap_ms", 0)) / 1000.0,
            )
        elif path.startswith("/status/"):
            code = int(path[len("/status/") :])
            await self._simple(
                writer, code, b"status %d\n" % code, close=close, head_only=head_only
            )
        elif path == "/reason":
            await self._simple(
                writer,
                200,
                b"reason\n",
                reason=b"Totally Fine By Me",
                close=close,
                head_only=head_only,
            )
        elif path == "/hop":
            extra = [
                (b"Connection", b"X-Foo, keep-alive"),
                (b"X-Foo", b"must-not-pass"),
                (b"Keep-Alive", b"timeout=5, max=100"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"Proxy-Authenticate", b'Basic realm="x"'),
                (b"Upgrade", b"h2c"),
                (b"Trailer", b"X-Nothing"),
                (b"TE", b"trailers"),
                (b"X-Kept", b"yes"),
            ]
            await self._simple(writer, 200, b"hop\n", extra=extra, close=close, head_only=head_only)
        elif path == "/headers":
            extra = []
            for item in multi.get("h", []):
                name, _, value = item.partition(":")
                extra.append((name.encode("latin-1"), value.encode("latin-1")))
            await self._simple(
                writer, 200, b"headers\n", extra=extra, close=close, head_only=head_only
            )
        elif path == "/nodate":
            await self._simple(
                writer, 200, b"no date\n", date=False, close=close, head_only=head_only
            )
        elif path == "/close-delimited":
            n = int(query.get("n", 30000))
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: test-origin\r\nDate: %b\r\n"
                b"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n" % OLD_DATE
            )
            if not head_only:
                sent = 0
                for piece in pattern(n):
                    writer.write(piece)
                    sent += len(piece)
                    await writer.drain()
                    await asyncio.sleep(0.005)
            await writer.drain()
            writer.close()
            return False
        elif path == "/reset-mid-body":
            n = int(query.get("n", 1_000_000))
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: test-origin\r\nDate: %b\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % (OLD_DATE, n)
            )
            await self._write_pattern(writer, n // 2)
            await writer.drain()
            await asyncio.sleep(0.3)  # let the peer read the half before the RST discards it
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        elif path == "/reset-close-delimited":
            n = int(query.get("n", 20000))
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: test-origin\r\nDate: %b\r\n"
                b"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n" % OLD_DATE
            )
            await self._write_pattern(writer, n)
            await writer.drain()
            await asyncio.sleep(0.3)  # let the peer read the bytes before the RST discards them
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        elif path == "/sleep":
            await asyncio.sleep(float(query.get("ms", 1000)) / 1000.0)
            await self._simple(writer, 200, b"slept\n", close=close, head_only=head_only)
        elif path == "/te-gzip":
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: test-origin\r\nDate: %b\r\n"
                b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % OLD_DATE
            )
            await writer.drain()
        elif path == "/_log":
            await self._simple(
                writer,
                200,
                _json(self.log),
                content_type=b"application/json",
                close=close,
                head_only=head_only,
            )
        else:
            await self._simple(writer, 404, b"no such endpoint\n", close=close, head_only=head_only)
        return keep

    async def _write_pattern(self, writer: asyncio.StreamWriter, n: int) -> None:
        group: list[bytes] = []
        for piece in pattern(n):
            group.append(piece)
            if len(group) == 4:
                writer.write(b"".join(group))
                group.clear()
                await writer.drain()
        if group:
            writer.write(b"".join(group))

    async def _chunked(
        self,
        writer: asyncio.StreamWriter,
        sizes: list[int],
        *,
        close: bool,
        head_only: bool,
        trailers: bool = False,
        ext: bool = False,
        gap: float = 0.0,
    ) -> None:
        head = [
            b"HTTP/1.1 200 OK",
            b"Server: test-origin",
            b"Date: " + OLD_DATE,
            b"Content-Type: application/octet-stream",
            b"Transfer-Encoding: chunked",
        ]
        if trailers:
            head.append(b"Trailer: X-Checksum")
        if close:
            head.append(b"Connection: close")
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        if head_only:
            await writer.drain()
            return
        h = hashlib.sha256()
        pos = 0
        for i, size in enumerate(sizes):
            if size <= 0:
                continue
            data = pattern_bytes(size, pos)
            pos += size
            h.update(data)
            line = b'%x;n=%d;note="x"' % (size, i) if ext else b"%x" % size
            writer.write(line + b"\r\n" + data + b"\r\n")
            await writer.drain()
            if gap:
                await asyncio.sleep(gap)
        last = b"0\r\n"
        if trailers:
            last += b"X-Checksum: " + h.hexdigest().encode() + b"\r\n"
        writer.write(last + b"\r\n")
        await writer.drain()


_REASONS = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    404: b"Not Found",
    418: b"I'm a teapot",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode() + b"\n"


async def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[asyncio.AbstractServer, Origin]:
    origin = Origin()
    server = await asyncio.start_server(origin.handle, host, port, limit=1 << 20, backlog=1024)
    return server, origin


async def serve_unix(path: str) -> tuple[asyncio.AbstractServer, Origin]:
    """The origin on a UNIX socket at ``path`` (replaced if it exists)."""
    origin = Origin()
    server = await asyncio.start_unix_server(origin.handle, path, limit=1 << 20, backlog=1024)
    return server, origin


async def _main(host: str, port: int, unix: str | None) -> None:
    if unix is not None:
        server, _ = await serve_unix(unix)
        print(f"listening on unix:{unix}", flush=True)
    else:
        server, _ = await serve(host, port)
        print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.origin_server", description="ptproxy test origin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", metavar="PATH", help="listen on a UNIX socket at PATH instead")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(_main(args.host, args.port, args.unix))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
