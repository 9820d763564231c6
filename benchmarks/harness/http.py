"""The one HTTP/1.1 load client: asyncio, one keep-alive connection per :class:`Conn`.

It frames requests itself (Content-Length or chunked bodies, any chunk sizes) and reads
responses with Content-Length, chunked (trailers skipped) or close-delimited bodies. It times
each exchange with ``time.monotonic()`` (the same clock in every network namespace) and can hash
the body (``digest``) or keep it (``keep``) for checks. Anything that is not a whole response
raises :class:`Failure` with a ``kind``: ``connect``, ``closed-before-response``,
``truncated-head``, ``truncated`` (the body ended early) or ``corrupted`` (bad chunk framing).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

READ = 256 * 1024


class Failure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the last value wins
    length: int  # body bytes received
    keep_alive: bool
    t0: float  # request started (before a connect, if one was needed)
    t_sent: float  # connection ready, request about to be written
    t_head: float  # response head read
    t1: float  # response complete
    reconnected: bool = False
    sha256: str | None = None  # with digest=True
    body: bytes | None = field(default=None, repr=False)  # with keep=True

    @property
    def ms(self) -> float:
        return (self.t1 - self.t0) * 1000


class Conn:
    """A keep-alive connection to ``host:port``, (re)opened by :meth:`request` when needed."""

    def __init__(self, host: str, port: int, *, host_header: str = "bench", user_agent: str = "ptproxy-bench") -> None:
        self.host, self.port = host, port
        self.head_fields = f"Host: {host_header}\r\nUser-Agent: {user_agent}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0  # reopened after the peer closed an idle connection

    def alive(self) -> bool:
        return (self.writer is not None and self.reader is not None
                and not self.writer.is_closing() and not self.reader.at_eof())

    async def connect(self) -> None:
        self.close()
        try:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        except OSError as exc:
            raise Failure("connect", str(exc)) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | int | None = None,
        *,
        chunks: list[int] | None = None,
        extra: str = "",
        digest: bool = False,
        keep: bool = False,
    ) -> Response:
        """One exchange. ``body``: bytes, or a length of filler bytes; sent chunked in pieces of
        ``chunks`` sizes if given, else with Content-Length. ``extra``: header lines ending in
        CRLF."""
        t0 = time.monotonic()
        reconnected = False
        if not self.alive():
            if self.writer is not None:
                self.reconnects += 1
            await self.connect()
            reconnected = True
        assert self.reader is not None and self.writer is not None
        w = self.writer
        t_sent = time.monotonic()
        head = f"{method} {target} HTTP/1.1\r\n{self.head_fields}{extra}"
        if isinstance(body, int):
            body = b"x" * body
        if body is not None:
            head += "Transfer-Encoding: chunked\r\n" if chunks is not None else f"Content-Length: {len(body)}\r\n"
        w.write(head.encode("latin-1") + b"\r\n")
        if body:
            data, pos = memoryview(body), 0
            for piece in chunks if chunks is not None else [READ] * -(-len(body) // READ):
                out = data[pos:pos + piece]
                w.write(b"%x\r\n%b\r\n" % (len(out), out) if chunks is not None else out)
                pos += len(out)
                await w.drain()
        if chunks is not None and body is not None:
            w.write(b"0\r\n\r\n")
        await w.drain()
        res = await self._response(method, digest, keep)
        res.t0, res.t_sent, res.reconnected = t0, t_sent, reconnected
        if not res.keep_alive:
            self.close()
        return res

    async def _response(self, method: str, digest: bool, keep: bool) -> Response:
        r = self.reader
        assert r is not None
        try:
            raw = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise Failure("closed-before-response" if not exc.partial else "truncated-head") from None
        t_head = time.monotonic()
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep_alive = "close" not in headers.get("connection", "").lower()
        sha = hashlib.sha256() if digest else None
        kept: list[bytes] = []
        length = 0

        def take(data: bytes) -> None:
            nonlocal length
            length += len(data)
            if sha is not None:
                sha.update(data)
            if keep:
                kept.append(data)

        try:
            if method == "HEAD" or status in (204, 304) or status < 200:
                pass
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while await r.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        break
                    take(await r.readexactly(size))
                    if await r.readexactly(2) != b"\r\n":
                        raise Failure("corrupted", "chunk not followed by CRLF")
            elif "content-length" in headers:
                left = int(headers["content-length"])
                while left > 0:
                    data = await r.read(min(left, READ))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    take(data)
                    left -= len(data)
            else:
                while data := await r.read(READ):
                    take(data)
                keep_alive = False
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Failure("truncated", f"status {status}: {exc!r}") from None
        return Response(status, headers, length, keep_alive, 0.0, 0.0, t_head, time.monotonic(),
                        sha256=sha.hexdigest() if sha is not None else None,
                        body=b"".join(kept) if keep else None)
